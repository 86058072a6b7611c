package mesh

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

// Until the data plane has an interface per gateway slot, the agent
// programs one gateway per remote site: the lowest live one.
func TestOneGatewayPerSite(t *testing.T) {
	in := []records.Site{{Name: "ams1"}, {Name: "ams1", Gateway: 1}, {Name: "lon1", Gateway: 1}, {Name: "lon1", Gateway: 2}, {Name: "par1"}}
	var got []string
	for _, s := range oneGatewayPerSite(in) {
		got = append(got, s.Node())
	}
	if want := []string{"ams1", "lon1.1", "par1"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// A second gateway of a remote site, and a sibling of our own, reach the
// store without changing what the one interface carries: the remote
// site's gateway 0 keeps its peer and prefixes; when it says goodbye, its
// gateway 1 takes them over.
func TestSecondGatewayOnTheOneInterface(t *testing.T) {
	m := newScaleMesh(t, 1)
	g0 := m.sites[0]
	c, k := trusttest.IssueWith(t, m.ca, g0.name, trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("100.64.9.1")}, "172.16.0.0/24")
	g1 := &scaleSite{testSite: testSite{c, k}, name: g0.name + ".1"}
	m.offer(t, g1, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 1)}})
	sc, sk := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("10.255.0.9")}, "10.1.0.0/16")
	m.offer(t, &scaleSite{testSite: testSite{sc, sk}, name: "fra1.1"}, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(9, 0)}})
	if got, want := m.rt.store.Names(), []string{"fra1.1", "site0000", "site0000.1"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	peers := func() map[wg.PublicKey]string {
		t.Helper()
		m.reconcile(t)
		dev, err := m.wg.Device(m.rt.cfg.Interface)
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
	if got := peers(); len(got) != 1 || got[key0] != "172.16.0.0/24,100.64.0.0/32" {
		t.Errorf("with both gateways: device peers %v, want gateway 0 alone with its prefixes", got)
	}
	m.offer(t, g0, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, Leaving: true})
	if got := peers(); len(got) != 1 || got[key1] != "172.16.0.0/24,100.64.9.1/32" {
		t.Errorf("after gateway 0's goodbye: device peers %v, want gateway 1 with the site's prefixes", got)
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
