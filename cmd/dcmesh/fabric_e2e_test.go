package main

// The site's fabric learns the mesh (issue 12, item 5). The kernel route
// table is the contract: for every remote prefix dcmesh keeps a tunnel route
// (proto 220, metric M) while a tunnel to the owning site is healthy and an
// unreachable route (metric M+1) always. The gateway's FRR or BIRD, running
// the configuration in examples/ unchanged, turns that into BGP towards the
// site's fabric router (FRR, examples/frr/fabric.conf). These tests run the
// real daemons in namespaces and look at what the fabric does with it.

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// The shipped files parse (vtysh and bird check them without running
// anything) and agree with each other and with dcmesh's defaults.
func TestFabricExamplesParse(t *testing.T) {
	requireFabricTool(t, "vtysh", onPath("vtysh"))
	requireFabricTool(t, "bird", onPath("bird"))
	for _, f := range []string{"frr/frr.conf", "frr/fabric.conf", "frr/withdraw.conf"} {
		if out, err := exec.Command("vtysh", "-C", "-f", filepath.Join(fabricExamples, f)).CombinedOutput(); err != nil {
			t.Errorf("vtysh -C -f examples/%s: %v\n%s", f, err, out)
		}
	}
	birdConf := filepath.Join(fabricExamples, "bird", "bird.conf")
	withdraw := variant(t, birdConf, filepath.Join(t.TempDir(), "bird-withdraw.conf"),
		"define DCMESH_WITHDRAW_DEGRADED = false;", "define DCMESH_WITHDRAW_DEGRADED = true;")
	for _, f := range []string{birdConf, withdraw} {
		if out, err := exec.Command("bird", "-p", "-c", f).CombinedOutput(); err != nil {
			t.Errorf("bird -p -c %s: %v\n%s", f, err, out)
		}
	}

	frr, fabric, bird := readExample(t, "frr/frr.conf"), readExample(t, "frr/fabric.conf"), readExample(t, "bird/bird.conf")
	prefixList := regexp.MustCompile(`(?m)^ip prefix-list DCMESH-REMOTE seq \d+ permit (\S+) le 32$`)
	list := func(conf string) []string {
		var ps []string
		for _, m := range prefixList.FindAllStringSubmatch(conf, -1) {
			ps = append(ps, m[1])
		}
		return ps
	}
	birdSet := regexp.MustCompile(`(?m)^define DCMESH_REMOTE = \[ (.*) \];`).FindStringSubmatch(bird)
	if birdSet == nil {
		t.Fatal("bird.conf has no DCMESH_REMOTE")
	}
	var birdPrefixes []string
	for _, p := range strings.Split(birdSet[1], ",") {
		birdPrefixes = append(birdPrefixes, strings.TrimSuffix(strings.TrimSpace(p), "+"))
	}
	if got := list(frr); len(got) == 0 || !slices.Equal(got, list(fabric)) || !slices.Equal(got, birdPrefixes) {
		t.Errorf("remote prefixes differ: frr.conf %v, fabric.conf %v, bird.conf %v", got, list(fabric), birdPrefixes)
	}
	for _, want := range []string{
		fmt.Sprintf(" match metric %d\n", config.DefaultRouteMetric-1), // drained
		fmt.Sprintf(" match metric %d\n", config.DefaultRouteMetric),
		fmt.Sprintf(" match metric %d\n", config.DefaultRouteMetric+1),
	} {
		if !strings.Contains(frr, want) {
			t.Errorf("frr.conf lacks %q: routes.metric is %d by default", want, config.DefaultRouteMetric)
		}
	}
	for _, want := range []string{
		fmt.Sprintf("if krt_source != %d then reject;", netconfig.RouteProtocol),
		fmt.Sprintf("define DCMESH_METRIC = %d;", config.DefaultRouteMetric),
	} {
		if !strings.Contains(bird, want) {
			t.Errorf("bird.conf lacks %q", want)
		}
	}
}

// One topology, the scenarios in order; each subtest starts from every
// prefix healthy on both gateways.
func TestFabricExport(t *testing.T) {
	l := newFabricLab(t)
	t.Run("HealthyIsECMPWithEqualAttributes", l.testHealthy)
	t.Run("DegradedIsKeptPrependedAndLoses", l.testDegraded)
	t.Run("DrainedIsKeptPrependedAndLoses", l.testDrained)
	t.Run("TrafficFollowsTheHealthyGateway", l.testTraffic)
	t.Run("NexthopGroupRoutes", l.testNexthopGroups)
	t.Run("WithdrawVariant", l.testWithdraw)
	t.Run("ImportFilterStopsShadowing", l.testImportFilter)
	t.Run("TunnelStateToFabricLatency", l.testLatency)
	t.Run("LinksVanishWithTheAgent", l.testLinksVanish)
	t.Run("SilentGatewayBFD", l.testBFD)
}

// checkHealthyPath: the attributes every gateway must send for a healthy
// prefix, so that the fabric's ECMP holds.
func checkHealthyPath(t testing.TB, g *fabricGateway, p bgpPath, ok bool) {
	t.Helper()
	if !ok {
		t.Errorf("the fabric has no path from the %s gateway", g.name)
		return
	}
	switch {
	case p.Origin != "IGP", p.MED == nil || *p.MED != 0, p.ASPath.String != "65010",
		p.Community != nil, p.LocPrf != nil && *p.LocPrf != 100,
		len(p.Nexthops) != 1 || p.Nexthops[0].IP != g.addr:
		t.Errorf("%s gateway's healthy path: %s; want as-path 65010, origin IGP, MED 0, no community, next hop %s (self)", g.name, p, g.addr)
	}
}

func (l *fabricLab) testHealthy(t *testing.T) {
	l.restoreHealthy(t)
	for _, prefix := range []string{fabricRemoteA, fabricRemoteB} {
		paths := l.fabFRR.bgpPaths(t, prefix)
		best, multi := 0, 0
		for _, g := range l.gws {
			p, ok := paths[g.addr]
			checkHealthyPath(t, g, p, ok)
			if p.best() {
				best++
			} else if p.Multipath {
				multi++
			}
		}
		if len(paths) != 2 || best != 1 || multi != 1 {
			t.Errorf("%s: want two paths, one best and one multipath, got %v", prefix, paths)
		}
	}
	// The witness of ECMP in the forwarding plane, read by iproute2.
	out := l.fab.Run(t, "ip", "-j", "route", "show", fabricRemoteA)
	var routes []struct {
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil || len(routes) != 1 || len(routes[0].Nexthops) != 2 {
		t.Errorf("fabric's kernel route for %s is not a two-way multipath route: %v\n%s", fabricRemoteA, err, out)
	}
	peers := l.bfdPeers(t)
	for _, g := range l.gws {
		p := peers[g.addr]
		if p.Status != "up" || p.RxMS != 300 || p.TxMS != 300 || p.Mult != 3 || p.RemoteRxMS != 300 || p.RemoteTxMS != 300 || p.RemoteMult != 3 {
			t.Errorf("BFD with the %s gateway: %+v; want up, 300 ms x 3 on both ends", g.name, p)
		}
	}
	l.checkOnlyDcmeshExported(t)
}

// checkOnlyDcmeshExported: kernel routes inside a remote prefix that dcmesh
// did not make stay out of BGP: another metric on both gateways, and on BIRD
// even dcmesh's own metric (it matches protocol 220 itself; FRR cannot see
// the protocol number, see examples/fabric.md).
func (l *fabricLab) checkOnlyDcmeshExported(t *testing.T) {
	foreign := map[*fabricGateway][]string{
		l.gws[0]: {"10.2.77.0/24 metric 50"},
		l.gws[1]: {"10.2.77.0/24 metric 50", "10.2.78.0/24 metric 100"},
	}
	for g, routes := range foreign {
		for _, r := range routes {
			f := strings.Fields(r)
			g.ns.Run(t, "ip", "route", "add", f[0], "dev", g.links[0], "metric", f[2]) // proto boot, as an operator's
		}
	}
	// Witness that each exporter has read those kernel events: a later
	// change of dcmesh's reaches the fabric.
	for _, g := range l.gws {
		t0 := g.setHealthy(t, fabricRemoteB, false)
		if _, err := l.watchB.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.isVia(l.other(g).addr) }); err != nil {
			t.Fatalf("witness change from the %s gateway: %v", g.name, err)
		}
		l.restoreHealthy(t)
	}
	for _, p := range []string{"10.2.77.0/24", "10.2.78.0/24"} {
		if paths := l.fabFRR.bgpPaths(t, p); len(paths) != 0 {
			t.Errorf("the fabric learned %s, a route dcmesh did not make: %v", p, paths)
		}
	}
	for g, routes := range foreign {
		for _, r := range routes {
			f := strings.Fields(r)
			g.ns.Run(t, "ip", "route", "del", f[0], "dev", g.links[0], "metric", f[2])
		}
	}
}

func (l *fabricLab) testDegraded(t *testing.T) {
	l.restoreHealthy(t)
	for _, g := range l.gws {
		o := l.other(g)
		g.setHealthy(t, fabricRemoteA, false)
		l.watchA.wait(t, 10*time.Second, g.name+" degraded: fabric on "+o.name, func(r kernelRoute) bool { return r.isVia(o.addr) })
		paths := l.fabFRR.bgpPaths(t, fabricRemoteA)
		d, h := paths[g.addr], paths[o.addr]
		if d.ASPath.String != "65010 65010 65010 65010" || d.Community == nil || d.Community.String != "graceful-shutdown" ||
			d.Origin != "IGP" || d.LocPrf == nil || *d.LocPrf != 0 || d.best() || d.Multipath {
			t.Errorf("%s gateway degraded: %s; want it kept with as-path 65010 x4, GRACEFUL_SHUTDOWN, local-pref 0 at the fabric, not selected", g.name, d)
		}
		if !h.best() {
			t.Errorf("%s gateway (healthy) is not the best path: %s", o.name, h)
		}
		g.setHealthy(t, fabricRemoteA, true)
		l.requireHealthy(t, 10*time.Second)
	}

	// Every gateway degraded: kept, not withdrawn. The fabric still routes
	// to the gateways, which refuse the traffic, rather than to its discard
	// route or, without one, its default route.
	l.gws[0].setHealthy(t, fabricRemoteA, false)
	l.watchA.wait(t, 10*time.Second, "FRR degraded", func(r kernelRoute) bool { return r.isVia(fabricGW2Addr) })
	t0 := l.gws[1].setHealthy(t, fabricRemoteA, false)
	if r, err := l.watchA.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.isVia(fabricGW1Addr, fabricGW2Addr) }); err != nil {
		t.Errorf("both gateways degraded: want the fabric to keep both (prepended, equal): %v", err)
	} else {
		for _, p := range l.fabFRR.bgpPaths(t, fabricRemoteA) {
			if p.Community == nil || p.Community.String != "graceful-shutdown" {
				t.Errorf("both degraded, at %s: %s", r, p)
			}
		}
	}
	l.restoreHealthy(t)
}

func (l *fabricLab) testTraffic(t *testing.T) {
	l.restoreHealthy(t)
	flows := l.flowsByGateway(t)
	for _, g := range l.gws {
		dst, ok := flows[g.name]
		if !ok {
			t.Logf("none of the flows tried was hashed onto the %s gateway; its part is skipped", g.name)
			continue
		}
		o := l.other(g)
		g.setHealthy(t, fabricRemoteA, false)
		l.watchA.wait(t, 10*time.Second, g.name+" degraded", func(r kernelRoute) bool { return r.isVia(o.addr) })
		if through := l.pingRemote(t, dst, 10); through[o.name] != 10 || through[g.name] != 0 {
			t.Errorf("flow to %s was on the %s gateway; degraded, echo requests through the gateways: %v; want all 10 through %s", dst, g.name, through, o.name)
		}
		l.restoreHealthy(t)
		l.measureDegradeLoss(t, g, dst)
	}
}

// flowsByGateway finds, for each gateway, a destination behind the tunnels
// whose flow from the host the fabric hashes onto that gateway (one source,
// one destination: one path).
func (l *fabricLab) flowsByGateway(t *testing.T) map[string]string {
	flows := map[string]string{}
	for i := 1; i <= fabricRemoteHosts && len(flows) < len(l.gws); i++ {
		dst := fmt.Sprintf("10.2.0.%d", i)
		for name, n := range l.pingRemote(t, dst, 3) {
			if n == 3 && flows[name] == "" {
				flows[name] = dst
			} else if n != 0 && n != 3 {
				t.Fatalf("flow to %s split over the gateways: %d of 3 through %s", dst, n, name)
			}
		}
	}
	return flows
}

// measureDegradeLoss reports what degrading costs a flow that the fabric
// still sends to the gateway: from the tunnel route's removal until the
// fabric has moved, the gateway refuses it (fail-closed). A drain that must
// lose nothing has to tell the fabric before the tunnel route goes. The
// outage is the longest gap between two echo replies (ping's own loss count
// understates it: ping slows down while replies are missing).
func (l *fabricLab) measureDegradeLoss(t *testing.T, carrier *fabricGateway, dst string) {
	ping := l.host.Start(t, "ping", "ping", "-D", "-n", "-i", "0.005", "-c", "400", "-W", "1", dst)
	ping.WaitOutput(t, "icmp_seq=20 ", 10*time.Second)
	carrier.setHealthy(t, fabricRemoteA, false)
	l.watchA.wait(t, 10*time.Second, carrier.name+" degraded", func(r kernelRoute) bool { return r.isVia(l.other(carrier).addr) })
	netconfigtest.Eventually(t, 30*time.Second, 20*time.Millisecond, "ping done", func() error {
		if !ping.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	var last, gap float64
	replies := 0
	for _, m := range regexp.MustCompile(`\[(\d+\.\d+)\] \d+ bytes from`).FindAllStringSubmatch(ping.Output(), -1) {
		ts, _ := strconv.ParseFloat(m[1], 64)
		if replies > 0 {
			gap = max(gap, ts-last)
		}
		last = ts
		replies++
	}
	if replies < 100 {
		t.Fatalf("%d echo replies:\n%s", replies, ping.Output())
	}
	t.Logf("degrading the %s gateway (tunnel route removed): a flow to %s through it saw no reply for %d ms (%d of 400 replies)",
		carrier.name, dst, int(gap*1000), replies)
	l.restoreHealthy(t)
}

// nexthopGroup returns the member IDs of group id in ns.
func nexthopGroup(t testing.TB, ns *netconfigtest.NS, id int) []int {
	t.Helper()
	out := ns.Run(t, "ip", "-j", "nexthop", "show", "id", strconv.Itoa(id))
	var v []struct {
		Group []struct {
			ID int `json:"id"`
		} `json:"group"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("ip -j nexthop show id %d: %v\n%s", id, err, out)
	}
	var ids []int
	for _, m := range v[0].Group {
		ids = append(ids, m.ID)
	}
	return ids
}

// dcmeshNexthopBase is where the test puts dcmesh's nexthop IDs: in the
// main table's block of dcmesh's (tag 255, below 1<<24; see netconfig's
// fenceID for why below zebra's ZEBRA_NHG_PROTO_LOWER).
const dcmeshNexthopBase = 255<<12 | 0xDC0

// testNexthopGroups: with several remote gateways the tunnel route points
// at a nexthop group (nhid) over the slot devices. Both daemons must treat
// it like the dev route; and FRR, with the shipped config, must leave
// dcmesh's group as dcmesh sets it.
func (l *fabricLab) testNexthopGroups(t *testing.T) {
	l.restoreHealthy(t)
	for i, g := range l.gws {
		o := l.other(g)
		a, b, grp := dcmeshNexthopBase+16*i+1, dcmeshNexthopBase+16*i+2, dcmeshNexthopBase+16*i+10
		g.ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(a), "dev", g.links[0], "proto", "220")
		g.ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(b), "dev", g.links[1], "proto", "220")
		g.ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(grp), "group", fmt.Sprintf("%d/%d", a, b), "proto", "220")
		g.setHealthy(t, fabricRemoteA, false)
		l.watchA.wait(t, 10*time.Second, g.name+" degraded", func(r kernelRoute) bool { return r.isVia(o.addr) })
		g.ns.Run(t, "ip", "route", "add", fabricRemoteA, "nhid", strconv.Itoa(grp), "proto", "220", "metric", strconv.Itoa(fabricMetric))
		g.healthy[fabricRemoteA] = true
		l.watchA.wait(t, 10*time.Second, g.name+" healthy through nhid", func(r kernelRoute) bool { return r.isVia(g.addr, o.addr) })
		paths := l.fabFRR.bgpPaths(t, fabricRemoteA)
		p, ok := paths[g.addr]
		checkHealthyPath(t, g, p, ok)

		// A remote gateway fails: dcmesh shrinks the group in place.
		g.ns.Run(t, "ip", "nexthop", "replace", "id", strconv.Itoa(grp), "group", strconv.Itoa(b), "proto", "220")
		if g.frr != nil {
			// zebra has looked at the change (it logs that it would put
			// its own version back); it must not have.
			g.frr.procs["zebra"].WaitOutput(t, fmt.Sprintf("Kernel updated a nexthop group with ID (%d", grp), 10*time.Second)
		}
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if got := nexthopGroup(t, g.ns, grp); !slices.Equal(got, []int{b}) {
				t.Fatalf("%s gateway: dcmesh set group %d to [%d], now %v: the routing daemon rewrote it", g.name, grp, b, got)
			}
		}
		if r, _ := readKernelRoute(g.nl, fabricRemoteA); r.kind != "unicast" {
			t.Errorf("%s gateway: tunnel route after the shrink: %s", g.name, r)
		}
		g.setHealthy(t, fabricRemoteA, true) // netconfig puts its dev route back over the nhid one
		for _, id := range []int{grp, a, b} {
			g.ns.Run(t, "ip", "nexthop", "del", "id", strconv.Itoa(id))
		}
		l.requireHealthy(t, 10*time.Second)
	}
}

func (l *fabricLab) testWithdraw(t *testing.T) {
	l.restoreHealthy(t)
	frr, bird := l.gws[0].frr, l.gws[1].bird
	if out, err := exec.Command("vtysh", "-N", frr.name, "-f", filepath.Join(fabricExamples, "frr", "withdraw.conf")).CombinedOutput(); err != nil {
		t.Fatalf("vtysh -f withdraw.conf: %v\n%s", err, out)
	}
	shipped, _ := filepath.Abs(filepath.Join(fabricExamples, "bird", "bird.conf"))
	bird.configure(t, variant(t, shipped, filepath.Join(l.dir, "bird-withdraw.conf"),
		"define DCMESH_WITHDRAW_DEGRADED = false;", "define DCMESH_WITHDRAW_DEGRADED = true;"))
	t.Cleanup(func() {
		frr.vtysh(t, "configure terminal", "no route-map DCMESH-OUT deny 15")
		bird.configure(t, shipped)
		l.restoreHealthy(t)
	})
	for _, g := range l.gws {
		o := l.other(g)
		g.setHealthy(t, fabricRemoteA, false)
		l.watchA.wait(t, 10*time.Second, g.name+" withdrawn", func(r kernelRoute) bool { return r.isVia(o.addr) })
		netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, g.name+" path gone", func() error {
			if p, ok := l.fabFRR.bgpPaths(t, fabricRemoteA)[g.addr]; ok {
				return fmt.Errorf("the fabric still has %s", p)
			}
			return nil
		})
		g.setHealthy(t, fabricRemoteA, true)
		l.requireHealthy(t, 10*time.Second)
		l.drainAndBack(t, g) // a drained gateway still carries: never withdrawn
	}
	// Every gateway withdrawn: the fabric's floating discard route takes
	// the traffic, not its default route.
	l.gws[0].setHealthy(t, fabricRemoteA, false)
	l.gws[1].setHealthy(t, fabricRemoteA, false)
	l.watchA.wait(t, 10*time.Second, "both withdrawn", func(r kernelRoute) bool { return r.kind == "blackhole" })
}

// leakedRoutes lists the routes in g's main table for prefix that are not
// dcmesh's.
func leakedRoutes(t testing.TB, g *fabricGateway, prefix string) []string {
	t.Helper()
	_, dst, _ := net.ParseCIDR(prefix)
	rs, err := g.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Table: netconfig.MainTable},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Protocol != netconfig.RouteProtocol {
			out = append(out, fmt.Sprintf("%s proto %d metric %d", prefix, r.Protocol, r.Priority))
		}
	}
	return out
}

// testImportFilter: a fabric that leaks a more-specific (10.2.1.0/24 inside
// ams1's 10.2.0.0/16) and an exact remote prefix (par1's 10.3.0.0/16) to the
// gateways. The shipped import filters keep both out of the gateways'
// kernels; without them, they get in and take remote traffic out of the
// tunnel.
func (l *fabricLab) testImportFilter(t *testing.T) {
	l.restoreHealthy(t)
	const moreSpecific, marker = "10.2.1.0/24", "10.1.99.0/24"
	leaks := []string{moreSpecific, fabricRemoteB}
	l.fabFRR.vtysh(t, "configure terminal", "no route-map DCMESH-GATEWAYS-OUT deny 10",
		"router bgp 65000", "no bgp network import-check", "address-family ipv4 unicast",
		"network "+moreSpecific, "network "+fabricRemoteB)
	t.Cleanup(func() {
		l.fabFRR.vtysh(t, "configure terminal", "router bgp 65000", "address-family ipv4 unicast",
			"no network "+moreSpecific, "no network "+fabricRemoteB, "no network "+marker, "exit-address-family",
			"bgp network import-check", "exit",
			"route-map DCMESH-GATEWAYS-OUT deny 10", "match ip address prefix-list DCMESH-REMOTE")
		l.restoreHealthy(t)
	})
	// The leaks are on their way to both gateways before the marker is:
	// once a gateway has the marker, it has judged the leaks.
	for _, g := range l.gws {
		netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, "leaks advertised to "+g.name, func() error {
			var v struct {
				Advertised map[string]json.RawMessage `json:"advertisedRoutes"`
			}
			l.fabFRR.json(t, "show ip bgp neighbors "+g.addr+" advertised-routes json", &v)
			for _, p := range leaks {
				if _, ok := v.Advertised[p]; !ok {
					return fmt.Errorf("%s not advertised yet", p)
				}
			}
			return nil
		})
	}
	l.fabFRR.vtysh(t, "configure terminal", "router bgp 65000", "address-family ipv4 unicast", "network "+marker)
	waitLeaks(t, marker, true, l.gws[:]...)
	for _, g := range l.gws {
		for _, p := range leaks {
			if got := leakedRoutes(t, g, p); len(got) > 0 {
				t.Errorf("%s gateway installed what the fabric leaked: %v", g.name, got)
			}
		}
	}

	// Without the filters (positive control: the filter is what stops it).
	frr, bird := l.gws[0].frr, l.gws[1].bird
	shipped, _ := filepath.Abs(filepath.Join(fabricExamples, "bird", "bird.conf"))
	frr.vtysh(t, "configure terminal", "no route-map DCMESH-FABRIC-IN deny 10", "end", "clear ip bgp "+fabricFabAddr1+" soft in")
	bird.configure(t, variant(t, shipped, filepath.Join(l.dir, "bird-nofilter.conf"),
		"filter dcmesh_from_fabric {\n  if net ~ DCMESH_REMOTE then reject;\n", "filter dcmesh_from_fabric {\n"))
	t.Cleanup(func() { // before the fabric's cleanup (last in, first out)
		frr.vtysh(t, "configure terminal", "route-map DCMESH-FABRIC-IN deny 10", "match ip address prefix-list DCMESH-REMOTE",
			"end", "clear ip bgp "+fabricFabAddr1+" soft in")
		bird.configure(t, shipped)
	})
	waitLeaks(t, moreSpecific, true, l.gws[:]...)
	// BIRD prefers BGP (preference 100) to the kernel route (10): the exact
	// prefix replaces dcmesh's. (FRR's zebra prefers the kernel route.)
	waitLeaks(t, fabricRemoteB, true, l.gws[1])
	for _, c := range []struct {
		g   *fabricGateway
		dst string
	}{{l.gws[0], "10.2.1.1"}, {l.gws[1], "10.2.1.1"}, {l.gws[1], "10.3.0.1"}} {
		t.Logf("filter off, %s gateway: %s", c.g.name, strings.TrimSpace(c.g.ns.Run(t, "ip", "route", "get", c.dst)))
	}
	t.Logf("filter off, FRR gateway for %s (same prefix as dcmesh's): %v", fabricRemoteB, leakedRoutes(t, l.gws[0], fabricRemoteB))

	// Filters back: the leaks leave the kernels.
	frr.vtysh(t, "configure terminal", "route-map DCMESH-FABRIC-IN deny 10", "match ip address prefix-list DCMESH-REMOTE",
		"end", "clear ip bgp "+fabricFabAddr1+" soft in")
	bird.configure(t, shipped)
	for _, p := range leaks {
		waitLeaks(t, p, false, l.gws[:]...)
	}
}

// waitLeaks waits until prefix is (want) or is not a route of another
// protocol in the kernel of each of gws.
func waitLeaks(t testing.TB, prefix string, want bool, gws ...*fabricGateway) {
	t.Helper()
	for _, g := range gws {
		netconfigtest.Eventually(t, 15*time.Second, 20*time.Millisecond, fmt.Sprintf("%s leaked into the %s gateway: %v", prefix, g.name, want), func() error {
			if got := leakedRoutes(t, g, prefix); (len(got) > 0) != want {
				return fmt.Errorf("routes not dcmesh's: %v", got)
			}
			return nil
		})
	}
}

// testLatency: time from dcmesh changing a gateway's kernel route to the
// fabric's kernel route changing, both ways (tunnel down, tunnel back).
func (l *fabricLab) testLatency(t *testing.T) {
	cycles := sitetest.EnvInt("DCMESH_FABRIC_CYCLES", 5)
	for _, g := range l.gws {
		l.restoreHealthy(t)
		o := l.other(g)
		var down, up []time.Duration
		for i := 0; i < cycles; i++ {
			t0 := g.setHealthy(t, fabricRemoteA, false)
			r, err := l.watchA.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.isVia(o.addr) })
			if err != nil {
				t.Fatalf("%s tunnel down: %v", g.name, err)
			}
			down = append(down, r.at.Sub(t0))
			t0 = g.setHealthy(t, fabricRemoteA, true)
			r, err = l.watchA.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.isVia(g.addr, o.addr) })
			if err != nil {
				t.Fatalf("%s tunnel up: %v", g.name, err)
			}
			up = append(up, r.at.Sub(t0))
		}
		lo, med, hi := durationStats(append(slices.Clone(down), up...))
		t.Logf("tunnel state → fabric route, %s gateway, %d changes: median %d ms, min %d, max %d (tunnel down: %s ms; back: %s ms)",
			g.name, 2*cycles, med.Milliseconds(), lo.Milliseconds(), hi.Milliseconds(), msList(down), msList(up))
		// Target: median ≤ 150 ms with FRR; the bound asserted is one a
		// loaded 2-core machine cannot miss unless something is wrong.
		if med > time.Second {
			t.Errorf("%s gateway: median %s from the kernel route to the fabric's, want ≤ 1 s (target 150 ms)", g.name, med)
		}
	}
}

// testBFD: a gateway dies silently (nothing in or out, no FIN, no BGP
// notification). Only BFD (300 ms x 3) tells the fabric.
func (l *fabricLab) testBFD(t *testing.T) {
	trials := sitetest.EnvInt("DCMESH_FABRIC_BFD_TRIALS", 2)
	for _, g := range l.gws {
		o := l.other(g)
		var failover, recovery []time.Duration
		for i := 0; i < trials; i++ {
			l.restoreHealthy(t)
			l.waitBFDUp(t)
			t0 := g.silence(t, true)
			r, err := l.watchA.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.isVia(o.addr) })
			if err != nil {
				g.silence(t, false)
				t.Fatalf("%s gateway silent: %v", g.name, err)
			}
			failover = append(failover, r.at.Sub(t0))
			t1 := g.silence(t, false)
			if r, err = l.watchA.waitSince(t1, 60*time.Second, func(r kernelRoute) bool { return r.isVia(g.addr, o.addr) }); err != nil {
				t.Fatalf("%s gateway back: %v", g.name, err)
			}
			recovery = append(recovery, r.at.Sub(t1))
		}
		_, med, hi := durationStats(failover)
		t.Logf("silent %s gateway → fabric on the %s gateway: %s ms (median %d, max %d; target ≤ 1000); back in %s ms",
			g.name, o.name, msList(failover), med.Milliseconds(), hi.Milliseconds(), msList(recovery))
		if hi > 1500*time.Millisecond {
			t.Errorf("silent %s gateway: the fabric moved after %s, want ≤ 1 s (+0.5 s margin for a loaded machine)", g.name, hi)
		}
	}

	// Every gateway dead: the floating discard route, not the default route.
	l.restoreHealthy(t)
	l.waitBFDUp(t)
	t0 := l.gws[0].silence(t, true)
	l.gws[1].silence(t, true)
	if _, err := l.watchA.waitSince(t0, 10*time.Second, func(r kernelRoute) bool { return r.kind == "blackhole" }); err != nil {
		t.Errorf("every gateway silent: want the fabric's floating discard route: %v", err)
	}
	for _, g := range l.gws {
		g.silence(t, false)
	}
	l.requireHealthy(t, 60*time.Second)
}

// FRR 8.4's zebra rewrites a nexthop group another program changes when a
// route it knows uses it; the line in examples/frr/frr.conf stops that.
// Without it, dcmesh shrinking a group (a remote gateway failed) is undone.
func TestFabricZebraLeavesNexthopGroupsAlone(t *testing.T) {
	daemonDir := requireFabric(t)
	const knob = "no zebra nexthop kernel enable"
	if !strings.Contains(readExample(t, "frr/frr.conf"), "\n"+knob+"\n") {
		t.Fatalf("examples/frr/frr.conf lacks %q", knob)
	}
	id := netconfigtest.UniqueSuffix()
	ns := netconfigtest.NewNS(t, "dcmt-"+id+"-nhg")
	disableIPv6(t, ns)
	links := []string{"dcm" + id + "1", "dcm" + id + "2"}
	for _, l := range links {
		netconfigtest.Veth(t, ns, l, ns, l+"p")
	}
	zebra := startFRR(t, daemonDir, ns, "hostname "+ns.Name+"\n", "zebra")
	a, b, grp := dcmeshNexthopBase+1, dcmeshNexthopBase+2, dcmeshNexthopBase+10
	ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(a), "dev", links[0], "proto", "220")
	ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(b), "dev", links[1], "proto", "220")
	ns.Run(t, "ip", "nexthop", "add", "id", strconv.Itoa(grp), "group", fmt.Sprintf("%d/%d", a, b), "proto", "220")
	ns.Run(t, "ip", "route", "add", fabricRemoteA, "nhid", strconv.Itoa(grp), "proto", "220", "metric", "100")
	ns.Run(t, "ip", "route", "add", "unreachable", fabricRemoteA, "proto", "220", "metric", "101")
	netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, "zebra reads the nhid route", func() error {
		if out, err := zebra.vtyshTry("show ip route " + fabricRemoteA); err != nil || !strings.Contains(out, "metric 100, best") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	shrink := func() int {
		before := strings.Count(zebra.procs["zebra"].Output(), "Kernel updated a nexthop group")
		ns.Run(t, "ip", "nexthop", "replace", "id", strconv.Itoa(grp), "group", strconv.Itoa(b), "proto", "220")
		return before
	}

	// FRR's default: the change is put back.
	start := time.Now()
	shrink()
	netconfigtest.Eventually(t, 10*time.Second, 5*time.Millisecond, "zebra rewrites the group (FRR default)", func() error {
		if got := nexthopGroup(t, ns, grp); len(got) != 2 {
			return fmt.Errorf("group %d is %v", grp, got)
		}
		return nil
	})
	t.Logf("FRR default: zebra put both members back into dcmesh's group %s after the change", time.Since(start).Round(time.Millisecond))

	// With the shipped line: zebra sees the change and leaves it.
	zebra.vtysh(t, "configure terminal", knob)
	before := shrink()
	netconfigtest.Eventually(t, 10*time.Second, 5*time.Millisecond, "zebra sees the change", func() error {
		if strings.Count(zebra.procs["zebra"].Output(), "Kernel updated a nexthop group") <= before {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := nexthopGroup(t, ns, grp); !slices.Equal(got, []int{b}) {
			t.Fatalf("with %q, dcmesh's group %d became %v (want [%d])", knob, grp, got, b)
		}
	}
}
