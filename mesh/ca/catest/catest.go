// Package catest builds CA directories and enrollment bundles for tests,
// through the real mesh/ca (so a bundle is exactly what `dcmesh ca issue`
// writes).
package catest

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Now is the operator's clock in tests: whole seconds, so that certificate
// times compare exactly.
func Now() time.Time { return time.Now().Truncate(time.Second) }

// NewDir creates a CA directory for the cluster "prod" at now.
func NewDir(t testing.TB, now time.Time) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Init(dir, "prod", now); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Issue runs ca.Issue from dir into a fresh bundle directory (unless o.Out
// is set), at Now unless o.Now is set, and returns the bundle directory.
func Issue(t testing.TB, dir string, o ca.IssueOptions) (*trust.Certificate, string, error) {
	t.Helper()
	o.Dir = dir
	if o.Out == "" {
		o.Out = filepath.Join(t.TempDir(), "bundle-"+o.Site)
	}
	if o.Now.IsZero() {
		o.Now = Now()
	}
	c, err := ca.Issue(o)
	return c, o.Out, err
}

// MustIssue is Issue that fails the test on an error.
func MustIssue(t testing.TB, dir string, o ca.IssueOptions) (*trust.Certificate, string) {
	t.Helper()
	c, out, err := Issue(t, dir, o)
	if err != nil {
		t.Fatalf("ca.Issue(%s): %v", o.Site, err)
	}
	return c, out
}

// Bundle creates a CA at caNow and issues the site fra1 (10.1.0.0/16 and
// fd00:1::/48, overlay 10.255.0.1, underlay 192.0.2.0/24 and 2001:db8::/32:
// each unless o says otherwise) into a bundle directory.
func Bundle(t testing.TB, caNow time.Time, o ca.IssueOptions) (string, *trust.Certificate) {
	t.Helper()
	dir := NewDir(t, caNow)
	if o.Site == "" {
		o.Site = "fra1"
	}
	if o.Prefixes == nil {
		o.Prefixes = Prefixes("10.1.0.0/16", "fd00:1::/48")
	}
	if !o.Overlay.IsValid() {
		o.Overlay = netip.MustParseAddr("10.255.0.1")
	}
	if o.Underlay == nil {
		o.Underlay = Prefixes("192.0.2.0/24", "2001:db8::/32")
	}
	if o.Now.IsZero() {
		o.Now = caNow
	}
	cert, out := MustIssue(t, dir, o)
	return out, cert
}

// Prefixes parses prefixes (it panics on a bad one: test data).
func Prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// CopyBundle copies the bundle src into a new directory (modes kept), for a
// test to break one of its files.
func CopyBundle(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{config.CACertFile, config.SiteCertFile, config.IdentityKeyFile, config.GossipKeyFile} {
		CopyFile(t, filepath.Join(src, f), filepath.Join(dst, f))
	}
	return dst
}

// CopyFile copies src to dst with src's mode.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := wg.WriteFileAtomic(dst, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}
