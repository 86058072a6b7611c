// Package trusttest builds CAs, certificates and signed records for tests
// of packages that consume mesh/trust. Everything is real (Ed25519, X.509,
// DER): only the defaults are made up. Helpers fail the test on error.
package trusttest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"hash/fnv"
	"net/netip"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Cluster is the cluster name of CAs made by NewCA.
const Cluster = "test"

// NewCA returns a fresh CA valid from a day ago for ten years.
func NewCA(t testing.TB) *trust.CA {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	ca, err := trust.NewCA(Cluster, now.Add(-24*time.Hour), now.Add(10*365*24*time.Hour))
	if err != nil {
		t.Fatalf("trusttest: NewCA: %v", err)
	}
	return ca
}

// CertOptions overrides Issue's defaults. Zero fields take the default.
type CertOptions struct {
	Gateway      uint8              // default: 0
	Identity     ed25519.PrivateKey // default: a fresh key
	Overlay      netip.Addr         // default: Overlay of the gateway's name ("site", "site.N")
	Underlay     []netip.Prefix     // default: none (endpoints anywhere)
	AllowDefault bool
	NotBefore    time.Time // default: an hour ago, whole seconds
	NotAfter     time.Time // default: NotBefore + 30 days
}

// Issue issues a certificate for site with the given prefixes (CIDR text)
// and default options, and returns it with the site's identity key.
func Issue(t testing.TB, ca *trust.CA, site string, prefixes ...string) (*trust.Certificate, ed25519.PrivateKey) {
	t.Helper()
	return IssueWith(t, ca, site, CertOptions{}, prefixes...)
}

// IssueWith is Issue with options. Give distinct NotBefore values to control
// which certificate is older (Resolve's tie-break).
func IssueWith(t testing.TB, ca *trust.CA, site string, o CertOptions, prefixes ...string) (*trust.Certificate, ed25519.PrivateKey) {
	t.Helper()
	key := o.Identity
	if key == nil {
		var err error
		if _, key, err = trust.GenerateIdentity(); err != nil {
			t.Fatalf("trusttest: %v", err)
		}
	}
	if !o.Overlay.IsValid() {
		o.Overlay = Overlay(trust.GatewayID{Site: site, Gateway: o.Gateway}.String())
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour).Truncate(time.Second)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = o.NotBefore.Add(30 * 24 * time.Hour)
	}
	c, err := ca.Issue(trust.IssueRequest{
		Site:         site,
		Gateway:      o.Gateway,
		IdentityKey:  key.Public().(ed25519.PublicKey),
		Prefixes:     Prefixes(t, prefixes...),
		Overlay:      o.Overlay,
		Underlay:     o.Underlay,
		AllowDefault: o.AllowDefault,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
	})
	if err != nil {
		t.Fatalf("trusttest: Issue(%q): %v", site, err)
	}
	return c, key
}

// Overlay derives a stable overlay address for a gateway name (site, or
// site.N) in 100.64.0.0/10, so tests need not invent one. Different names
// may collide (22 bits of hash); give CertOptions.Overlay when that
// matters.
func Overlay(name string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := 100<<24 | 64<<16 | h.Sum32()&(1<<22-1)
	if v&0xff == 0 {
		v |= 1
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// WGKey derives a stable WireGuard public key for a name. It is 32 bytes of
// hash, not a real Curve25519 point: good enough for everything trust does
// with it.
func WGKey(name string) wg.PublicKey {
	return wg.PublicKey(sha256.Sum256([]byte("trusttest wg " + name)))
}

// RecordOptions overrides SignedRecord's defaults. Zero fields take the
// default.
type RecordOptions struct {
	Site      string         // default: the certificate's site
	Seq       uint64         // default: 1
	IssuedAt  time.Time      // default: now
	Prefixes  []netip.Prefix // default (nil): all of the certificate's; non-nil empty: none
	Endpoints []netip.AddrPort
	Gossip    netip.AddrPort // default: none
	WGCurrent wg.PublicKey   // default: WGKey of the gateway's name ("site", "site.N")
	WGNext    wg.PublicKey   // sets Phase to PhasePrepared unless Phase is given
	Phase     trust.Phase
	BootID    [16]byte
	Leaving   bool
	PSKSites  []string
	Weight    uint8 // default: 1
	Standby   bool  // weight 0: Weight must be left 0
	Drain     bool
}

// SignedRecord signs a record for cert's site with key and returns it as a
// receiver sees it (encoded, then decoded).
func SignedRecord(t testing.TB, cert *trust.Certificate, key ed25519.PrivateKey, o RecordOptions) *trust.SignedRecord {
	t.Helper()
	r := Record(cert, o)
	sr, err := trust.SignRecord(r, key)
	if err != nil {
		t.Fatalf("trusttest: SignedRecord(%q): %v", r.Site, err)
	}
	return sr
}

// Record returns the unsigned record SignedRecord would sign. Its Weight is
// set (1 unless given or Standby), so it equals the decoded record.
func Record(cert *trust.Certificate, o RecordOptions) trust.Record {
	r := trust.Record{
		Site:      o.Site,
		Seq:       o.Seq,
		IssuedAt:  o.IssuedAt,
		WGCurrent: o.WGCurrent,
		WGNext:    o.WGNext,
		Phase:     o.Phase,
		Prefixes:  o.Prefixes,
		Endpoints: o.Endpoints,
		Gossip:    o.Gossip,
		BootID:    o.BootID,
		Leaving:   o.Leaving,
		Cert:      cert,
		PSKSites:  o.PSKSites,
		Weight:    o.Weight,
		Standby:   o.Standby,
		Drain:     o.Drain,
	}
	if r.Weight == 0 && !r.Standby {
		r.Weight = 1
	}
	if r.Site == "" {
		r.Site = cert.Site
	}
	if r.Seq == 0 {
		r.Seq = 1
	}
	if r.IssuedAt.IsZero() {
		r.IssuedAt = time.Now()
	}
	if r.WGCurrent.IsZero() {
		r.WGCurrent = WGKey(r.ID().String())
	}
	if !r.WGNext.IsZero() && r.Phase == trust.PhaseStable {
		r.Phase = trust.PhasePrepared
	}
	if r.Prefixes == nil {
		r.Prefixes = cert.Prefixes
	}
	return r
}

// Policy returns a receiver policy pinning ca, for gateway 0 of localSite
// (set LocalGateway for another) with the given local prefixes (CIDR text),
// checking at the current time with a minute of skew.
func Policy(t testing.TB, ca *trust.CA, localSite string, localPrefixes ...string) *trust.Policy {
	t.Helper()
	return &trust.Policy{
		CAs:           []*x509.Certificate{ca.Cert},
		LocalSite:     localSite,
		LocalPrefixes: Prefixes(t, localPrefixes...),
		Now:           time.Now(),
		Skew:          time.Minute,
	}
}

// Prefixes parses CIDRs, failing the test on a bad one.
func Prefixes(t testing.TB, cidrs ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("trusttest: %v", err)
		}
		ps = append(ps, p)
	}
	return ps
}
