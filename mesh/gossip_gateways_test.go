package mesh

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

// fakeSlotDevice stands in for a slot's WireGuard device (the fake
// client already has its name).
type fakeSlotDevice struct{ name string }

func (d fakeSlotDevice) Name() string          { return d.name }
func (d fakeSlotDevice) Backend() wg.Backend   { return wg.BackendUserspace }
func (d fakeSlotDevice) Up() error             { return nil }
func (d fakeSlotDevice) Done() <-chan struct{} { return nil }
func (d fakeSlotDevice) Close() error          { return nil }

// A second gateway of a remote site gets its own slot: its peer on
// dcm0g1 (opened for it), with the site's prefixes and its own overlay
// address, beside gateway 0 on dcm0; a sibling of our own reaches the
// store and is no peer. Without a handshake yet neither gateway is healthy,
// so the site's prefix has no tunnel route (fail-closed); when gateway 0
// says goodbye, the site has one gateway again and its prefix a plain
// route through dcm0g1.
func TestSecondGatewayOnItsSlot(t *testing.T) {
	m := newScaleMesh(t, 1)
	var opened []string
	m.rt.openSlot = func(o wg.DeviceOptions) (wg.Device, error) {
		opened = append(opened, o.Name)
		m.nl.AddLink(o.Name, o.MTU)
		return fakeSlotDevice{o.Name}, nil
	}
	g0 := m.sites[0]
	c, k := trusttest.IssueWith(t, m.ca, g0.name, trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("100.64.9.1")}, "172.16.0.0/24")
	g1 := &scaleSite{testSite: testSite{c, k}, name: g0.name + ".1"}
	m.offer(t, g1, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 1)}})
	sc, sk := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("10.255.0.9")}, "10.1.0.0/16")
	m.offer(t, &scaleSite{testSite: testSite{sc, sk}, name: "fra1.1"}, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(9, 0)}})
	if got, want := m.rt.store.Names(), []string{"fra1.1", "site0000", "site0000.1"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	peers := func(iface string) map[wg.PublicKey]string {
		t.Helper()
		dev, err := m.wg.Device(iface)
		if err != nil {
			t.Fatal(err)
		}
		out := map[wg.PublicKey]string{}
		for _, p := range dev.Peers {
			if slices.ContainsFunc(m.rt.cfg.Peers, func(sp config.StaticPeer) bool { return sp.PublicKey == wg.PublicKey(p.PublicKey) }) {
				continue // the configuration's static peers
			}
			var ips []string
			for _, n := range p.AllowedIPs {
				ips = append(ips, n.String())
			}
			out[wg.PublicKey(p.PublicKey)] = strings.Join(ips, ",")
		}
		return out
	}
	key0, key1 := trusttest.WGKey("site0000"), trusttest.WGKey("site0000.1")
	// Not m.reconcile: the new slot's device gets its key and port.
	reconcile := func() {
		t.Helper()
		if err := m.a.reconcile(m.rt); err != nil {
			t.Fatal(err)
		}
	}
	reconcile()
	if got := peers("dcm0"); len(got) != 1 || got[key0] != "172.16.0.0/24,100.64.0.0/32" {
		t.Errorf("with both gateways: dcm0 peers %v, want gateway 0 alone with its prefixes", got)
	}
	if got := peers("dcm0g1"); len(got) != 1 || got[key1] != "172.16.0.0/24,100.64.9.1/32" {
		t.Errorf("with both gateways: dcm0g1 peers %v, want gateway 1 with the site's prefix and its overlay address", got)
	}
	if !slices.Equal(opened, []string{"dcm0g1"}) {
		t.Errorf("opened slot devices %v, want dcm0g1", opened)
	}
	kernel := m.nl.String()
	if strings.Contains(kernel, "route 172.16.0.0/24 dev") || strings.Contains(kernel, "route 172.16.0.0/24 nhid") ||
		!strings.Contains(kernel, "route unreachable 172.16.0.0/24") || !strings.Contains(kernel, "route 100.64.9.1/32 dev dcm0g1") {
		t.Errorf("with two gateways and no handshake: kernel\n%s\nwant no tunnel route for 172.16.0.0/24, the overlay of gateway 1 on dcm0g1", kernel)
	}
	m.offer(t, g0, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, Leaving: true})
	reconcile()
	if got := peers("dcm0"); len(got) != 0 {
		t.Errorf("after gateway 0's goodbye: dcm0 peers %v, want none of site0000", got)
	}
	if got := peers("dcm0g1"); len(got) != 1 || got[key1] != "172.16.0.0/24,100.64.9.1/32" {
		t.Errorf("after gateway 0's goodbye: dcm0g1 peers %v, want gateway 1 with the site's prefixes", got)
	}
	if kernel := m.nl.String(); !strings.Contains(kernel, "route 172.16.0.0/24 dev dcm0g1") {
		t.Errorf("after gateway 0's goodbye: kernel\n%s\nwant 172.16.0.0/24 through dcm0g1", kernel)
	}
}

// A gateway-1 agent's node name and trust policy come from its
// certificate: it gossips as "fra1.1", and fra1's gateway 0 is its
// sibling, held but no peer.
func TestGatewayOneAgentIdentity(t *testing.T) {
	m := newScaleMesh(t, 1)
	if got := m.rt.nodeName(); got != "fra1" {
		t.Errorf("gateway 0's node name %q", got)
	}
	own, ownKey := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("10.255.0.9")}, "10.1.0.0/16")
	m.rt.enr.Cert, m.rt.enr.Identity = own, ownKey
	if got := m.rt.nodeName(); got != "fra1.1" {
		t.Errorf("gateway 1's node name %q", got)
	}
	if p := m.a.policy(m.rt); p.LocalSite != "fra1" || p.LocalGateway != 1 {
		t.Errorf("policy local %s gateway %d", p.LocalSite, p.LocalGateway)
	}
	gc, gk := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Overlay: netip.MustParseAddr("10.255.0.1")}, "10.1.0.0/16")
	m.offer(t, &scaleSite{testSite: testSite{gc, gk}, name: "fra1"}, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(9, 0)}})
	if _, ok := m.rt.store.Record("fra1"); !ok {
		t.Error("the sibling gateway 0 is not held")
	}
	var live []string
	for _, s := range m.a.liveSites(m.rt) {
		live = append(live, s.Node())
	}
	if want := []string{"site0000"}; !slices.Equal(live, want) {
		t.Errorf("live sites %v, want %v", live, want)
	}
}
