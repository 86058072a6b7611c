package gossip

// What memberlist puts on the wire, checked before memberlist reads it.
//
// memberlist (v0.7) authenticates a stream only after it has read the whole
// announced length into memory, and trusts the lengths inside an
// authenticated message before it reads them: a push/pull header can make it
// allocate a million node states, a compressed message forty megabytes. The
// screener authenticates with the gossip key first and then looks at those
// lengths, so memberlist is only handed messages whose cost is bounded.
//
// The formats, from memberlist's net.go, security.go, label.go and util.go:
//
//	stream:  [244 len label]? [10] [length uint32] [1] [nonce 12] [ciphertext+tag 16]
//	         additional data [10][length][label]
//	packet:  [244 len label]? [1] [nonce 12] [ciphertext+tag 16]
//	         additional data [label]
//	plain:   [12 crc32]? (packets only) [9 compress{Algo, Buf}]? then one message,
//	         or on packets [7 n lengths...] parts, each one message
//
// Replies to our own dials carry no label. Encryption version 0 (padded) is
// refused: memberlist speaks version 1 at protocol version 2 and above, and
// its padding removal panics on a bad pad.

import (
	"bytes"
	"compress/lzw"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// memberlist's message types (net.go; part of its protocol, never renumbered).
const (
	mlPing         = 0
	mlIndirectPing = 1
	mlAck          = 2
	mlSuspect      = 3
	mlAlive        = 4
	mlDead         = 5
	mlPushPull     = 6
	mlCompound     = 7
	mlUser         = 8
	mlCompress     = 9
	mlEncrypt      = 10
	mlNack         = 11
	mlHasCRC       = 12
	mlErr          = 13
	mlHasLabel     = 244

	encVersion  = 1
	nonceSize   = 12
	tagSize     = 16
	encOverhead = 1 + nonceSize + tagSize
)

const (
	// maxPlainBytes bounds what one stream may decompress to: a push/pull of
	// trust.MaxStateSize (4 MiB) plus the node list of maxPushNodes nodes
	// fits; memberlist's own bound is 40 MiB.
	maxPlainBytes = 5 << 20
	// maxPushNodes bounds the node states a push/pull may announce (memberlist
	// allocates them all before decoding one; its own bound is a million, 100
	// MB). It is trust.MaxStateRecords certified sites and maxUncertified
	// others, twice over for dead nodes not yet forgotten.
	maxPushNodes = 2 * (2048 + maxUncertified)
	// maxPacketBytes bounds a datagram, and what a compressed one expands
	// to: memberlist fills packets up to UDPBufferSize (1,400 bytes) before it
	// compresses them.
	maxPacketBytes = 8 << 10
	// peekBytes of a decompressed message are kept to read its header.
	peekBytes = 256
)

// refusal says why an input was refused; it is what is counted.
type refusal struct {
	reason reason
	detail string
}

func (r *refusal) Error() string { return r.reason.String() + ": " + r.detail }

func refuse(why reason, format string, args ...any) error {
	return &refusal{reason: why, detail: fmt.Sprintf(format, args...)}
}

// reasonOf classifies an error from screening or from reading the network.
func reasonOf(err error) reason {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	if isTimeout(err) {
		return reasonTimeout
	}
	return reasonMalformed // EOF, reset: the peer sent less than it announced
}

// screener checks messages against the cluster's label and the keys of
// the keyring (keyring.go): any of them authenticates a message, as in
// memberlist.
type screener struct {
	label string
	ring  *keyRing
}

// readStreamHeader reads a stream's label header (if labelled) and its
// encryption header, at most 262 bytes, without reading ahead. It returns
// the bytes read (to replay to memberlist) and the announced length (also
// when that is refused as too large).
func (s *screener) readStreamHeader(r io.Reader, labelled bool, maxLen int) ([]byte, int, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, 0, err
	}
	hdr := []byte{b[0]}
	if labelled && s.label != "" {
		if b[0] != mlHasLabel {
			return nil, 0, refuse(reasonMalformed, "no label header (first byte %d)", b[0])
		}
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return nil, 0, err
		}
		label := make([]byte, n[0])
		if _, err := io.ReadFull(r, label); err != nil {
			return nil, 0, err
		}
		if string(label) != s.label {
			return nil, 0, refuse(reasonMalformed, "another cluster's label")
		}
		hdr = append(append(hdr, n[0]), label...)
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, 0, err
		}
		hdr = append(hdr, b[0])
	}
	if b[0] != mlEncrypt {
		return nil, 0, refuse(reasonMalformed, "not encrypted (message type %d)", b[0])
	}
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, 0, err
	}
	hdr = append(hdr, l[:]...)
	n := binary.BigEndian.Uint32(l[:])
	if n > uint32(maxLen) {
		return nil, int(n), refuse(reasonTooLarge, "announces %d bytes, more than %d", n, maxLen)
	}
	if n < encOverhead+1 {
		return nil, 0, refuse(reasonMalformed, "announces %d bytes, too short to be encrypted", n)
	}
	return hdr, int(n), nil
}

// checkStream authenticates the body of an encrypted stream message (what
// follows [10][length]) with the keys of ks and checks what memberlist
// would allocate for it. It returns the size memberlist will decompress the
// message to (0 if it is not compressed).
//
// With one key it decrypts in place and seals again with the same nonce,
// which restores the body byte for byte: no second buffer. With more (a
// rotation under way) it decrypts into a second buffer of the body's size,
// which the caller reserves: a failed AES-GCM open wipes its output, so a
// ciphertext decrypted in place with the wrong key could not be tried with
// the next one.
func (s *screener) checkStream(ks *keySet, lenHdr [5]byte, body []byte, inbound bool) (int, error) {
	if body[0] != encVersion {
		return 0, refuse(reasonMalformed, "encryption version %d", body[0])
	}
	aeads, err := ks.aeads()
	if err != nil {
		return 0, err
	}
	aad := append(lenHdr[:], s.label...)
	nonce, ct := body[1:1+nonceSize], body[1+nonceSize:]
	if len(aeads) == 1 {
		aead := aeads[0]
		plain, err := aead.Open(ct[:0], nonce, ct, aad)
		if err != nil {
			return 0, refuse(reasonUnauthenticated, "not sealed with the gossip key")
		}
		expands, err := inspectStream(plain, inbound)
		if err != nil {
			return 0, err
		}
		if out := aead.Seal(plain[:0], nonce, plain, aad); len(out) != len(ct) {
			return 0, fmt.Errorf("gossip: resealing a stream gave %d bytes, not %d", len(out), len(ct))
		}
		return expands, nil
	}
	buf := make([]byte, 0, len(ct)-tagSize)
	for _, aead := range aeads {
		if plain, err := aead.Open(buf, nonce, ct, aad); err == nil {
			return inspectStream(plain, inbound)
		}
	}
	return 0, refuse(reasonUnauthenticated, "not sealed with any gossip key of the keyring")
}

// inspectStream checks one decrypted stream message: a type memberlist
// expects in that direction, decompressing within maxPlainBytes, and header
// lengths no larger than what follows them.
func inspectStream(plain []byte, inbound bool) (int, error) {
	if len(plain) == 0 {
		return 0, refuse(reasonMalformed, "empty message")
	}
	typ, head, rest, expands := plain[0], plain[1:], len(plain)-1, 0
	if typ == mlCompress {
		prefix, total, err := decompressCompress(plain[1:], maxPlainBytes)
		if err != nil {
			return 0, err
		}
		typ, head, rest, expands = prefix[0], prefix[1:], total-1, total
	}
	switch {
	case typ == mlPushPull:
		var h struct {
			Nodes        int
			UserStateLen int
			Join         bool
		}
		if err := decodeMsgpack(head, &h); err != nil {
			return 0, refuse(reasonMalformed, "push/pull header: %v", err)
		}
		if h.Nodes < 0 || h.Nodes > min(maxPushNodes, rest) {
			return 0, refuse(reasonTooLarge, "push/pull announces %d nodes in %d bytes", h.Nodes, rest)
		}
		if h.UserStateLen < 0 || h.UserStateLen > rest {
			return 0, refuse(reasonTooLarge, "push/pull announces %d bytes of state in %d", h.UserStateLen, rest)
		}
	case typ == mlUser && inbound:
		var h struct{ UserMsgLen int }
		if err := decodeMsgpack(head, &h); err != nil {
			return 0, refuse(reasonMalformed, "user message header: %v", err)
		}
		if h.UserMsgLen < 0 || h.UserMsgLen > rest {
			return 0, refuse(reasonTooLarge, "user message announces %d bytes in %d", h.UserMsgLen, rest)
		}
	case typ == mlPing && inbound, (typ == mlAck || typ == mlErr) && !inbound:
	default:
		return 0, refuse(reasonMalformed, "message type %d not expected on a stream", typ)
	}
	return expands, nil
}

// checkPacket authenticates a datagram with any of aeads (the keyring's)
// and checks its structure: what memberlist sends, nothing nested deeper,
// within maxPacketBytes decompressed. scratch is reused for the plaintext
// (one goroutine calls it); the datagram is decrypted out of place, so each
// key can be tried.
func (s *screener) checkPacket(aeads []cipher.AEAD, buf, scratch []byte) ([]byte, error) {
	if len(buf) > maxPacketBytes {
		return scratch, refuse(reasonTooLarge, "datagram of %d bytes", len(buf))
	}
	if s.label != "" {
		if len(buf) < 2 || buf[0] != mlHasLabel || len(buf) < 2+int(buf[1]) || string(buf[2:2+int(buf[1])]) != s.label {
			return scratch, refuse(reasonMalformed, "datagram without this cluster's label")
		}
		buf = buf[2+int(buf[1]):]
	} else if len(buf) > 0 && buf[0] == mlHasLabel {
		return scratch, refuse(reasonMalformed, "labelled datagram")
	}
	if len(buf) < encOverhead+1 || buf[0] != encVersion {
		return scratch, refuse(reasonMalformed, "datagram not encrypted (%d bytes)", len(buf))
	}
	var aad []byte
	if s.label != "" {
		aad = []byte(s.label)
	}
	for _, aead := range aeads {
		if plain, err := aead.Open(scratch[:0], buf[1:1+nonceSize], buf[1+nonceSize:], aad); err == nil {
			return plain, walkPacket(plain)
		}
	}
	return scratch, refuse(reasonUnauthenticated, "datagram not sealed with any gossip key of the keyring")
}

func walkPacket(plain []byte) error {
	if len(plain) > 0 && plain[0] == mlHasCRC {
		if len(plain) < 5 {
			return refuse(reasonMalformed, "truncated checksum")
		}
		plain = plain[5:]
	}
	if len(plain) > 0 && plain[0] == mlCompress {
		var err error
		if plain, err = decompressAll(plain[1:], maxPacketBytes); err != nil {
			return err
		}
	}
	if len(plain) > 0 && plain[0] == mlCompound {
		return walkCompound(plain[1:])
	}
	return checkLeaf(plain)
}

// walkCompound mirrors memberlist's decodeCompoundMessage, truncation
// tolerated as it does.
func walkCompound(b []byte) error {
	if len(b) < 1 || len(b) < 1+2*int(b[0]) {
		return refuse(reasonMalformed, "truncated compound message")
	}
	n, lengths, b := int(b[0]), b[1:1+2*int(b[0])], b[1+2*int(b[0]):]
	for i := range n {
		l := int(binary.BigEndian.Uint16(lengths[2*i:]))
		if len(b) < l {
			return nil
		}
		if err := checkLeaf(b[:l]); err != nil {
			return err
		}
		b = b[l:]
	}
	return nil
}

func checkLeaf(m []byte) error {
	if len(m) == 0 {
		return refuse(reasonMalformed, "empty message")
	}
	switch m[0] {
	case mlPing, mlIndirectPing, mlAck, mlSuspect, mlAlive, mlDead, mlUser, mlNack:
		return nil
	}
	return refuse(reasonMalformed, "message type %d not expected in a datagram", m[0])
}

type mlCompressed struct {
	Algo uint8
	Buf  []byte
}

// decompressCompress decompresses a compress{} body counting, not keeping,
// all but its first peekBytes; more than limit bytes is refused.
func decompressCompress(b []byte, limit int) (prefix []byte, total int, err error) {
	var c mlCompressed
	if err := decodeMsgpack(b, &c); err != nil {
		return nil, 0, refuse(reasonMalformed, "compressed message: %v", err)
	}
	if c.Algo != 0 {
		return nil, 0, refuse(reasonMalformed, "compression algorithm %d", c.Algo)
	}
	w := &peekWriter{}
	r := lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8)
	defer r.Close()
	n, err := io.CopyN(w, r, int64(limit)+1)
	if err != nil && err != io.EOF {
		return nil, 0, refuse(reasonMalformed, "compressed message: %v", err)
	}
	if n > int64(limit) {
		return nil, 0, refuse(reasonTooLarge, "compressed message expands beyond %d bytes", limit)
	}
	if n == 0 {
		return nil, 0, refuse(reasonMalformed, "compressed message is empty")
	}
	return w.prefix, int(n), nil
}

// decompressAll decompresses a small compress{} body whole.
func decompressAll(b []byte, limit int) ([]byte, error) {
	var c mlCompressed
	if err := decodeMsgpack(b, &c); err != nil {
		return nil, refuse(reasonMalformed, "compressed message: %v", err)
	}
	if c.Algo != 0 {
		return nil, refuse(reasonMalformed, "compression algorithm %d", c.Algo)
	}
	r := lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8)
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, refuse(reasonMalformed, "compressed message: %v", err)
	}
	if len(out) > limit {
		return nil, refuse(reasonTooLarge, "compressed datagram expands beyond %d bytes", limit)
	}
	return out, nil
}

type peekWriter struct{ prefix []byte }

func (w *peekWriter) Write(p []byte) (int, error) {
	if room := peekBytes - len(w.prefix); room > 0 {
		w.prefix = append(w.prefix, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// decodeMsgpack decodes as memberlist does (a fresh default handle).
func decodeMsgpack(b []byte, v any) error {
	var h codec.MsgpackHandle
	return codec.NewDecoderBytes(b, &h).Decode(v)
}
