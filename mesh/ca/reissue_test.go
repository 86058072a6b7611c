package ca_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
)

// Re-issuing a site name with a live certificate: the same or narrower
// prefixes are a renewal (allowed, and Plan says so); wider or other
// prefixes, or another overlay address, are refused unless Replace; a
// revoked or expired certificate does not count.
func TestCAReissueRenewalOrReplacement(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	ov := netip.MustParseAddr("10.255.0.2")
	opts := func(prefixes ...string) ca.IssueOptions {
		return ca.IssueOptions{Dir: dir, Site: "ams1", Prefixes: catest.Prefixes(prefixes...), Overlay: ov, Now: now,
			Out: filepath.Join(t.TempDir(), "b")}
	}
	if p, err := ca.Plan(opts("10.2.0.0/16", "10.3.0.0/16")); err != nil || p.Kind != ca.IssueNew {
		t.Fatalf("first issue: %+v %v", p, err)
	}
	first, _ := catest.MustIssue(t, dir, opts("10.2.0.0/16", "10.3.0.0/16"))

	p, err := ca.Plan(opts("10.2.0.0/16", "10.3.0.0/16"))
	if err != nil || p.Kind != ca.IssueRenewal || p.Previous.Serial != first.Serial.Text(16) || len(p.Narrower) != 0 {
		t.Errorf("same prefixes: %+v %v, want a renewal of %x", p, err, first.Serial)
	}
	p, _ = ca.Plan(opts("10.2.0.0/17"))
	if p.Kind != ca.IssueRenewal || strings.Join(p.Narrower, "; ") != "prefixes: 10.2.0.0/16 narrowed to 10.2.0.0/17; prefixes: 10.3.0.0/16 dropped" {
		t.Errorf("narrower: %+v", p)
	}
	renewed, _ := catest.MustIssue(t, dir, opts("10.2.0.0/16"))
	prev := renewed.Serial.Text(16)

	refused := []struct {
		name string
		o    ca.IssueOptions
		want string
	}{
		{"wider", opts("10.2.0.0/15"), "wider prefixes: 10.2.0.0/15 is not inside the running certificate's 10.2.0.0/16"},
		{"other", opts("10.7.0.0/16"), "wider prefixes: 10.7.0.0/16 is not in the running certificate"},
		{"overlay", func() ca.IssueOptions {
			o := opts("10.2.0.0/16")
			o.Overlay = netip.MustParseAddr("10.255.0.9")
			return o
		}(), "overlay address changes"},
	}
	for _, tc := range refused {
		_, err := ca.Issue(tc.o)
		var oe *config.OptionError
		if !errors.As(err, &oe) || oe.Option != "Site" || oe.See != "Replace" || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), "already holds certificate "+prev) {
			t.Errorf("%s: %v, want a refusal naming %s and …%s…", tc.name, err, prev, tc.want)
		}
		tc.o.Replace = true
		if p, _ := ca.Plan(tc.o); p.Kind != ca.IssueReplacement || len(p.Changes) == 0 {
			t.Errorf("%s: plan %+v", tc.name, p)
		}
		tc.o.Out = filepath.Join(t.TempDir(), "r")
		c, err := ca.Issue(tc.o)
		if err != nil {
			t.Fatalf("%s with Replace: %v", tc.name, err)
		}
		prev = c.Serial.Text(16) // the site's newest live certificate now
	}
	if n := len(readInventory(t, dir).Issued); n != 5 {
		t.Errorf("inventory holds %d certificates, want 5 (2 + 3 replacements)", n)
	}

	// Revoked: the name is free again, any prefixes.
	if _, err := ca.Revoke(dir, "ams1", filepath.Join(t.TempDir(), "crl.pem"), now); err != nil {
		t.Fatal(err)
	}
	if p, _ := ca.Plan(opts("10.8.0.0/16")); p.Kind != ca.IssueNew {
		t.Errorf("after revocation: %+v", p)
	}
	// Expired: likewise.
	dir2 := catest.NewDir(t, now)
	o := opts("10.2.0.0/16")
	o.Dir, o.Valid = dir2, time.Hour
	catest.MustIssue(t, dir2, o)
	o.Prefixes, o.Now = catest.Prefixes("10.8.0.0/16"), now.Add(2*time.Hour)
	if p, _ := ca.Plan(o); p.Kind != ca.IssueNew {
		t.Errorf("after expiry: %+v", p)
	}
}

// ca list shows every certificate with its state, by site and issue time.
func TestCAList(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now.Add(-3*time.Hour))
	iss := func(site, prefix, overlay string, at time.Time, valid time.Duration) {
		catest.MustIssue(t, dir, ca.IssueOptions{Site: site, Prefixes: catest.Prefixes(prefix), Overlay: netip.MustParseAddr(overlay), Now: at, Valid: valid})
	}
	iss("par1", "10.3.0.0/16", "10.255.0.3", now, 0)
	iss("ams1", "10.2.0.0/16", "10.255.0.2", now.Add(-2*time.Hour), time.Hour) // expired
	iss("ams1", "10.2.0.0/16", "10.255.0.2", now, 0)
	iss("fra1", "10.1.0.0/16", "10.255.0.1", now, 0)
	if _, err := ca.Revoke(dir, "fra1", filepath.Join(t.TempDir(), "crl.pem"), now); err != nil {
		t.Fatal(err)
	}
	l, err := ca.List(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l {
		got = append(got, e.Site+" "+e.State+" "+strings.Join(e.Prefixes, ","))
	}
	want := "ams1 expired 10.2.0.0/16|ams1 valid 10.2.0.0/16|fra1 revoked 10.1.0.0/16|par1 valid 10.3.0.0/16"
	if strings.Join(got, "|") != want {
		t.Errorf("list:\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
	if l[1].LeftSeconds < int64(ca.DefaultCertValidity/time.Second)-5 || l[0].LeftSeconds > -3000 || l[1].Serial == "" || l[1].NotAfter.IsZero() {
		t.Errorf("entries: %+v", l[:2])
	}
	if _, err := ca.List(filepath.Join(t.TempDir(), "none"), now); err == nil || !strings.Contains(err.Error(), "dcmesh ca init") {
		t.Errorf("no CA: %v", err)
	}
}
