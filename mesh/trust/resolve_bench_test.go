package trust_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// BenchmarkResolveGateways: 512 sites, each with gateways 0 and 1 sharing
// four prefixes (1,024 records), as ResolveGateways sees them on every
// reconcile.
func BenchmarkResolveGateways(b *testing.B) {
	ca := trusttest.NewCA(b)
	base := time.Now().Truncate(time.Second)
	var records []*trust.SignedRecord
	for s := range 512 {
		var ps []netip.Prefix
		for i := range 4 {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s >> 6), byte(s<<2 | i), 0}), 24))
		}
		for gw := range uint8(2) {
			c, k := trusttest.IssueWith(b, ca, fmt.Sprintf("s%d", s), trusttest.CertOptions{Gateway: gw, NotBefore: base.Add(-time.Duration(s) * time.Second)}, "10.0.0.0/8")
			records = append(records, trusttest.SignedRecord(b, c, k, trusttest.RecordOptions{Prefixes: ps}))
		}
	}
	b.ResetTimer()
	for range b.N {
		p, c := trust.ResolveGateways(records)
		if len(p) != len(records) || len(c) != 0 {
			b.Fatalf("%d gateways, %d conflicts", len(p), len(c))
		}
	}
}
