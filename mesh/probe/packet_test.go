package probe

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// goldenPackets are encodings worked out by hand from RFC 5880 §4.1.
var goldenPackets = []struct {
	name string
	hex  string
	p    Packet
}{
	{
		// Up, diag 1, Poll, mult 3, 200 ms TX, 100 ms RX.
		name: "up-poll",
		hex:  "21e00318" + "01020304" + "0a0b0c0d" + "00030d40" + "000186a0" + "00000000",
		p: Packet{Diag: DiagDetectExpired, State: StateUp, Poll: true, DetectMult: 3,
			MyDiscr: 0x01020304, YourDiscr: 0x0a0b0c0d, DesiredMinTxUS: 200000, RequiredMinRxUS: 100000},
	},
	{
		// Down with no remote yet: 1 s TX (slow start), 300 ms RX, 50 ms
		// echo (what FRR's bfdd sends by default).
		name: "down-first",
		hex:  "20400318" + "deadbeef" + "00000000" + "000f4240" + "000493e0" + "0000c350",
		p: Packet{State: StateDown, DetectMult: 3, MyDiscr: 0xdeadbeef,
			DesiredMinTxUS: 1000000, RequiredMinRxUS: 300000, RequiredMinEchoRxUS: 50000},
	},
	{
		// AdminDown, diag 7, Final, C and D bits, mult 255.
		name: "admindown-final",
		hex:  "271a" + "ff18" + "ffffffff" + "00000001" + "00000000" + "ffffffff" + "00000000",
		p: Packet{Diag: DiagAdminDown, State: StateAdminDown, Final: true, ControlPlaneIndependent: true,
			Demand: true, DetectMult: 255, MyDiscr: 0xffffffff, YourDiscr: 1, RequiredMinRxUS: 0xffffffff},
	},
}

func TestPacketGolden(t *testing.T) {
	for _, g := range goldenPackets {
		want, err := hex.DecodeString(g.hex)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.p.Append(nil); !bytes.Equal(got, want) {
			t.Errorf("%s: Append = %x, want %x", g.name, got, want)
		}
		p, err := ParsePacket(want)
		if err != nil {
			t.Errorf("%s: ParsePacket: %v", g.name, err)
		} else if p != g.p {
			t.Errorf("%s: ParsePacket = %+v, want %+v", g.name, p, g.p)
		}
	}
}

func TestPacketAppendAppends(t *testing.T) {
	b := goldenPackets[0].p.Append([]byte("xy"))
	if len(b) != 2+PacketLen || string(b[:2]) != "xy" {
		t.Fatalf("Append to a prefix gave %x", b)
	}
}

// mustHex decodes a golden packet and applies edit to a copy.
func edited(t testing.TB, i int, edit func(b []byte) []byte) []byte {
	b, err := hex.DecodeString(goldenPackets[i].hex)
	if err != nil {
		t.Fatal(err)
	}
	return edit(b)
}

func TestParsePacketRejects(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errShort},
		{"23 bytes", edited(t, 0, func(b []byte) []byte { return b[:23] }), errShort},
		{"version 0", edited(t, 0, func(b []byte) []byte { b[0] &^= 0xe0; return b }), errVersion},
		{"version 2", edited(t, 0, func(b []byte) []byte { b[0] = 2<<5 | b[0]&0x1f; return b }), errVersion},
		{"length 23", edited(t, 0, func(b []byte) []byte { b[3] = 23; return b }), errLength},
		{"length 0", edited(t, 0, func(b []byte) []byte { b[3] = 0; return b }), errLength},
		{"length past the end", edited(t, 0, func(b []byte) []byte { b[3] = 25; return b }), errTruncated},
		{"auth with length 24", edited(t, 0, func(b []byte) []byte { b[1] |= flagAuth; return b }), errLength},
		{"auth", edited(t, 0, func(b []byte) []byte { b[1] |= flagAuth; b[3] = 26; return append(b, 1, 2) }), errAuthPresent},
		{"detect mult 0", edited(t, 0, func(b []byte) []byte { b[2] = 0; return b }), errDetectMult},
		{"multipoint", edited(t, 0, func(b []byte) []byte { b[1] |= flagMultipoint; return b }), errMultipoint},
		{"my discr 0", edited(t, 0, func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }), errMyDiscr},
		{"your discr 0 in Up", edited(t, 0, func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }), errYourDiscr},
		{"your discr 0 in Init", edited(t, 1, func(b []byte) []byte { b[1] = byte(StateInit) << 6; return b }), errYourDiscr},
	}
	for _, c := range cases {
		_, err := ParsePacket(c.b)
		if err != c.want {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		if !errors.Is(err, ErrInvalidPacket) {
			t.Errorf("%s: %v does not wrap ErrInvalidPacket", c.name, err)
		}
	}
}

func TestParsePacketAccepts(t *testing.T) {
	// Trailing bytes beyond Length are ignored (RFC 5880 §6.8.6 only
	// drops a Length larger than the payload); a Length above 24 without
	// authentication is not a drop rule either; reserved diag codes pass.
	long := edited(t, 0, func(b []byte) []byte { return append(b, 0xaa, 0xbb) })
	if p, err := ParsePacket(long); err != nil || p != goldenPackets[0].p {
		t.Errorf("trailing bytes: %+v, %v", p, err)
	}
	l26 := edited(t, 0, func(b []byte) []byte { b[3] = 26; return append(b, 0, 0) })
	if _, err := ParsePacket(l26); err != nil {
		t.Errorf("length 26 without auth: %v", err)
	}
	d31 := edited(t, 0, func(b []byte) []byte { b[0] |= 0x1f; return b })
	if p, err := ParsePacket(d31); err != nil || p.Diag != 31 || p.Diag.String() != "diag(31)" {
		t.Errorf("reserved diag: %+v, %v", p, err)
	}
}

func TestStateAndDiagNames(t *testing.T) {
	want := map[State]string{StateAdminDown: "admin_down", StateDown: "down", StateInit: "init", StateUp: "up", 9: "state(9)"}
	for s, n := range want {
		if s.String() != n {
			t.Errorf("State(%d) = %q, want %q", s, s.String(), n)
		}
	}
	if b, _ := DiagConcatenatedPathDown.MarshalText(); string(b) != "concatenated_path_down" {
		t.Errorf("Diag 6 text = %q", b)
	}
}
