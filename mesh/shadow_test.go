package mesh

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// checkShadowing keeps the routes that take a remote prefix, hands each to
// the peer whose prefix it is, and leaves a remote default route alone
// (every more specific route wins over a default by design).
func TestShadowedRoutesPerPeer(t *testing.T) {
	f := netconfigtest.NewFake()
	f.AddLink("dcm0", 1420)
	eth := f.AddLink("eth0", 1500)
	cfg := netconfig.Config{Link: "dcm0", Table: netconfig.MainTable, Metric: 100,
		Routes:     []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("0.0.0.0/0")},
		FailClosed: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("0.0.0.0/0")}}
	rt := &siteRuntime{net: netconfig.New(f, nil)}
	if _, err := rt.net.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("10.2.0.0/25")
	_, other, _ := net.ParseCIDR("192.168.0.0/16")
	f.AddForeignRoute(netlink.Route{Dst: dst, Table: netconfig.MainTable, Priority: 20, Protocol: unix.RTPROT_BGP, Type: unix.RTN_UNICAST, LinkIndex: eth, Gw: net.ParseIP("192.0.2.9")})
	f.AddForeignRoute(netlink.Route{Dst: other, Table: netconfig.MainTable, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST, LinkIndex: eth})
	a := NewAgent(Options{})
	rt.shadow.net = cfg
	a.checkShadowing(rt)
	if len(rt.shadow.routes) != 1 || rt.shadow.routes[0].Dst.String() != "10.2.0.0/25" {
		t.Fatalf("shadowing routes %v, want the /25 alone", rt.shadow.routes)
	}
	ps := rt.withUplinksAndShadows(control.PeerStatus{Site: "ams1", Source: control.SourceGossip, Role: control.RoleCurrent, AllowedIPs: []string{"10.2.0.0/24", "10.255.0.2/32"}})
	if len(ps.Shadowed) != 1 {
		t.Fatalf("peer shadowed %+v", ps.Shadowed)
	}
	s := ps.Shadowed[0]
	if s.Prefix != "10.2.0.0/24" || s.Dst != "10.2.0.0/25" || s.Protocol != "bgp" || s.Table != netconfig.MainTable || len(s.Dev) != 1 || s.Dev[0] != "eth0" ||
		!strings.HasPrefix(s.Route, "10.2.0.0/25 via 192.0.2.9 dev eth0 proto bgp") || strings.Contains(s.Route, "shadows") {
		t.Errorf("shadowed route %+v", s)
	}
	if other := rt.withUplinksAndShadows(control.PeerStatus{Site: "par1", AllowedIPs: []string{"10.3.0.0/24"}}); len(other.Shadowed) != 0 {
		t.Errorf("a peer whose prefix is not shadowed lists %+v", other.Shadowed)
	}
}
