package probe

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzParsePacket: never panic; whatever parses re-encodes to the same
// packet, and to the input's first 24 bytes with the length byte set to 24
// (ParsePacket refuses the A and M bits, the only others Append changes).
// The seed corpus runs in every `go test`.
func FuzzParsePacket(f *testing.F) {
	for _, g := range goldenPackets {
		b, err := hex.DecodeString(g.hex)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:PacketLen-1])
		f.Add(append(bytes.Clone(b), 0, 0, 0))
		for _, i := range []int{0, 1, 2, 3, 4, 8, 12, 23} {
			m := bytes.Clone(b)
			m[i] ^= 0xff
			f.Add(m)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		enc := p.Append(nil)
		want := bytes.Clone(b[:PacketLen])
		want[3] = PacketLen
		if !bytes.Equal(enc, want) {
			t.Fatalf("re-encoding %x gave %x", b, enc)
		}
		q, err := ParsePacket(enc)
		if err != nil || q != p {
			t.Fatalf("round trip of %+v gave %+v, %v", p, q, err)
		}
	})
}
