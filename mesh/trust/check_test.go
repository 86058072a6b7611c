package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// allReasons lists every Reason; TestReasons must cover each.
var allReasons = []trust.Reason{
	trust.ReasonDecode, trust.ReasonSignature, trust.ReasonUnknownCA, trust.ReasonNotYetValid,
	trust.ReasonExpired, trust.ReasonRevoked, trust.ReasonNameMismatch, trust.ReasonNodeMismatch,
	trust.ReasonSelf, trust.ReasonReplay, trust.ReasonPrefixNotInCert, trust.ReasonDefaultRoute,
	trust.ReasonEndpoint, trust.ReasonOverlapLocal, trust.ReasonOverlapUnderlay, trust.ReasonOverlapSite,
	trust.ReasonDuplicateKey, trust.ReasonDuplicateGateway,
}

type world struct {
	ca, other *trust.CA
	policy    *trust.Policy
	now       time.Time
}

// newWorld: the local site "local" owns 10.0.0.0/16 and overlay
// 100.64.0.1; its underlay is 192.0.2.0/24. Remote sites live in 10.1+/16
// with endpoints in 198.51.100.0/24.
func newWorld(t *testing.T) *world {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "local", "10.0.0.0/16", "100.64.0.1/32")
	p.Underlay = pfxs("192.0.2.0/24")
	return &world{ca: ca, other: trusttest.NewCA(t), policy: p, now: p.Now}
}

// site issues a certificate for b with underlay 198.51.100.0/24.
func (w *world) site(t *testing.T, name string, o trusttest.CertOptions, prefixes ...string) (*trust.Certificate, ed25519.PrivateKey) {
	if o.Underlay == nil {
		o.Underlay = pfxs("198.51.100.0/24")
	}
	return trusttest.IssueWith(t, w.ca, name, o, prefixes...)
}

func rec(t *testing.T, c *trust.Certificate, k ed25519.PrivateKey, o trusttest.RecordOptions) *trust.SignedRecord {
	if o.Endpoints == nil {
		o.Endpoints = []netip.AddrPort{ap("198.51.100.7:51820")}
	}
	return trusttest.SignedRecord(t, c, k, o)
}

// TestReasons has one case per rule: each names the rule and the exact
// Reason it must produce ("" = accepted).
func TestReasons(t *testing.T) {
	w := newWorld(t)
	b, bk := w.site(t, "b", trusttest.CertOptions{}, "10.1.0.0/16", "fd00:1::/48")
	good := rec(t, b, bk, trusttest.RecordOptions{Seq: 10})
	check := func(sr *trust.SignedRecord, from string, highest uint64) func(*testing.T) error {
		return func(*testing.T) error { return w.policy.CheckRecord(sr, from, highest) }
	}
	withPolicy := func(mod func(p *trust.Policy), sr *trust.SignedRecord) func(*testing.T) error {
		return func(*testing.T) error {
			p := *w.policy
			mod(&p)
			return p.CheckRecord(sr, "", 0)
		}
	}
	resolveReason := func(records ...*trust.SignedRecord) func(*testing.T) error {
		return func(t *testing.T) error {
			_, cs := trust.Resolve(records)
			if len(cs) != 1 {
				t.Fatalf("conflicts %+v, want one", cs)
			}
			return &trust.RejectError{Reason: cs[0].Reason}
		}
	}
	opts := func(o trusttest.RecordOptions) *trust.SignedRecord { return rec(t, b, bk, o) }
	nb := func(d time.Duration) time.Time { return w.now.Add(d).Truncate(time.Second) }

	tamperedSig := bytes.Clone(good.Raw)
	tamperedSig[len(tamperedSig)-1] ^= 1

	foreign, fk := trusttest.IssueWith(t, w.other, "b", trusttest.CertOptions{}, "10.1.0.0/16")
	future, futk := w.site(t, "b", trusttest.CertOptions{NotBefore: nb(time.Hour)}, "10.1.0.0/16")
	expired, expk := w.site(t, "b", trusttest.CertOptions{NotBefore: nb(-3 * time.Hour), NotAfter: nb(-2 * time.Hour)}, "10.1.0.0/16")
	revoked, revk := w.site(t, "b", trusttest.CertOptions{}, "10.1.0.0/16")
	crl, err := w.ca.Revoke(nil, []*big.Int{revoked.Serial}, w.now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mismatched, err := trust.SignRecordUnchecked(trusttest.Record(b, trusttest.RecordOptions{Site: "c"}), bk)
	if err != nil {
		t.Fatal(err)
	}
	self, selfk := w.site(t, "local", trusttest.CertOptions{}, "10.9.0.0/16")
	dflt, dfltk := w.site(t, "d", trusttest.CertOptions{AllowDefault: true}, "10.4.0.0/16")
	anywhere, anyk := w.site(t, "e", trusttest.CertOptions{Underlay: []netip.Prefix{}}, "10.5.0.0/16")
	overlapsLocal, olk := w.site(t, "f", trusttest.CertOptions{}, "10.0.128.0/17")
	// Resolve: g is older than b's certificate and claims b's prefix; h
	// reuses b's WireGuard key.
	g, gk := w.site(t, "g", trusttest.CertOptions{NotBefore: nb(-20 * time.Hour)}, "10.1.0.0/24")
	h, hk := w.site(t, "h", trusttest.CertOptions{}, "10.8.0.0/16")
	// b's gateway 1, and a younger certificate with another identity key
	// for b's gateway 0.
	b1, b1k := w.site(t, "b", trusttest.CertOptions{Gateway: 1}, "10.1.0.0/16")
	bAgain, bAgaink := w.site(t, "b", trusttest.CertOptions{NotBefore: nb(time.Minute)}, "10.1.0.0/16")
	// The local site's gateway 1 (a sibling), and someone claiming to be
	// the local gateway 0 itself.
	sibling, sibk := w.site(t, "local", trusttest.CertOptions{Gateway: 1}, "10.0.0.0/16")

	cases := []struct {
		rule string
		run  func(*testing.T) error
		want trust.Reason
	}{
		{"a good record is accepted", check(good, "b", 9), ""},
		{"a relayed record (no sender) is accepted", check(good, "", 0), ""},
		{"a subset of a certificate prefix is accepted", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.1.2.0/24")}), "b", 0), ""},
		{"announcing nothing is accepted", check(opts(trusttest.RecordOptions{Prefixes: []netip.Prefix{}}), "b", 0), ""},
		{"a default route with permission is accepted", check(rec(t, dflt, dfltk, trusttest.RecordOptions{Prefixes: pfxs("0.0.0.0/0", "::/0", "10.4.0.0/16")}), "d", 0), ""},
		{"any endpoint when the certificate has no underlay ranges", check(rec(t, anywhere, anyk, trusttest.RecordOptions{Endpoints: []netip.AddrPort{ap("203.0.113.9:51820")}}), "e", 0), ""},
		{"a leaving record skips the prefix checks", check(opts(trusttest.RecordOptions{Leaving: true, Prefixes: pfxs("10.0.0.0/8"), Endpoints: []netip.AddrPort{ap("192.0.2.1:1")}}), "b", 0), ""},
		{"a certificate valid within the skew is accepted", withPolicy(func(p *trust.Policy) { p.Now = nb(time.Hour).Add(-30 * time.Second) }, rec(t, future, futk, trusttest.RecordOptions{})), ""},

		{"undecodable bytes", func(*testing.T) error { _, err := trust.DecodeRecord([]byte{0x30, 0x03, 1, 2}); return err }, trust.ReasonDecode},
		{"bad record signature", func(*testing.T) error { _, err := trust.DecodeRecord(tamperedSig); return err }, trust.ReasonSignature},
		{"certificate from an unpinned CA", check(rec(t, foreign, fk, trusttest.RecordOptions{}), "b", 0), trust.ReasonUnknownCA},
		{"certificate not yet valid", check(rec(t, future, futk, trusttest.RecordOptions{}), "b", 0), trust.ReasonNotYetValid},
		{"certificate expired", check(rec(t, expired, expk, trusttest.RecordOptions{}), "b", 0), trust.ReasonExpired},
		{"certificate revoked", withPolicy(func(p *trust.Policy) { p.CRL = crl }, rec(t, revoked, revk, trusttest.RecordOptions{})), trust.ReasonRevoked},
		{"record site != certificate site", check(mismatched, "", 0), trust.ReasonNameMismatch},
		{"sender node != site", check(good, "c", 0), trust.ReasonNodeMismatch},
		{"someone speaking for the local site", check(rec(t, self, selfk, trusttest.RecordOptions{}), "local", 0), trust.ReasonSelf},
		{"a gateway of a remote site is accepted from its node", check(rec(t, b1, b1k, trusttest.RecordOptions{}), "b.1", 0), ""},
		{"a gateway announcing another site's prefix", check(rec(t, b1, b1k, trusttest.RecordOptions{Prefixes: pfxs("10.8.0.0/16")}), "b.1", 0), trust.ReasonPrefixNotInCert},
		{"a gateway's record sent by its site's gateway 0", check(rec(t, b1, b1k, trusttest.RecordOptions{}), "b", 0), trust.ReasonNodeMismatch},
		{"gateway 0's record sent by node b.1", check(good, "b.1", 0), trust.ReasonNodeMismatch},
		{"a sibling announcing the local prefixes is accepted", check(rec(t, sibling, sibk, trusttest.RecordOptions{}), "local.1", 0), ""},
		{"a sibling of gateway 1: gateway 0", withPolicy(func(p *trust.Policy) { p.LocalGateway = 1 }, rec(t, self, selfk, trusttest.RecordOptions{})), ""},
		{"someone speaking for the local gateway 1", withPolicy(func(p *trust.Policy) { p.LocalGateway = 1 }, rec(t, sibling, sibk, trusttest.RecordOptions{})), trust.ReasonSelf},
		{"a sibling is still held to its certificate", check(rec(t, sibling, sibk, trusttest.RecordOptions{Prefixes: pfxs("10.9.0.0/16")}), "local.1", 0), trust.ReasonPrefixNotInCert},
		{"a sibling is still held to the underlay", withPolicy(func(p *trust.Policy) { p.Underlay = pfxs("10.0.5.0/24") }, rec(t, sibling, sibk, trusttest.RecordOptions{})), trust.ReasonOverlapUnderlay},
		{"sequence equal to the highest seen", check(good, "b", 10), trust.ReasonReplay},
		{"sequence below the highest seen", check(good, "b", 11), trust.ReasonReplay},
		{"prefix with host bits", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.1.0.1/16")}), "b", 0), trust.ReasonPrefixNotInCert},
		{"prefix outside the certificate", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16")}), "b", 0), trust.ReasonPrefixNotInCert},
		{"prefix wider than the certificate's", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/8")}), "b", 0), trust.ReasonPrefixNotInCert},
		{"default route without permission", check(opts(trusttest.RecordOptions{Prefixes: pfxs("::/0")}), "b", 0), trust.ReasonDefaultRoute},
		{"endpoint outside the certificate's underlay", check(opts(trusttest.RecordOptions{Endpoints: []netip.AddrPort{ap("203.0.113.9:51820")}}), "b", 0), trust.ReasonEndpoint},
		{"gossip address outside the certificate's underlay", check(opts(trusttest.RecordOptions{Gossip: ap("203.0.113.9:7946")}), "b", 0), trust.ReasonEndpoint},
		{"prefix overlapping the local site's", check(rec(t, overlapsLocal, olk, trusttest.RecordOptions{}), "f", 0), trust.ReasonOverlapLocal},
		{"prefix overlapping the local overlay address", withPolicy(func(p *trust.Policy) { p.LocalPrefixes = pfxs("10.1.7.7/32") }, good), trust.ReasonOverlapLocal},
		{"prefix covering an underlay range", withPolicy(func(p *trust.Policy) { p.Underlay = pfxs("10.1.5.0/24") }, good), trust.ReasonOverlapUnderlay},
		{"prefix containing the record's own endpoint", check(rec(t, anywhere, anyk, trusttest.RecordOptions{Endpoints: []netip.AddrPort{ap("10.5.0.9:51820")}}), "e", 0), trust.ReasonOverlapUnderlay},
		{"prefix owned by an older certificate (Resolve)", resolveReason(good, rec(t, g, gk, trusttest.RecordOptions{})), trust.ReasonOverlapSite},
		{"WireGuard key used by an older certificate (Resolve)", resolveReason(good, rec(t, h, hk, trusttest.RecordOptions{WGCurrent: good.WGCurrent})), trust.ReasonDuplicateKey},
		{"gateway held by an older certificate with another identity key (Resolve)", resolveReason(rec(t, bAgain, bAgaink, trusttest.RecordOptions{Seq: 99, WGCurrent: trusttest.WGKey("b again")}), good), trust.ReasonDuplicateGateway},

		// The first failing rule wins.
		{"unknown CA before replay", check(rec(t, foreign, fk, trusttest.RecordOptions{}), "b", 99), trust.ReasonUnknownCA},
		{"node mismatch before replay", check(good, "c", 99), trust.ReasonNodeMismatch},
		{"replay before prefix checks", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16")}), "b", 5), trust.ReasonReplay},
		{"canonical before default route", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16", "0.0.0.0/0")}), "b", 0), trust.ReasonPrefixNotInCert},
		{"prefixes before endpoints", check(opts(trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16"), Endpoints: []netip.AddrPort{ap("203.0.113.9:1")}}), "b", 0), trust.ReasonPrefixNotInCert},
		{"endpoints before local overlap", check(rec(t, overlapsLocal, olk, trusttest.RecordOptions{Endpoints: []netip.AddrPort{ap("203.0.113.9:1")}}), "f", 0), trust.ReasonEndpoint},
	}
	covered := make(map[trust.Reason]bool)
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			err := tc.run(t)
			got := reasonOf(t, err)
			if got != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
			covered[got] = true
			if err != nil {
				msg := err.Error()
				for _, k := range [][]byte{bk.Seed(), good.WGCurrent[:], b.IdentityKey} {
					if strings.Contains(msg, string(k)) || strings.Contains(msg, trusttest.WGKey("b").String()[:10]) {
						t.Errorf("error %q contains key material", msg)
					}
				}
			}
		})
	}
	for _, r := range allReasons {
		if !covered[r] {
			t.Errorf("no case produces %q", r)
		}
	}
	if !slices.Equal(trust.Reasons, allReasons) {
		t.Errorf("trust.Reasons = %q, want every reason: %q", trust.Reasons, allReasons)
	}
}

func TestCheckRecordDefaultRoutes(t *testing.T) {
	w := newWorld(t)
	d, dk := w.site(t, "d", trusttest.CertOptions{AllowDefault: true, Underlay: []netip.Prefix{}}, "10.4.0.0/16")
	// A default route contains the site's endpoint and everything local, but
	// only a local default route conflicts with it.
	sr := rec(t, d, dk, trusttest.RecordOptions{Prefixes: pfxs("0.0.0.0/0"), Endpoints: []netip.AddrPort{ap("192.0.2.9:51820")}})
	if err := w.policy.CheckRecord(sr, "d", 0); err != nil {
		t.Errorf("default route refused: %v", err)
	}
	p := *w.policy
	p.LocalPrefixes = append(p.LocalPrefixes, pfx("0.0.0.0/0"))
	if got := reasonOf(t, p.CheckRecord(sr, "d", 0)); got != trust.ReasonOverlapLocal {
		t.Errorf("two default routes: %q", got)
	}
	// A /0 underlay entry ("anywhere") is not compared with prefixes.
	p = *w.policy
	p.Underlay = pfxs("0.0.0.0/0")
	if err := p.CheckRecord(rec(t, d, dk, trusttest.RecordOptions{}), "d", 0); err != nil {
		t.Errorf("/0 underlay: %v", err)
	}
}

func TestCheckRecordCRLOfOtherCA(t *testing.T) {
	w := newWorld(t)
	b, bk := w.site(t, "b", trusttest.CertOptions{}, "10.1.0.0/16")
	crl, err := w.other.Revoke(nil, []*big.Int{b.Serial}, w.now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := *w.policy
	p.CAs = []*x509.Certificate{w.ca.Cert, w.other.Cert}
	p.CRL = crl
	if err := p.CheckRecord(rec(t, b, bk, trusttest.RecordOptions{}), "b", 0); err != nil {
		t.Errorf("revoked by another CA's list: %v", err)
	}
}
