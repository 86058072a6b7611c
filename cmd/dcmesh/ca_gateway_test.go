package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `ca issue --gateway N` certifies another gateway of a site (its own
// certificate, dcmesh:gateway=N, a warning that every agent must run this
// version first),
// `ca list` shows the gateways, and `ca revoke --gateway N` revokes one
// where --site alone revokes every gateway. Through the binary.
func TestCLICAGateway(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if _, err := runCLI(t, "ca", "init", "--dir", caDir); err != nil {
		t.Fatal(err)
	}
	bundles := 0
	issue := func(gw, overlay string, extra ...string) (string, string, int) {
		bundles++
		args := []string{"ca", "issue", "--dir", caDir, "--site", "fra1", "--prefix", "10.1.0.0/16", "--overlay", overlay,
			"--out", filepath.Join(dir, fmt.Sprintf("bundle%d", bundles))}
		if gw != "" {
			args = append(args, "--gateway", gw)
		}
		return runBinary(t, append(args, extra...)...)
	}
	if _, stderr, code := issue("", "10.255.0.1"); code != 0 || stderr != "" {
		t.Fatalf("gateway 0: exit %d, %s", code, stderr)
	}
	stdout, stderr, code := issue("1", "10.255.0.11", "--json")
	if code != 0 || !strings.Contains(stderr, "warning: start fra1.1's agent only once every agent of the cluster runs this version") {
		t.Fatalf("gateway 1: exit %d, stderr %q", code, stderr)
	}
	var is issueJSON
	decodeOne(t, "ca issue --gateway", stdout, &is)
	if is.Gateway != 1 || is.Site != "fra1" || is.Overlay != "10.255.0.11" {
		t.Errorf("ca issue --gateway 1 --json: %+v", is)
	}
	if uris := certURIs(t, filepath.Join(is.Bundle, "site.crt")); !strings.Contains(uris, "dcmesh:gateway=1") {
		t.Errorf("gateway 1's certificate has URIs %q", uris)
	}
	// init from gateway 1's bundle works and says the same.
	_, stderr, code = runBinary(t, "init", "--bundle", is.Bundle, "--state-dir", filepath.Join(dir, "state1"), "--endpoint", "192.0.2.11:51820")
	if code != 0 || !strings.Contains(stderr, "warning: start fra1.1's agent only once every agent of the cluster runs this version") {
		t.Errorf("init from gateway 1's bundle: exit %d, stderr %q", code, stderr)
	}
	// Gateway 1 is not a renewal of gateway 0: the text says neither.
	stdout, _, code = issue("2", "10.255.0.12")
	if code != 0 || strings.Contains(stdout, "renewal") || !strings.HasPrefix(stdout, "gateway 2 of site fra1 certified") {
		t.Errorf("gateway 2: exit %d, %s", code, stdout)
	}

	// Gateway 2 again is a renewal of gateway 2's own certificate.
	if stdout, _, code = issue("2", "10.255.0.12", "--valid", "30d"); code != 0 || !strings.Contains(stdout, "renewal of gateway 2 of site fra1") {
		t.Errorf("gateway 2 again: exit %d, %s", code, stdout)
	}

	for _, c := range []struct {
		gw, overlay, want string
		code              int
	}{
		{"4", "10.255.0.14", "--gateway 4: a gateway index among its site's, 0 to 3", 2},
		{"-1", "10.255.0.14", "--gateway -1", 2},
		{"3", "10.255.0.11", "--overlay 10.255.0.11 is already the overlay address of gateway fra1.1", 1},
	} {
		if _, stderr, code := issue(c.gw, c.overlay); code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("--gateway %s --overlay %s: exit %d, %s; want %d saying %q", c.gw, c.overlay, code, stderr, c.code, c.want)
		}
	}

	stdout, _, _ = runBinary(t, "ca", "list", "--dir", caDir)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "SITE  GATEWAY  SERIAL") {
		t.Fatalf("ca list:\n%s", stdout)
	}
	for i, l := range lines[1:] {
		if f := strings.Fields(l); f[0] != "fra1" || f[1] != []string{"0", "1", "2", "2"}[i] {
			t.Errorf("ca list line %d: %q", i+1, l)
		}
	}

	crl := filepath.Join(dir, "crl.pem")
	stdout, stderr, code = runBinary(t, "ca", "revoke", "--dir", caDir, "--site", "fra1", "--gateway", "1", "--out", crl, "--json")
	var rv caRevokeJSON
	if code != 0 {
		t.Fatalf("ca revoke --gateway 1: exit %d, %s", code, stderr)
	}
	decodeOne(t, "ca revoke --gateway", stdout, &rv)
	if rv.Gateway == nil || *rv.Gateway != 1 || len(rv.Serials) != 1 || rv.Serials[0] != is.Serial {
		t.Errorf("ca revoke --gateway 1 --json: %+v (gateway 1 is %s)", rv, is.Serial)
	}
	stdout, _, _ = runBinary(t, "ca", "list", "--dir", caDir, "--json")
	var ls caListJSON
	decodeOne(t, "ca list", stdout, &ls)
	for _, l := range ls.Certificates {
		if want := l.Gateway == 1; (l.State == "revoked") != want {
			t.Errorf("after revoking gateway 1: gateway %d is %s", l.Gateway, l.State)
		}
	}
	stdout, _, code = runBinary(t, "ca", "revoke", "--dir", caDir, "--site", "fra1", "--out", crl, "--json")
	rv = caRevokeJSON{}
	decodeOne(t, "ca revoke", stdout, &rv)
	if code != 0 || rv.Gateway != nil || len(rv.Serials) != 4 {
		t.Errorf("ca revoke --site: exit %d, %+v, want every gateway's 4 serials", code, rv)
	}
}

func certURIs(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, u := range c.URIs {
		s = append(s, u.String())
	}
	return strings.Join(s, " ")
}
