package trust_test

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The whole path of a site record: the operator's CA certifies a site, the
// site signs its record, a receiver decodes, checks and resolves it.
func Example() {
	now := time.Now()
	ca, _ := trust.NewCA("prod", now.Add(-time.Hour), now.Add(365*24*time.Hour))

	// Enrolment: the site generates its identity key, the CA certifies it.
	pub, identity, _ := trust.GenerateIdentity()
	cert, err := ca.Issue(trust.IssueRequest{
		Site:        "fra1",
		IdentityKey: pub,
		Prefixes:    []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Overlay:     netip.MustParseAddr("100.64.0.1"),
		Underlay:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(90 * 24 * time.Hour),
	})
	if err != nil {
		panic(err)
	}

	// The site publishes a record.
	sr, err := trust.SignRecord(trust.Record{
		Site:      "fra1",
		Seq:       trust.NextSeq(0, now),
		IssuedAt:  now,
		WGCurrent: wg.PublicKey{1}, // the site's WireGuard public key
		Prefixes:  cert.Prefixes,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:51820")},
		Cert:      cert,
	}, identity)
	if err != nil {
		panic(err)
	}

	// A receiver gets sr.Raw from gossip node "fra1".
	got, err := trust.DecodeRecord(sr.Raw)
	if err != nil {
		panic(err)
	}
	policy := trust.Policy{
		CAs:           []*x509.Certificate{ca.Cert},
		LocalSite:     "ams2",
		LocalPrefixes: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")},
		Now:           now,
		Skew:          time.Minute,
	}
	fmt.Println("check:", policy.CheckRecord(got, "fra1", 0))
	routes, conflicts := trust.Resolve([]*trust.SignedRecord{got})
	fmt.Println("routes:", routes["fra1"], "conflicts:", len(conflicts))

	// Replaying the same record is refused.
	err = policy.CheckRecord(got, "fra1", got.Seq)
	fmt.Println("replay:", err.(*trust.RejectError).Reason)
	// Output:
	// check: <nil>
	// routes: [10.1.0.0/16] conflicts: 0
	// replay: replay
}
