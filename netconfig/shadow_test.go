package netconfig_test

import (
	"net"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestShadowing(t *testing.T) {
	f := newGatewayFake()
	eth, _ := f.LinkByName("eth0")
	dcm0, _ := f.LinkByName("dcm0")
	dcm1, _ := f.LinkByName("dcm1")
	cfg := netconfig.Config{Link: "dcm0", ExtraLinks: []string{"dcm1"}, Table: 1234, Metric: 100,
		Routes: pfx("10.2.0.0/24"), FailClosed: pfx("10.2.0.0/24", "10.4.0.0/16", "10.5.0.0/16"),
		Groups: []netconfig.Group{{Name: "ams1", Routes: pfx("10.5.0.0/16"), Members: []netconfig.Member{member("dcm0", 1), member("dcm1", 1)}}}}
	m := netconfig.New(f, nil)
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	route := func(dst string, table, metric int, proto netlink.RouteProtocol, typ int, link netlink.Link) netlink.Route {
		r := netlink.Route{Dst: mustNet(dst), Table: table, Priority: metric, Protocol: proto, Type: typ}
		if link != nil {
			r.LinkIndex = link.Attrs().Index
		}
		return r
	}
	gw := net.ParseIP("192.0.2.9")
	for _, r := range []netlink.Route{
		// shadows
		{Dst: mustNet("10.2.0.128/25"), Table: 1234, Priority: 20, Protocol: unix.RTPROT_BGP, Type: unix.RTN_UNICAST, LinkIndex: eth.Attrs().Index, Gw: gw},
		route("10.2.0.0/24", 1234, 101, unix.RTPROT_STATIC, unix.RTN_UNICAST, eth), // ties with our unreachable
		route("10.5.1.0/24", unix.RT_TABLE_LOCAL, 0, unix.RTPROT_STATIC, unix.RTN_UNICAST, eth),
		route("10.4.0.0/17", 1234, 500, unix.RTPROT_ZEBRA, unix.RTN_BLACKHOLE, nil),
		{Dst: mustNet("10.5.3.0/24"), Table: 1234, Protocol: unix.RTPROT_BIRD, Type: unix.RTN_UNICAST,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: dcm0.Attrs().Index}, {LinkIndex: eth.Attrs().Index, Gw: gw}}},
		// not shadows
		route("10.2.0.0/24", 1234, 102, unix.RTPROT_STATIC, unix.RTN_UNICAST, eth), // never wins
		route("10.0.0.0/8", 1234, 0, unix.RTPROT_BGP, unix.RTN_UNICAST, eth),       // less specific
		route("10.2.0.0/25", unix.RT_TABLE_MAIN, 0, unix.RTPROT_BGP, unix.RTN_UNICAST, eth),
		route("10.2.0.5/32", unix.RT_TABLE_LOCAL, 0, unix.RTPROT_KERNEL, unix.RTN_LOCAL, dcm0),
		route("10.5.2.0/24", 1234, 0, unix.RTPROT_STATIC, unix.RTN_UNICAST, dcm1), // into our tunnel
		route("10.5.4.0/24", 1234, 0, unix.RTPROT_STATIC, unix.RTN_THROW, nil),
	} {
		f.AddForeignRoute(r)
	}
	f.AddRule(netlink.Rule{Family: netlink.FAMILY_V4, Priority: 100, Table: 1234})
	want := []string{
		"10.2.0.0/24 dev eth0 proto static metric 101 table 1234 shadows 10.2.0.0/24",
		"10.2.0.128/25 via 192.0.2.9 dev eth0 proto bgp metric 20 table 1234 shadows 10.2.0.0/24",
		"blackhole 10.4.0.0/17 proto zebra metric 500 table 1234 shadows 10.4.0.0/16",
		"10.5.1.0/24 dev eth0 proto static metric 0 table 255 shadows 10.5.0.0/16",
		"10.5.3.0/24 dev dcm0 via 192.0.2.9 dev eth0 proto bird metric 0 table 1234 shadows 10.5.0.0/16",
	}
	check := func(what string, want []string) {
		t.Helper()
		got, err := m.Shadowing(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, s := range got {
			lines = append(lines, s.String())
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: Shadowing\n%s\nwant\n%s", what, strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
	}
	check("rule for table 1234 before main", want)

	// Without a rule naming our table, main counts as consulted first: the
	// fabric's /25 there shadows too.
	f2 := newGatewayFake()
	m = netconfig.New(f2, nil)
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	f2.AddForeignRoute(route("10.2.0.0/25", unix.RT_TABLE_MAIN, 0, unix.RTPROT_BGP, unix.RTN_UNICAST, eth))
	check("no rule", []string{"10.2.0.0/25 dev eth0 proto bgp metric 0 table 254 shadows 10.2.0.0/24"})
}
