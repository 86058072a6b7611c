package ca_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

func readCACert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, config.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	cas, err := trust.ParseCAPEM(raw)
	if err != nil || len(cas) != 1 {
		t.Fatalf("ca.crt: %v (%d certificates)", err, len(cas))
	}
	return cas[0]
}

func readInventory(t *testing.T, dir string) ca.Inventory {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ca.InventoryFile))
	if err != nil {
		t.Fatal(err)
	}
	var inv ca.Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestCAInit(t *testing.T) {
	for _, c := range []struct{ cluster, wantCluster string }{{"prod", "prod"}, {"", "dcmesh"}} {
		t.Run(c.wantCluster, func(t *testing.T) {
			now := catest.Now()
			dir := filepath.Join(t.TempDir(), "ca")
			if err := ca.Init(dir, c.cluster, now); err != nil {
				t.Fatal(err)
			}
			wgtest.AssertMode(t, filepath.Join(dir, ca.KeyFile), 0o600)
			wgtest.AssertMode(t, filepath.Join(dir, config.GossipKeyFile), 0o600)
			wgtest.AssertMode(t, filepath.Join(dir, ca.InventoryFile), 0o600)

			caCert := readCACert(t, dir)
			if caCert.Subject.CommonName != "dcmesh CA "+c.wantCluster {
				t.Errorf("CA name %q", caCert.Subject.CommonName)
			}
			if caCert.NotBefore.After(now) || !caCert.NotAfter.After(now.Add(ca.DefaultCAValidity-time.Hour)) {
				t.Errorf("CA validity %s to %s at %s", caCert.NotBefore, caCert.NotAfter, now)
			}
			certPEM, _ := os.ReadFile(filepath.Join(dir, config.CACertFile))
			keyPEM, _ := os.ReadFile(filepath.Join(dir, ca.KeyFile))
			if _, err := trust.LoadCA(certPEM, keyPEM); err != nil {
				t.Errorf("ca.key does not match ca.crt: %v", err)
			}

			gk, err := os.ReadFile(filepath.Join(dir, config.GossipKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(gk)))
			if err != nil || len(k) != enroll.GossipKeyLen {
				t.Errorf("gossip.key: %d bytes, %v", len(k), err)
			}
			if bytes.Equal(k, make([]byte, enroll.GossipKeyLen)) {
				t.Error("gossip key is all zeros")
			}
			if _, err := enroll.ReadGossipKey(filepath.Join(dir, config.GossipKeyFile)); err != nil {
				t.Errorf("the agent cannot read the gossip key: %v", err)
			}

			inv := readInventory(t, dir)
			if inv.Cluster != c.wantCluster || inv.Issued == nil || len(inv.Issued) != 0 {
				t.Errorf("inventory %+v", inv)
			}
		})
	}
}

func TestCAInitTwoCAsDiffer(t *testing.T) {
	now := catest.Now()
	a, b := catest.NewDir(t, now), catest.NewDir(t, now)
	ka, _ := os.ReadFile(filepath.Join(a, config.GossipKeyFile))
	kb, _ := os.ReadFile(filepath.Join(b, config.GossipKeyFile))
	if bytes.Equal(ka, kb) {
		t.Error("two CAs share a gossip key")
	}
	if readCACert(t, a).Equal(readCACert(t, b)) {
		t.Error("two CAs share a certificate")
	}
}

func TestCAInitRefuses(t *testing.T) {
	now := catest.Now()
	t.Run("existing CA", func(t *testing.T) {
		dir := catest.NewDir(t, now)
		before, _ := os.ReadFile(filepath.Join(dir, ca.KeyFile))
		err := ca.Init(dir, "prod", now)
		if err == nil || !strings.Contains(err.Error(), "already holds a CA") {
			t.Fatalf("err = %v", err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, ca.KeyFile))
		if !bytes.Equal(before, after) {
			t.Error("the CA key was overwritten")
		}
	})
	for _, f := range []string{ca.KeyFile, config.CACertFile, config.GossipKeyFile, ca.InventoryFile} {
		t.Run("only "+f, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, f), []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := ca.Init(dir, "prod", now)
			if err == nil || !strings.Contains(err.Error(), f) {
				t.Fatalf("err = %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != "keep me" {
				t.Errorf("%s was overwritten", f)
			}
		})
	}
	t.Run("bad cluster", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ca")
		if err := ca.Init(dir, "Prod_1", now); err == nil || !strings.Contains(err.Error(), "Cluster") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, ca.KeyFile)); err == nil {
			t.Error("a CA was written for a bad cluster name")
		}
	})
}

func TestCAIssueBundle(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	cert, out := catest.MustIssue(t, dir, ca.IssueOptions{
		Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16", "fd00:1::/48"), Overlay: netip.MustParseAddr("10.255.0.1"),
		Underlay: catest.Prefixes("192.0.2.0/24", "2001:db8::/32"), Valid: 48 * time.Hour, Now: now,
	})

	if cert.Site != "fra1" {
		t.Errorf("site %q", cert.Site)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/48")}; !slices.Equal(cert.Prefixes, want) {
		t.Errorf("prefixes %v, want %v", cert.Prefixes, want)
	}
	if cert.Overlay != netip.MustParseAddr("10.255.0.1") {
		t.Errorf("overlay %v", cert.Overlay)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}; !slices.Equal(cert.Underlay, want) {
		t.Errorf("underlay %v, want %v", cert.Underlay, want)
	}
	if cert.AllowDefault {
		t.Error("allow-default without --allow-default")
	}
	if !cert.NotBefore.Equal(now.Add(-ca.CertBackdate)) || !cert.NotAfter.Equal(now.Add(48*time.Hour)) {
		t.Errorf("validity %s to %s", cert.NotBefore, cert.NotAfter)
	}
	caCert := readCACert(t, dir)
	if err := cert.Verify([]*x509.Certificate{caCert}, nil, now, 0); err != nil {
		t.Errorf("certificate does not verify against the CA: %v", err)
	}

	wgtest.AssertMode(t, filepath.Join(out, config.IdentityKeyFile), 0o600)
	wgtest.AssertMode(t, filepath.Join(out, config.GossipKeyFile), 0o600)
	wgtest.AssertMode(t, filepath.Join(out, config.SiteCertFile), 0o644)
	wgtest.AssertMode(t, filepath.Join(out, config.CACertFile), 0o644)

	certPEM, _ := os.ReadFile(filepath.Join(out, config.SiteCertFile))
	onDisk, err := trust.ParseCertPEM(certPEM)
	if err != nil || !bytes.Equal(onDisk.Raw, cert.Raw) {
		t.Errorf("site.crt is not the returned certificate: %v", err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(out, config.IdentityKeyFile))
	key, err := trust.ParseKeyPEM(keyPEM)
	if err != nil || !key.Public().(ed25519.PublicKey).Equal(cert.IdentityKey) {
		t.Errorf("identity.key does not belong to the certificate: %v", err)
	}
	for _, f := range []string{config.CACertFile, config.GossipKeyFile} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(out, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("bundle %s differs from the CA's", f)
		}
	}

	inv := readInventory(t, dir)
	if len(inv.Issued) != 1 {
		t.Fatalf("inventory: %+v", inv)
	}
	e := inv.Issued[0]
	if e.Site != "fra1" || e.Serial != cert.Serial.Text(16) || e.Overlay != "10.255.0.1" ||
		!slices.Equal(e.Prefixes, []string{"10.1.0.0/16", "fd00:1::/48"}) || e.Revoked ||
		!e.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("inventory entry %+v", e)
	}
}

func TestCAIssueDefaults(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	cert, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.1"), AllowDefault: true, Now: now})
	if !cert.NotAfter.Equal(now.Add(ca.DefaultCertValidity)) {
		t.Errorf("default validity ends %s", cert.NotAfter)
	}
	if len(cert.Underlay) != 0 || !cert.AllowDefault {
		t.Errorf("underlay %v allow-default %v", cert.Underlay, cert.AllowDefault)
	}
}

func TestCAIssueRefuses(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})
	_, taken := catest.MustIssue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.3.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now})

	ok := ca.IssueOptions{Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.1")}
	with := func(f func(*ca.IssueOptions)) ca.IssueOptions { o := ok; f(&o); return o }
	cases := []struct {
		name  string
		opts  ca.IssueOptions
		hints []string
	}{
		{"bad site", with(func(o *ca.IssueOptions) { o.Site = "Fra_1" }), []string{"Site", "Fra_1"}},
		{"empty site", with(func(o *ca.IssueOptions) { o.Site = "" }), []string{"Site"}},
		{"no prefix", with(func(o *ca.IssueOptions) { o.Prefixes = nil }), []string{"Prefixes", "at least one"}},
		{"host bits", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("10.1.2.3/16") }), []string{"Prefixes", "host bits", "10.1.0.0/16"}},
		{"default route v4", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("0.0.0.0/0") }), []string{"default route", "AllowDefault"}},
		{"default route v6 with allow-default", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("10.1.0.0/16", "::/0"); o.AllowDefault = true }), []string{"default route"}},
		{"no overlay", with(func(o *ca.IssueOptions) { o.Overlay = netip.Addr{} }), []string{"Overlay", "required"}},
		{"bad underlay", with(func(o *ca.IssueOptions) { o.Underlay = catest.Prefixes("192.0.2.1/24") }), []string{"Underlay", "host bits"}},
		{"too short", with(func(o *ca.IssueOptions) { o.Valid = time.Millisecond }), []string{"Valid", "too short"}},
		{"prefix inside another site's", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("10.1.0.0/16", "10.2.128.0/17") }),
			[]string{"10.2.128.0/17", "10.2.0.0/16", "site ams1", "dcmesh ca revoke"}},
		{"prefix covering another site's", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("10.0.0.0/8") }),
			[]string{"10.0.0.0/8", "site ams1", "dcmesh ca revoke"}},
		{"prefix covering another site's overlay", with(func(o *ca.IssueOptions) { o.Prefixes = catest.Prefixes("10.1.0.0/16", "10.255.0.3/32") }),
			[]string{"10.255.0.3/32", "site par1", "dcmesh ca revoke"}},
		{"overlay inside another site's prefix", with(func(o *ca.IssueOptions) { o.Overlay = netip.MustParseAddr("10.3.0.1") }),
			[]string{"10.3.0.1/32", "10.3.0.0/16", "site par1"}},
		{"overlay of another site", with(func(o *ca.IssueOptions) { o.Overlay = netip.MustParseAddr("10.255.0.2") }),
			[]string{"10.255.0.2/32", "site ams1"}},
		{"existing bundle", with(func(o *ca.IssueOptions) { o.Out = taken }), []string{"already holds a bundle"}},
		{"not a CA dir", with(func(o *ca.IssueOptions) { o.Dir = t.TempDir() }), []string{"not a CA directory", "dcmesh ca init"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := os.ReadFile(filepath.Join(dir, ca.InventoryFile))
			caDir := dir
			if c.opts.Dir != "" {
				caDir = c.opts.Dir
			}
			cert, out, err := catest.Issue(t, caDir, c.opts)
			if err == nil {
				t.Fatalf("issued %s %v", cert.Site, cert.Prefixes)
			}
			for _, h := range c.hints {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error does not say %q: %v", h, err)
				}
			}
			after, _ := os.ReadFile(filepath.Join(dir, ca.InventoryFile))
			if !bytes.Equal(before, after) {
				t.Error("a refused issue changed the inventory")
			}
			if out != taken {
				if _, err := os.Stat(filepath.Join(out, config.IdentityKeyFile)); err == nil {
					t.Error("a refused issue wrote a bundle")
				}
			}
		})
	}
}

func TestCAIssueRenewAndReassign(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	first, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})

	// Renewal: the same site may get its own prefixes and overlay again.
	renewed, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now.Add(time.Hour)})
	if renewed.Serial.Cmp(first.Serial) == 0 {
		t.Error("renewal reused the serial")
	}
	// Another site still may not.
	if _, _, err := catest.Issue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now.Add(time.Hour)}); err == nil {
		t.Fatal("another site got ams1's prefix")
	}
	// After revocation (of both ams1 certificates) it may.
	if _, err := ca.Revoke(dir, "ams1", filepath.Join(t.TempDir(), "crl.pem"), now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := catest.Issue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now.Add(3 * time.Hour)}); err != nil {
		t.Fatalf("revoked prefixes not reusable: %v", err)
	}
	inv := readInventory(t, dir)
	if len(inv.Issued) != 3 || !inv.Issued[0].Revoked || !inv.Issued[1].Revoked || inv.Issued[2].Revoked || inv.Issued[2].Site != "par1" {
		t.Errorf("inventory %+v", inv.Issued)
	}
}

// A certificate that has expired no longer blocks its prefixes.
func TestCAIssueExpiredDoesNotBlock(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Valid: time.Hour, Now: now})
	if _, _, err := catest.Issue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now.Add(30 * time.Minute)}); err == nil {
		t.Error("a valid certificate's prefix was issued to another site")
	}
	if _, _, err := catest.Issue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now.Add(2 * time.Hour)}); err != nil {
		t.Errorf("an expired certificate still blocks its prefix: %v", err)
	}
}

func readCRL(t *testing.T, path string, caCert *x509.Certificate) *trust.RevocationList {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	der, err := trust.ParseCRLPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := trust.ParseRevocationList(der, []*x509.Certificate{caCert})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func serialSet(ss []*big.Int) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Text(16))
	}
	slices.Sort(out)
	return out
}

func TestCARevoke(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	caCert := readCACert(t, dir)
	ams, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})
	par, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "par1", Prefixes: catest.Prefixes("10.3.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now})
	lon, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "lon1", Prefixes: catest.Prefixes("10.4.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.4"), Now: now})
	outDir := t.TempDir()

	steps := []struct {
		site       string
		wantNumber int64
		want       []*big.Int
	}{
		{"ams1", 1, []*big.Int{ams.Serial}},
		{"par1", 2, []*big.Int{ams.Serial, par.Serial}},
	}
	for i, st := range steps {
		out := filepath.Join(outDir, st.site+".pem")
		crl, err := ca.Revoke(dir, st.site, out, now.Add(time.Duration(i+1)*time.Minute))
		if err != nil {
			t.Fatalf("revoke %s: %v", st.site, err)
		}
		if crl.Number.Int64() != st.wantNumber {
			t.Errorf("revoke %s: CRL number %v, want %d", st.site, crl.Number, st.wantNumber)
		}
		if got, want := serialSet(crl.Serials), serialSet(st.want); !slices.Equal(got, want) {
			t.Errorf("revoke %s: serials %v, want %v", st.site, got, want)
		}
		for _, path := range []string{out, filepath.Join(dir, ca.CRLFile)} {
			l := readCRL(t, path, caCert)
			if !bytes.Equal(l.Raw, crl.Raw) {
				t.Errorf("%s is not the returned list", path)
			}
		}
		if crl.Revoked(lon.Serial) {
			t.Error("lon1 revoked")
		}
	}
	// The revoked certificates now fail verification with the list.
	crl := readCRL(t, filepath.Join(dir, ca.CRLFile), caCert)
	for _, c := range []*trust.Certificate{ams, par} {
		if err := c.Verify([]*x509.Certificate{caCert}, crl, now, 0); err == nil {
			t.Errorf("%s still verifies", c.Site)
		}
	}
	if err := lon.Verify([]*x509.Certificate{caCert}, crl, now, 0); err != nil {
		t.Errorf("lon1: %v", err)
	}

	for _, c := range []struct{ name, site string }{{"already revoked", "ams1"}, {"unknown", "nyc1"}} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := os.ReadFile(filepath.Join(dir, ca.CRLFile))
			out := filepath.Join(outDir, c.name+".pem")
			_, err := ca.Revoke(dir, c.site, out, now.Add(time.Hour))
			if err == nil || !strings.Contains(err.Error(), "no certificate of site \""+c.site+"\"") {
				t.Fatalf("err = %v", err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, ca.CRLFile))
			if !bytes.Equal(before, after) {
				t.Error("a refused revocation changed crl.pem")
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a refused revocation wrote --out")
			}
		})
	}
}

func TestCARevokeCorruptCRL(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})
	if err := os.WriteFile(filepath.Join(dir, ca.CRLFile), []byte("not a crl"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ca.Revoke(dir, "ams1", filepath.Join(t.TempDir(), "crl.pem"), now)
	if err == nil || !strings.Contains(err.Error(), "is corrupt") {
		t.Fatalf("err = %v", err)
	}
	if inv := readInventory(t, dir); inv.Issued[0].Revoked {
		t.Error("inventory marked revoked although no list was written")
	}
}

// A revocation whose --out cannot be written fails, but crl.pem and the
// inventory are already updated, so running it again says "already revoked"
// and never writes --out.
func TestCARevokeOutFailureLeavesCAUnchanged(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})
	bad := filepath.Join(t.TempDir(), "no", "such", "dir", "crl.pem")
	if _, err := ca.Revoke(dir, "ams1", bad, now); err == nil {
		t.Fatal("wrote into a missing directory")
	}
	good := filepath.Join(t.TempDir(), "crl.pem")
	if _, err := ca.Revoke(dir, "ams1", good, now); err != nil {
		t.Errorf("retry after a failed --out: %v", err)
	}
}
