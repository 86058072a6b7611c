package ca_test

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

func readIdentity(t *testing.T, bundle string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(bundle, config.IdentityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// RotateGossipKey seals to every non-revoked site, under a newer epoch each
// time, writes 0600, and what it wrote opens on each recipient only.
func TestRotateGossipKeySealsToLiveSites(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	_, fra := catest.MustIssue(t, dir, ca.IssueOptions{Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.1"), Now: now})
	_, ams := catest.MustIssue(t, dir, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2"), Now: now})
	catest.MustIssue(t, dir, ca.IssueOptions{Site: "lon1", Prefixes: catest.Prefixes("10.3.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3"), Now: now})
	if _, err := ca.Revoke(dir, "lon1", filepath.Join(t.TempDir(), "crl.pem"), now); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "gk.bundle")
	r, err := ca.RotateGossipKey(dir, out, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Bundle.Recipients; !slices.Equal(got, []string{"ams1", "fra1"}) {
		t.Fatalf("recipients %v, want ams1 and fra1 (lon1 is revoked)", got)
	}
	wgtest.AssertMode(t, out, 0o600)
	raw, _ := os.ReadFile(out)
	b, err := trust.ParseGossipKeyBundle(raw, []*x509.Certificate{readCACert(t, dir)}, now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, bundle := range []string{fra, ams} {
		id, err := trust.ParseKeyPEM(readIdentity(t, bundle))
		if err != nil {
			t.Fatal(err)
		}
		key, err := trust.OpenGossipKey(b, id, 0)
		if err != nil {
			t.Fatalf("%s: %v", bundle, err)
		}
		ids = append(ids, trust.GossipKeyID(key))
	}
	if ids[0] != b.KeyID || ids[1] != b.KeyID {
		t.Fatalf("opened ids %v, bundle says %s", ids, b.KeyID)
	}
	if strings.Contains(string(raw), "gossip") {
		t.Fatal("bundle holds text it should not")
	}
	r2, err := ca.RotateGossipKey(dir, out, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Bundle.Epoch <= r.Bundle.Epoch || r2.Bundle.KeyID == r.Bundle.KeyID {
		t.Fatalf("second rotation: epoch %d after %d, key %s after %s", r2.Bundle.Epoch, r.Bundle.Epoch, r2.Bundle.KeyID, r.Bundle.KeyID)
	}
	wgtest.AssertMode(t, filepath.Join(dir, ca.GossipKeyEpochFile), 0o600)
}

// An inventory entry of an older version (no certificate) is refused with
// the fix, and --cert supplies it.
func TestRotateGossipKeyNeedsCertificatesOfOldEntries(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	cert, _ := catest.MustIssue(t, dir, ca.IssueOptions{Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.1"), Now: now})
	inv := readInventory(t, dir)
	inv.Certificates = nil
	raw, _ := json.Marshal(inv)
	if err := os.WriteFile(filepath.Join(dir, ca.InventoryFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "gk.bundle")
	_, err := ca.RotateGossipKey(dir, out, nil, now)
	if err == nil || !strings.Contains(err.Error(), "fra1") || !strings.Contains(err.Error(), "--cert") {
		t.Fatalf("got %v, want an error naming fra1 and --cert", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a bundle was written")
	}
	if _, err := ca.RotateGossipKey(dir, out, []*trust.Certificate{cert}, now); err != nil {
		t.Fatal(err)
	}
}
