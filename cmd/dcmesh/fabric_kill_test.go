package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netns"
)

// testLinksVanish is what kill -9 of an embedded-backend agent does to its
// gateway, with each exporting daemon: the process holding the WireGuard TUN
// devices dies, the links go with it, and the kernel drops the tunnel route
// over them without a route notification. The route is dcmesh's own
// (netconfig: a resilient group over two TUN links, with the ids and the
// fence an agent uses); the daemon must notice and export the prefix
// degraded, and the fabric move to the other gateway.
//
// FRR's zebra notices when it sees the links go, and only for a group id
// below its ZEBRA_NHG_PROTO_LOWER (netconfig's fenceID): above it (dcmesh's
// ids until 2026-12) it kept the route selected and the fabric never moved.
// BIRD notices at a kernel scan: it scans when a link goes down, but the
// kernel drops a route over a resilient group after that, so often only at
// a periodic scan (examples/bird: scan time 1, since 2026-12 when it was 10
// and one run in six took 11 s); it took up to 2.1 s over 8 runs.
func (l *fabricLab) testLinksVanish(t *testing.T) {
	requireTool(t, "wireguard-go")
	// Targets: FRR 1 s; BIRD its scan time plus one (2 s). The bounds hold on
	// a loaded 2-core machine.
	bounds := map[string]time.Duration{"FRR": 1500 * time.Millisecond, "BIRD": 3 * time.Second}
	for i, g := range l.gws {
		o := l.other(g)
		l.restoreHealthy(t)
		tuns := [2]string{fmt.Sprintf("dcm%sk%d0", l.id, i), fmt.Sprintf("dcm%sk%d1", l.id, i)}
		var procs []*netconfigtest.Proc
		for _, tun := range tuns {
			procs = append(procs, g.ns.StartEnv(t, g.name+" "+tun, []string{"WG_PROCESS_FOREGROUND=1"}, "wireguard-go", "-f", tun))
		}
		netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, g.name+" gateway's TUN links", func() error {
			for _, tun := range tuns {
				if _, err := g.ns.Try("ip", "link", "show", tun); err != nil {
					return err
				}
			}
			return nil
		})
		nc := netconfig.New(openNetconfig(t, g.ns), discardLogger()) // with nexthop objects, as an agent's
		if _, err := nc.Apply(g.groupConfig(tuns)); err != nil {
			t.Fatalf("%s gateway: netconfig apply with a group over %v: %v", g.name, tuns, err)
		}
		l.waitExporterSees(t, g, tuns[0])
		t0 := time.Now()
		for _, p := range procs {
			p.Kill()
		}
		r, err := l.watchA.waitSince(t0, 20*time.Second, func(r kernelRoute) bool { return r.isVia(o.addr) })
		if err != nil {
			t.Fatalf("%s gateway's TUN links gone with their process: %v\nits routes:\n%s\nits nexthops:\n%s", g.name, err,
				g.ns.Run(t, "ip", "route", "show", fabricRemoteA), g.ns.Run(t, "ip", "nexthop"))
		}
		moved := r.at.Sub(t0)
		t.Logf("%s gateway's TUN links gone with their process (kill -9): fabric on the %s gateway after %d ms", g.name, o.name, moved.Milliseconds())
		if moved > bounds[g.name] {
			t.Errorf("%s gateway's links gone: the fabric moved after %s, want ≤ %s", g.name, moved, bounds[g.name])
		}
		back := g.groupConfig(tuns)
		back.ExtraLinks, back.Groups, back.Routes = nil, nil, back.FailClosed
		if _, err := nc.Apply(back); err != nil {
			t.Fatalf("%s gateway: netconfig apply after the links went: %v", g.name, err)
		}
		g.setHealthy(t, fabricRemoteA, true)
		if left := g.ns.Run(t, "ip", "nexthop", "show", "protocol", "220"); strings.TrimSpace(left) != "" {
			t.Errorf("%s gateway: nexthop objects left after the group went (the fence goes with the last): %s", g.name, left)
		}
	}
}

// openNetconfig opens a netconfig.Handle in ns (nexthop objects and
// sysctls, which the lab's netlink.Handle has not).
func openNetconfig(t *testing.T, ns *netconfigtest.NS) *netconfig.Handle {
	t.Helper()
	nsh, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netconfig.OpenHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// groupConfig is setHealthy's config with fabricRemoteA over a group of
// the two links tuns (as an agent routes a remote site of two gateways).
func (g *fabricGateway) groupConfig(tuns [2]string) netconfig.Config {
	cfg := netconfig.Config{Link: g.links[0], ExtraLinks: tuns[:], Addresses: []netip.Prefix{g.overlay}, Metric: fabricMetric,
		FailClosed: []netip.Prefix{netip.MustParsePrefix(fabricRemoteA), netip.MustParsePrefix(fabricRemoteB)},
		Routes:     []netip.Prefix{netip.MustParsePrefix(fabricRemoteB)},
		Groups: []netconfig.Group{{Name: "remote-a", Routes: []netip.Prefix{netip.MustParsePrefix(fabricRemoteA)},
			Members: []netconfig.Member{{Link: tuns[0], Weight: 1}, {Link: tuns[1], Weight: 1}}}}}
	return cfg
}

// waitExporterSees waits until g's routing daemon has read the group route
// (a nexthop through tun) and the fabric still uses both gateways.
func (l *fabricLab) waitExporterSees(t *testing.T, g *fabricGateway, tun string) {
	t.Helper()
	netconfigtest.Eventually(t, 20*time.Second, 50*time.Millisecond, g.name+" reads the group route", func() error {
		var out string
		var err error
		if g.frr != nil {
			out, err = g.frr.vtyshTry("show ip route " + fabricRemoteA)
		} else {
			out = g.bird.birdc(t, "show", "route", "for", fabricRemoteA, "all")
		}
		if err != nil || !strings.Contains(out, tun) {
			return fmt.Errorf("no nexthop through %s: %v\n%s", tun, err, out)
		}
		return nil
	})
	l.requireHealthy(t, 30*time.Second)
}
