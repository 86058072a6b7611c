package mesh

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Before a probe session runs, a remote gateway counts healthy once the
// pair has shaken hands (fail-static for a gateway just learned), by node
// name; probeDriven is set only by a site with several gateways.
func TestGatewayHealthWithoutProbes(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	rt := &siteRuntime{cfg: cfg}
	sites := []records.Site{
		{Name: "par2", PublicKey: keyD},
		{Name: "par2", Gateway: 1, PublicKey: keyE, Next: keyF},
		{Name: "lon1", PublicKey: keyG},
	}
	slot0 := &wgtypes.Device{Name: "dcm0", Peers: []wgtypes.Peer{
		{PublicKey: wgtypes.Key(keyD), LastHandshakeTime: time.Now()},
		{PublicKey: wgtypes.Key(keyG)}, // no handshake yet
	}}
	slot1 := &wgtypes.Device{Name: "dcm0g1", Peers: []wgtypes.Peer{
		{PublicKey: wgtypes.Key(keyE), LastHandshakeTime: time.Now().Add(-time.Hour)}, // long dead
		{PublicKey: wgtypes.Key(keyF), LastHandshakeTime: time.Now()},                 // its next key lives
	}}
	all := mergedDevice(slot0, []*wgtypes.Device{slot1})
	if len(all.Peers) != 4 || len(slot0.Peers) != 2 {
		t.Fatalf("merged %d peers (slot 0 now %d)", len(all.Peers), len(slot0.Peers))
	}
	got := rt.gatewayHealth(sites, all)
	want := map[string]bool{"par2": true, "par2.1": true, "lon1": false}
	for node, w := range want {
		if got[node] != w {
			t.Errorf("%s healthy %v, want %v (all %v)", node, got[node], w, got)
		}
	}
	if !probeDriven(sites) || probeDriven(sites[2:]) || probeDriven([]records.Site{{Name: "sfo1", Gateway: 1}}) {
		t.Error("probeDriven: want true only with a site of two gateways")
	}
}

// Gateway 1 holds every remote gateway at its announced port + 1: the
// uplink chooser compares the device's endpoint with the record's ones
// after taking that off (a roam to the second uplink is adopted), and the
// desired endpoint is the chosen one + 1.
func TestUplinksOfGatewayOne(t *testing.T) {
	m := newScaleMesh(t, 1)
	own, ownKey := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("10.255.0.9")}, "10.1.0.0/16")
	m.rt.enr.Cert, m.rt.enr.Identity = own, ownKey
	first, second := netip.MustParseAddrPort("192.0.2.10:51820"), netip.MustParseAddrPort("198.51.100.10:51820")
	s := records.Site{Name: "par2", PublicKey: keyD, Endpoint: first, Endpoints: []netip.AddrPort{first, second}, Prefixes: prefixes("10.7.0.0/16")}
	m.a.useUplinks(m.rt, []records.Site{s}, nil) // the chooser starts on the first
	roamed := net.UDPAddrFromAddrPort(netip.AddrPortFrom(second.Addr(), second.Port()+1))
	dev := &wgtypes.Device{Peers: []wgtypes.Peer{{PublicKey: wgtypes.Key(keyD), Endpoint: roamed}}}
	out := m.a.useUplinks(m.rt, []records.Site{s}, dev)
	if out[0].Endpoint != second {
		t.Fatalf("chosen endpoint %v after the device roamed to %v, want %v", out[0].Endpoint, roamed, second)
	}
	d := computeDesiredGateways(m.rt.cfg, m.rt.rot.Key(), 1380, out, nil, gatewayInputs{Local: m.rt.localGateway()})
	i := slices.IndexFunc(d.WG.Peers, func(p wg.Peer) bool { return p.PublicKey == keyD })
	if want := netip.AddrPortFrom(second.Addr(), 51821); i < 0 || d.WG.Peers[i].Endpoint != want {
		t.Errorf("desired peers %+v, want par2 at %v", d.WG.Peers, want)
	}
}
