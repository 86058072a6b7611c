package ca_test

import (
	"errors"
	"math/big"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// gatewayOpts is gateway gw of fra1 (10.1.0.0/16) with its own overlay
// address.
func gatewayOpts(gw uint8, overlay string) ca.IssueOptions {
	return ca.IssueOptions{Site: "fra1", Gateway: gw, Prefixes: catest.Prefixes("10.1.0.0/16"), Overlay: netip.MustParseAddr(overlay)}
}

// A second gateway of a site is a certificate of its own: it carries the
// gateway index, shares the site's prefixes, is new (not a renewal or a
// replacement of gateway 0's), and the inventory records the gateway.
func TestCAIssueGateway(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	gw0, _ := catest.MustIssue(t, dir, gatewayOpts(0, "10.255.0.1"))
	o := gatewayOpts(1, "10.255.0.11")
	o.Dir, o.Now = dir, now
	if p, err := ca.Plan(o); err != nil || p.Kind != ca.IssueNew || p.Previous != nil {
		t.Fatalf("plan of gateway 1: %+v %v, want new", p, err)
	}
	gw1, _ := catest.MustIssue(t, dir, o)
	if gw0.Gateway != 0 || gw1.Gateway != 1 || gw1.Site != "fra1" {
		t.Errorf("gateways: %d, %d (%s)", gw0.Gateway, gw1.Gateway, gw1.Site)
	}
	uris := ""
	for _, u := range gw1.X509.URIs {
		uris += u.String() + " "
	}
	if !strings.Contains(uris, "dcmesh:gateway=1") {
		t.Errorf("gateway 1's certificate has URIs %s", uris)
	}
	l, err := ca.List(dir, now)
	if err != nil || len(l) != 2 || l[0].Gateway != 0 || l[1].Gateway != 1 {
		t.Errorf("list: %+v %v", l, err)
	}
	inv := readInventory(t, dir)
	if len(inv.Issued) != 2 || inv.Issued[0].Gateway != 0 || inv.Issued[1].Gateway != 1 || inv.Issued[1].Serial != gw1.Serial.Text(16) {
		t.Errorf("inventory: %+v", inv.Issued)
	}

	// Renewals are per gateway: gateway 1 again is a renewal of gateway 1's
	// certificate, and another overlay address for it a replacement of it.
	if p, err := ca.Plan(o); err != nil || p.Kind != ca.IssueRenewal || p.Previous.Serial != gw1.Serial.Text(16) {
		t.Errorf("plan of gateway 1 again: %+v %v, want a renewal of %x", p, err, gw1.Serial)
	}
	moved := gatewayOpts(1, "10.255.0.12")
	_, _, err = catest.Issue(t, dir, moved)
	if err == nil || !strings.Contains(err.Error(), "fra1.1 already holds certificate "+gw1.Serial.Text(16)) {
		t.Errorf("gateway 1 with another overlay: %v", err)
	}
	// Gateway 0 is still renewed against its own certificate.
	o0 := gatewayOpts(0, "10.255.0.1")
	o0.Dir, o0.Now = dir, now
	if p, err := ca.Plan(o0); err != nil || p.Kind != ca.IssueRenewal || p.Previous.Serial != gw0.Serial.Text(16) {
		t.Errorf("plan of gateway 0: %+v %v, want a renewal of %x", p, err, gw0.Serial)
	}
}

// The gateways of a site share its prefixes but not overlay addresses; the
// prefixes stay refused to other sites; the index is bounded.
func TestCAIssueGatewayRefuses(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	gw0, _ := catest.MustIssue(t, dir, gatewayOpts(0, "10.255.0.1"))
	for _, c := range []struct {
		name   string
		o      ca.IssueOptions
		option string
		want   string
	}{
		{"sibling's overlay", gatewayOpts(2, "10.255.0.1"), "Overlay",
			"Overlay 10.255.0.1 is already the overlay address of gateway fra1 (certificate " + gw0.Serial.Text(16)},
		{"index too high", gatewayOpts(trust.MaxGateways, "10.255.0.13"), "Gateway", "a site has at most 4 gateways, 0 to 3"},
	} {
		_, _, err := catest.Issue(t, dir, c.o)
		var oe *config.OptionError
		if !errors.As(err, &oe) || oe.Option != c.option || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want option %s saying %q", c.name, err, c.option, c.want)
		}
	}
	other := ca.IssueOptions{Site: "ams1", Gateway: 1, Prefixes: catest.Prefixes("10.1.128.0/17"), Overlay: netip.MustParseAddr("10.255.0.21")}
	if _, _, err := catest.Issue(t, dir, other); err == nil || !strings.Contains(err.Error(), "overlaps 10.1.0.0/16 of site fra1") {
		t.Errorf("another site's gateway on fra1's prefix: %v", err)
	}
	if inv := readInventory(t, dir); len(inv.Issued) != 1 {
		t.Errorf("refusals changed the inventory: %+v", inv.Issued)
	}
}

// Revoking a site revokes every gateway of it; RevokeGateway one only.
func TestCARevokeGateway(t *testing.T) {
	now := catest.Now()
	dir := catest.NewDir(t, now)
	gw0, _ := catest.MustIssue(t, dir, gatewayOpts(0, "10.255.0.1"))
	gw1, _ := catest.MustIssue(t, dir, gatewayOpts(1, "10.255.0.11"))
	gw2, _ := catest.MustIssue(t, dir, gatewayOpts(2, "10.255.0.12"))
	crlFile := filepath.Join(t.TempDir(), "crl.pem")
	serials := func(ss []*big.Int) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Text(16))
		}
		return strings.Join(slices.Sorted(slices.Values(out)), ",")
	}
	crl, err := ca.RevokeGateway(dir, trust.GatewayID{Site: "fra1", Gateway: 1}, crlFile, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := serials(crl.Serials); got != gw1.Serial.Text(16) {
		t.Errorf("revoked %s, want gateway 1's %x only", got, gw1.Serial)
	}
	if _, err := ca.RevokeGateway(dir, trust.GatewayID{Site: "fra1", Gateway: 1}, crlFile, now); err == nil ||
		!strings.Contains(err.Error(), `no certificate of gateway 1 of site "fra1" to revoke`) {
		t.Errorf("gateway 1 again: %v", err)
	}
	if crl, err = ca.Revoke(dir, "fra1", crlFile, now); err != nil {
		t.Fatal(err)
	}
	want := strings.Join(slices.Sorted(slices.Values([]string{gw0.Serial.Text(16), gw1.Serial.Text(16), gw2.Serial.Text(16)})), ",")
	if got := serials(crl.Serials); got != want {
		t.Errorf("revoked %s, want every gateway's %s", got, want)
	}
	for _, e := range readInventory(t, dir).Issued {
		if !e.Revoked {
			t.Errorf("gateway %d not revoked in the inventory", e.Gateway)
		}
	}
}
