package probe

import (
	"encoding/binary"
	"errors"
)

// PacketLen is the length of a BFD Control packet without the optional
// authentication section (RFC 5880 §4.1), the only kind this package sends.
const PacketLen = 24

// bfdVersion is the protocol version RFC 5880 defines.
const bfdVersion = 1

// Flag bits in the second byte of the packet (RFC 5880 §4.1).
const (
	flagPoll       = 1 << 5
	flagFinal      = 1 << 4
	flagCPI        = 1 << 3 // Control Plane Independent
	flagAuth       = 1 << 2
	flagDemand     = 1 << 1
	flagMultipoint = 1 << 0
)

// Packet is a BFD Control packet (RFC 5880 §4.1). Intervals are in
// microseconds, as on the wire. There are no fields for the A (auth) and M
// (multipoint) bits: ParsePacket drops packets that set them and Append
// always clears them.
type Packet struct {
	Diag  Diag
	State State
	// Poll asks the remote to answer with Final; Final answers a Poll.
	Poll, Final bool
	// ControlPlaneIndependent is the C bit: this implementation runs in
	// the agent and shares its fate, so it never sets it.
	ControlPlaneIndependent bool
	Demand                  bool
	DetectMult              uint8
	MyDiscr, YourDiscr      uint32
	DesiredMinTxUS          uint32
	RequiredMinRxUS         uint32
	RequiredMinEchoRxUS     uint32
}

// ErrInvalidPacket is wrapped by every error ParsePacket returns: the
// packet must be dropped (RFC 5880 §6.8.6).
var ErrInvalidPacket = errors.New("invalid BFD control packet")

type invalidError struct{ reason string }

func (e *invalidError) Error() string { return "invalid BFD control packet: " + e.reason }
func (e *invalidError) Unwrap() error { return ErrInvalidPacket }

// Preallocated so that a flood of garbage costs no allocation.
var (
	errShort       = &invalidError{"shorter than 24 bytes"}
	errVersion     = &invalidError{"version is not 1"}
	errLength      = &invalidError{"length field below the minimum (24, or 26 with authentication)"}
	errTruncated   = &invalidError{"length field larger than the packet"}
	errDetectMult  = &invalidError{"detect multiplier is 0"}
	errMultipoint  = &invalidError{"multipoint (M) bit set"}
	errMyDiscr     = &invalidError{"my discriminator is 0"}
	errYourDiscr   = &invalidError{"your discriminator is 0 in a state other than Down or AdminDown"}
	errAuthPresent = &invalidError{"authentication (A) bit set: this implementation uses none (WireGuard authenticates the tunnel)"}
)

// ParsePacket decodes b and applies the packet checks of RFC 5880 §6.8.6
// that need no session: version 1, length at least the minimum and not
// beyond b, detect multiplier not 0, M bit clear, my discriminator not 0,
// your discriminator not 0 unless the state is Down or AdminDown, and, since
// no session here uses authentication, A bit clear. Bytes after the length
// field's end are ignored, as the RFC allows. It never panics.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < PacketLen {
		return Packet{}, errShort
	}
	if b[0]>>5 != bfdVersion {
		return Packet{}, errVersion
	}
	flags := b[1]
	length := int(b[3])
	minLen := PacketLen
	if flags&flagAuth != 0 {
		minLen = PacketLen + 2
	}
	switch {
	case length < minLen:
		return Packet{}, errLength
	case length > len(b):
		return Packet{}, errTruncated
	case b[2] == 0:
		return Packet{}, errDetectMult
	case flags&flagMultipoint != 0:
		return Packet{}, errMultipoint
	}
	p := Packet{
		Diag:                    Diag(b[0] & 0x1f),
		State:                   State(flags >> 6),
		Poll:                    flags&flagPoll != 0,
		Final:                   flags&flagFinal != 0,
		ControlPlaneIndependent: flags&flagCPI != 0,
		Demand:                  flags&flagDemand != 0,
		DetectMult:              b[2],
		MyDiscr:                 binary.BigEndian.Uint32(b[4:]),
		YourDiscr:               binary.BigEndian.Uint32(b[8:]),
		DesiredMinTxUS:          binary.BigEndian.Uint32(b[12:]),
		RequiredMinRxUS:         binary.BigEndian.Uint32(b[16:]),
		RequiredMinEchoRxUS:     binary.BigEndian.Uint32(b[20:]),
	}
	switch {
	case p.MyDiscr == 0:
		return Packet{}, errMyDiscr
	case p.YourDiscr == 0 && p.State != StateDown && p.State != StateAdminDown:
		return Packet{}, errYourDiscr
	case flags&flagAuth != 0:
		return Packet{}, errAuthPresent
	}
	return p, nil
}

// Append appends the 24-byte encoding of p to b: version 1, length 24, A and
// M bits clear. Diag and State are masked to their field widths.
func (p Packet) Append(b []byte) []byte {
	flags := byte(p.State&3) << 6
	if p.Poll {
		flags |= flagPoll
	}
	if p.Final {
		flags |= flagFinal
	}
	if p.ControlPlaneIndependent {
		flags |= flagCPI
	}
	if p.Demand {
		flags |= flagDemand
	}
	b = append(b, bfdVersion<<5|byte(p.Diag&0x1f), flags, p.DetectMult, PacketLen)
	b = binary.BigEndian.AppendUint32(b, p.MyDiscr)
	b = binary.BigEndian.AppendUint32(b, p.YourDiscr)
	b = binary.BigEndian.AppendUint32(b, p.DesiredMinTxUS)
	b = binary.BigEndian.AppendUint32(b, p.RequiredMinRxUS)
	return binary.BigEndian.AppendUint32(b, p.RequiredMinEchoRxUS)
}
