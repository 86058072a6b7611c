package trust_test

import (
	"crypto/x509"
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

func TestCheckRenewal(t *testing.T) {
	ca, next, stranger := trusttest.NewCA(t), trusttest.NewCA(t), trusttest.NewCA(t)
	t0 := time.Now().Add(-20 * time.Hour).Truncate(time.Second) // trusttest CAs are valid from a day ago
	t1 := t0.Add(10 * time.Hour)
	now := t1.Add(time.Hour)
	underlay := trusttest.Prefixes(t, "198.51.100.0/24")
	base := trusttest.CertOptions{NotBefore: t0, Underlay: underlay}
	running, identity := trusttest.IssueWith(t, ca, "ams2", base, "10.2.0.0/16", "fd00:2::/48")
	same := trusttest.CertOptions{NotBefore: t1, Underlay: underlay, Identity: identity}
	with := func(mod func(*trusttest.CertOptions)) trusttest.CertOptions {
		o := same
		mod(&o)
		return o
	}
	issue := func(ca *trust.CA, site string, o trusttest.CertOptions, prefixes ...string) *trust.Certificate {
		c, _ := trusttest.IssueWith(t, ca, site, o, prefixes...)
		return c
	}
	revokedRenewal := issue(ca, "ams2", same, "10.2.0.0/16", "fd00:2::/48")
	crl, err := ca.Revoke(nil, []*big.Int{revokedRenewal.Serial}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc := trust.RenewalCheck{
		CAs: []*x509.Certificate{ca.Cert, next.Cert}, CRLs: crl, Now: now, Skew: time.Minute,
		Announced: trusttest.Prefixes(t, "10.2.0.0/16"),
		Endpoints: []netip.Addr{netip.MustParseAddr("198.51.100.7")},
	}

	cases := []struct {
		name string
		next *trust.Certificate
		rc   func(*trust.RenewalCheck)
		want []string // substrings of the error; none: accepted
	}{
		{"same authority, new serial", issue(ca, "ams2", same, "10.2.0.0/16", "fd00:2::/48"), nil, nil},
		{"new identity key", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.Identity = nil }), "10.2.0.0/16", "fd00:2::/48"), nil, nil},
		{"from the new CA (rollover)", issue(next, "ams2", same, "10.2.0.0/16", "fd00:2::/48"), nil, nil},
		{"same not-before, new serial", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.NotBefore = t0 }), "10.2.0.0/16", "fd00:2::/48"), nil, nil},
		{"narrower, still covering what is announced", issue(ca, "ams2", same, "10.2.0.0/17"),
			func(rc *trust.RenewalCheck) { rc.Announced = trusttest.Prefixes(t, "10.2.0.0/17") }, nil},
		{"narrower underlay, still covering the endpoints", issue(ca, "ams2", with(func(o *trusttest.CertOptions) {
			o.Underlay = trusttest.Prefixes(t, "198.51.100.0/25")
		}), "10.2.0.0/16", "fd00:2::/48"), nil, nil},

		{"wider prefixes", issue(ca, "ams2", same, "10.2.0.0/15", "fd00:2::/48"), nil,
			[]string{`renewal of site "ams2" refused`, "wider prefixes: 10.2.0.0/15 is not inside the running certificate's 10.2.0.0/16"}},
		{"an extra prefix", issue(ca, "ams2", same, "10.2.0.0/16", "fd00:2::/48", "10.7.0.0/16"), nil,
			[]string{"wider prefixes: 10.7.0.0/16 is not in the running certificate (10.2.0.0/16, fd00:2::/48)"}},
		{"narrower than what is announced", issue(ca, "ams2", same, "10.2.0.0/17", "fd00:2::/48"), nil,
			[]string{"the site announces 10.2.0.0/16, outside the new certificate's prefixes (10.2.0.0/17, fd00:2::/48): stop announcing it first"}},
		{"another site", issue(ca, "lon3", same, "10.2.0.0/16", "fd00:2::/48"), nil, []string{`site name "lon3" is not the running certificate's "ams2"`}},
		{"another overlay address", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.Overlay = netip.MustParseAddr("100.64.9.9") }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"overlay address changes from " + running.Overlay.String() + " to 100.64.9.9: that is a replacement, not a renewal"}},
		{"wider underlay", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.Underlay = trusttest.Prefixes(t, "198.51.0.0/16") }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"wider underlay: 198.51.0.0/16 is not inside the running certificate's 198.51.100.0/24"}},
		{"underlay anywhere", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.Underlay = nil }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"wider underlay: anywhere, the running certificate's is limited to 198.51.100.0/24"}},
		{"underlay excluding an endpoint", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.Underlay = trusttest.Prefixes(t, "198.51.100.128/25") }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"the site's address 198.51.100.7 is outside the new certificate's underlay (198.51.100.128/25)"}},
		{"allow-default gained", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.AllowDefault = true }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"allow-default gained"}},
		{"a CA not pinned", issue(stranger, "ams2", same, "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"the new certificate does not verify", "not signed by a pinned CA (unknown_ca)"}},
		{"revoked", revokedRenewal, nil, []string{"is revoked", "(revoked)"}},
		{"expired", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.NotAfter = t1.Add(time.Minute) }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"(cert_expired)"}},
		{"not yet valid", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.NotBefore = now.Add(time.Hour) }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"(cert_not_yet_valid)"}},
		{"the running certificate", running, nil, []string{"the new certificate is the running one (serial"}},
		{"an older certificate", issue(ca, "ams2", with(func(o *trusttest.CertOptions) { o.NotBefore = t0.Add(-time.Hour) }), "10.2.0.0/16", "fd00:2::/48"), nil,
			[]string{"is earlier than the running certificate's", "never rolls back"}},
		{"every problem at once", issue(stranger, "lon3", with(func(o *trusttest.CertOptions) { o.AllowDefault = true }), "10.0.0.0/8"), nil,
			[]string{"does not verify", "site name", "wider prefixes: 10.0.0.0/8 is not inside the running certificate's 10.2.0.0/16", "allow-default gained"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rc
			if tc.rc != nil {
				tc.rc(&r)
			}
			err := trust.CheckRenewal(running, tc.next, r)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *trust.RenewalError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T), want a *RenewalError", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	// Renewing an already expired site is how it recovers.
	expiredRunning, _ := trusttest.IssueWith(t, ca, "ams2", trusttest.CertOptions{NotBefore: t0, NotAfter: t0.Add(time.Hour), Identity: identity, Underlay: underlay}, "10.2.0.0/16")
	if err := trust.CheckRenewal(expiredRunning, issue(ca, "ams2", same, "10.2.0.0/16"), rc); err != nil {
		t.Errorf("renewal of an expired certificate refused: %v", err)
	}
}

func TestCompareAuthority(t *testing.T) {
	base := trust.Authority{Site: "ams2", Prefixes: pfxs("10.2.0.0/16", "10.3.0.0/16"), Overlay: netip.MustParseAddr("100.64.0.2")}
	mod := func(f func(*trust.Authority)) trust.Authority {
		a := base
		f(&a)
		return a
	}
	cases := []struct {
		name                         string
		next                         trust.Authority
		renewal, same                bool
		replacement, wider, narrower string
	}{
		{"identical", base, true, true, "", "", ""},
		{"narrowed", mod(func(a *trust.Authority) { a.Prefixes = pfxs("10.2.0.0/17") }), true, false,
			"", "", "prefixes: 10.2.0.0/16 narrowed to 10.2.0.0/17"},
		{"dropped", mod(func(a *trust.Authority) { a.Prefixes = pfxs("10.2.0.0/16") }), true, false, "", "", "prefixes: 10.3.0.0/16 dropped"},
		{"widened", mod(func(a *trust.Authority) { a.Prefixes = pfxs("10.2.0.0/15") }), false, false,
			"", "wider prefixes: 10.2.0.0/15 is not inside the running certificate's 10.2.0.0/16", ""},
		{"moved overlay", mod(func(a *trust.Authority) { a.Overlay = netip.MustParseAddr("100.64.0.3") }), false, false,
			"overlay address changes from 100.64.0.2 to 100.64.0.3", "", ""},
		{"underlay limited", mod(func(a *trust.Authority) { a.Underlay = pfxs("192.0.2.0/24") }), true, false,
			"", "", "underlay limited to 192.0.2.0/24 (was anywhere)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := trust.CompareAuthority(base, tc.next)
			if d.Renewal() != tc.renewal || d.Same() != tc.same {
				t.Errorf("Renewal %v Same %v, want %v %v (%+v)", d.Renewal(), d.Same(), tc.renewal, tc.same, d)
			}
			for _, c := range []struct {
				got  []string
				want string
			}{{d.Replacement, tc.replacement}, {d.Wider, tc.wider}, {d.Narrower, tc.narrower}} {
				if (c.want == "") != (len(c.got) == 0) || (c.want != "" && !strings.Contains(strings.Join(c.got, "; "), c.want)) {
					t.Errorf("got %q, want %q", c.got, c.want)
				}
			}
		})
	}
	// What `ca issue` compares: the last certificate with the new request.
	ca := trusttest.NewCA(t)
	c, _ := trusttest.Issue(t, ca, "ams2", "10.2.0.0/16")
	req := trust.IssueRequest{Site: "ams2", Prefixes: pfxs("10.2.0.0/16", "10.9.0.0/16"), Overlay: c.Overlay}
	if d := trust.CompareAuthority(c.Authority(), req.Authority()); d.Renewal() || len(d.Wider) != 1 {
		t.Errorf("re-issue with an extra prefix: %+v", d)
	}
}

func TestCheckIdentityKey(t *testing.T) {
	ca := trusttest.NewCA(t)
	c, key := trusttest.Issue(t, ca, "ams2", "10.2.0.0/16")
	if err := trust.CheckIdentityKey(c, key); err != nil {
		t.Error(err)
	}
	_, other, _ := trust.GenerateIdentity()
	if err := trust.CheckIdentityKey(c, other); err == nil || !strings.Contains(err.Error(), `certificate of site "ams2"`) {
		t.Errorf("mismatched key: %v", err)
	}
	if err := trust.CheckIdentityKey(c, key[:10]); err == nil {
		t.Error("short key accepted")
	}
}
