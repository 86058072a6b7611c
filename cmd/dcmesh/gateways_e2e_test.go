package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// gatewayFlows, gatewayFlowPort, gatewayFlowRate: the test's traffic, 12
// UDP flows at 100 packets/s each (a flow silent for 1 s loses 100).
const (
	gatewayFlows    = 12
	gatewayFlowPort = 7000
	gatewayFlowRate = 100
)

// TestGatewaysNexthopGroupFailover: site1 has one gateway, site2 two
// (site2's gateway 1 certified with `ca issue --gateway 1`), both holding
// site2's prefix. site1 holds site2.0 on its interface and site2.1 on its
// slot-1 interface (…g1, listening on port + 1; site2.1 holds site1 at
// site1's port + 1), and routes site2's prefix over a nexthop group of
// both. Twelve UDP flows from site1 spread over both gateways (both
// interfaces' counters grow). Cutting site2.0's WireGuard UDP silently (nft
// in its namespace: no link goes down) takes it out of the group once
// site1's probes notice (200 ms × 3); every flow then arrives through
// site2.1, and the longest silence of any flow is measured. Uncut, site2.0
// rejoins the group after the probes' hold (2 s).
func TestGatewaysNexthopGroupFailover(t *testing.T) {
	requireTool(t, "nft")
	start := time.Now()
	_, a, b0, b1 := newGatewayMesh(t)
	slot1, both := a.iface+"g1", []string{a.iface, a.iface + "g1"}
	t.Logf("mesh up with the group and the probes in %s", time.Since(start).Round(100*time.Millisecond))

	recv0, recv1 := startGatewayFlows(t, b0, "recv", b0.host()), startGatewayFlows(t, b1, "recv", b0.host())
	send := startGatewayFlows(t, a, "send", b0.host())
	flowsAt := nowSeconds()
	before := a.wgAll("transfer")
	waitFor(t, 20*time.Second, "both interfaces of site1 carry flows", func() error {
		now := a.wgAll("transfer")
		for _, c := range []struct{ iface, peer string }{{a.iface, b0.pub}, {slot1, b1.pub}} {
			if sent := txBytes(now, c.iface, c.peer) - txBytes(before, c.iface, c.peer); sent < 60000 {
				return fmt.Errorf("%s sent %d bytes to its gateway of site2", c.iface, sent)
			}
		}
		return nil
	})
	t.Logf("counters: %s→site2.0 and %s→site2.1 both grew by 60 kB or more", a.iface, slot1)

	// Cut site2.0 silently: its WireGuard UDP is dropped both ways; links
	// and gossip stay up.
	cutAt := nowSeconds()
	b0.ns.Run(t, "nft", "add table inet dcmgw; add chain inet dcmgw in { type filter hook input priority 0; }; add chain inet dcmgw out { type filter hook output priority 0; }; "+
		"add rule inet dcmgw in udp dport 51820-51823 drop; add rule inet dcmgw out udp sport 51820-51823 drop")
	netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, "the group holds site2.1 only", func() error {
		return a.expectTunnel(b0.prefix(), slot1)
	})
	leftAt := nowSeconds()
	a.waitSent(slot1, b1.pub, 100000, "flows through site2.1 alone")
	uncutAt := nowSeconds()
	b0.ns.Run(t, "nft", "delete table inet dcmgw")
	netconfigtest.Eventually(t, 30*time.Second, 20*time.Millisecond, "site2.0 back in the group", func() error {
		return a.expectTunnel(b0.prefix(), both...)
	})
	rejoinAt := nowSeconds()
	a.waitSent(a.iface, b0.pub, 50000, "flows through site2.0 again")
	send.p.Interrupt(5 * time.Second)
	recv0.p.Interrupt(5 * time.Second)
	recv1.p.Interrupt(5 * time.Second)
	runs := append(parseFlowRuns("site2.0", recv0.p.Output()), parseFlowRuns("site2.1", recv1.p.Output())...)

	on0, on1 := flowsOn(runs, "site2.0", flowsAt, cutAt), flowsOn(runs, "site2.1", flowsAt, cutAt)
	if len(on0) == 0 || len(on1) == 0 {
		t.Fatalf("before the cut, flows on site2.0 %v and on site2.1 %v: want both used", on0, on1)
	}
	if after := flowsOn(runs, "site2.0", cutAt+0.1, uncutAt); len(after) > 0 {
		t.Errorf("flows %v reached site2.0 while it was cut", after)
	}
	cut, back := windowStats(runs, cutAt, uncutAt), windowStats(runs, uncutAt, rejoinAt+2)
	t.Logf("before the cut %d flows on site2.0 %v, %d on site2.1 %v; cut: site2.0 left the group after %d ms, the longest silence of a flow %d ms, %d packets lost in all (%d flows moved); "+
		"uncut: site2.0 back in the group after %.1f s (probes' hold 2 s), %d flows moved back, %d packets lost, longest silence %d ms",
		len(on0), on0, len(on1), on1, int((leftAt-cutAt)*1000), int(cut.silence*1000), cut.lost, cut.moves,
		rejoinAt-uncutAt, back.moves, back.lost, int(back.silence*1000))
	if cut.moves < len(on0) {
		t.Errorf("%d flows moved to site2.1, want the %d on site2.0", cut.moves, len(on0))
	}
	// 200 ms × 3 to detect, a reconcile, one nexthop replace: 1 s, and
	// half a second for a loaded machine.
	if cut.silence > 1.5 {
		t.Errorf("a flow was silent %.2f s after the cut, want ≤ 1.5 s", cut.silence)
	}
	if rejoinAt-uncutAt < 1.9 {
		t.Errorf("site2.0 rejoined %.2f s after the uncut, before the probes' hold of 2 s", rejoinAt-uncutAt)
	}

	// down --purge takes the slot's interface, the routes and the nexthop
	// objects with it.
	a.ns.Run(t, dcmeshBinary(t), "down", "--purge", "--config", a.cfgPath)
	netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, "site1 purged", func() error {
		if r := a.ns.Run(t, "ip", "route", "show", "table", "all", "proto", "220"); strings.TrimSpace(r) != "" {
			return fmt.Errorf("routes left:\n%s", r)
		}
		if r := a.ns.Run(t, "ip", "nexthop", "show"); strings.TrimSpace(r) != "" {
			return fmt.Errorf("nexthops left:\n%s", r)
		}
		for _, l := range both {
			if out, err := a.ns.Try("ip", "link", "show", l); err == nil {
				return fmt.Errorf("link left: %s", out)
			}
		}
		return nil
	})
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestGatewaysRotation: site1, holding site2's gateways on two interfaces,
// rotates its key: the new key is on both interfaces and both gateways of
// site2 cut over to it. Then site2.1 rotates: site1 pre-installs its next
// key on the slot-1 interface and cuts over there. Both rotations complete
// (every gateway carried data both ways under the new key), and site2's
// prefix stays over both gateways. Last, deleting site1's slot-1 link
// stops its agent, as slot 0's would.
func TestGatewaysRotation(t *testing.T) {
	m, a, b0, b1 := newGatewayMesh(t)
	slot1, both := a.iface+"g1", []string{a.iface, a.iface + "g1"}
	out := m.cli("rotate", "--wait", "--config", a.cfgPath)
	t.Logf("site1's rotation: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "complete") || strings.Contains(out, "incomplete") {
		t.Errorf("site1's rotation: %s", out)
	}
	newA := m.publicKeyOf(a.keyPath)
	for _, iface := range both {
		if k := strings.TrimSpace(a.ns.Run(t, "wg", "show", iface, "public-key")); k != newA {
			t.Errorf("%s has key %s, want the new %s", iface, k, newA)
		}
	}
	for _, o := range []*site{b0, b1} {
		waitFor(t, 20*time.Second, o.name+" holds site1's new key only", func() error {
			ips := o.allowedIPs()
			if len(ips) != 1 || !strings.Contains(ips[newA], a.prefix()) {
				return fmt.Errorf("allowed IPs %v", ips)
			}
			return nil
		})
	}
	out = m.cli("rotate", "--wait", "--config", b1.cfgPath)
	t.Logf("site2.1's rotation: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "complete") || strings.Contains(out, "incomplete") {
		t.Errorf("site2.1's rotation: %s", out)
	}
	newB1 := m.publicKeyOf(b1.keyPath)
	waitFor(t, 20*time.Second, "site1 holds site2.1's new key only, on "+slot1, func() error {
		ips := a.wgAll("allowed-ips")
		if len(ips[slot1]) != 1 || !strings.Contains(ips[slot1][newB1], b0.prefix()) || len(ips[a.iface]) != 1 {
			return fmt.Errorf("allowed IPs %v", ips)
		}
		return nil
	})
	if err := a.expectTunnel(b0.prefix(), both...); err != nil {
		t.Error(err)
	}

	// A slot's embedded device that stops (its link deleted) stops the
	// agent, as slot 0's does: the fail-closed routes answer.
	a.ns.Run(t, "ip", "link", "del", slot1)
	a.agent.WaitOutput(t, "the embedded WireGuard device "+slot1+" stopped unexpectedly", 10*time.Second)
	netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, "site1's agent exits", func() error {
		if !a.agent.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if r := a.ns.Run(t, "ip", "route", "show", "exact", b0.prefix()); !strings.Contains(r, "unreachable") {
		t.Errorf("site1's route to site2 after its agent stopped: %q, want the fail-closed route", r)
	}
}

// TestGatewaysDrain: `dcmesh drain` on site2.0 publishes its record with
// Drain set; site1 takes it out of the group (it stays a peer), the flows
// move to site2.1 without a loss, and `drain --wait` on site2.0 then
// reports it idle (only probes and keepalives: the local side's check that
// the peers moved away). `undrain` puts it back in the group. Drained,
// site1 (two interfaces) moves its group route to metric M-1 and its
// drain --wait names both gateways it sends to.
func TestGatewaysDrain(t *testing.T) {
	m, a, b0, b1 := newGatewayMesh(t)
	slot1, both := a.iface+"g1", []string{a.iface, a.iface + "g1"}
	recv0, recv1 := startGatewayFlows(t, b0, "recv", b0.host()), startGatewayFlows(t, b1, "recv", b0.host())
	send := startGatewayFlows(t, a, "send", b0.host())
	a.waitSent(a.iface, b0.pub, 60000, "flows through site2.0")
	a.waitSent(slot1, b1.pub, 60000, "flows through site2.1")
	drainAt := nowSeconds()
	m.cli("drain", "--config", b0.cfgPath)
	netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, "the group holds site2.1 only", func() error {
		return a.expectTunnel(b0.prefix(), slot1)
	})
	leftAt := nowSeconds()
	if hs := a.wgAll("latest-handshakes"); hs[a.iface][b0.pub] == "" {
		t.Errorf("site2.0 is no peer of site1 while draining: %v", hs)
	}
	waitFor(t, 20*time.Second, "drain --wait on site2.0 says it carries nothing", func() error {
		out, _, code := runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--config", b0.cfgPath)
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, strings.TrimSpace(out))
		}
		return nil
	})
	idleAt := nowSeconds()
	undrainAt := nowSeconds()
	m.cli("undrain", "--config", b0.cfgPath)
	netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, "site2.0 back in the group", func() error {
		return a.expectTunnel(b0.prefix(), both...)
	})
	backAt := nowSeconds()
	a.waitSent(a.iface, b0.pub, 50000, "flows through site2.0 again")
	// site1 drained: its group route moves to metric M-1, still over the
	// group, and drain --wait names the gateways it still sends to, on
	// either interface.
	metric := a.tunnelMetric(b0.prefix())
	m.cli("drain", "--config", a.cfgPath)
	waitFor(t, 10*time.Second, "site1's group route at metric M-1", func() error {
		if got := a.tunnelMetric(b0.prefix()); got != metric-1 {
			return fmt.Errorf("metric %d, want %d", got, metric-1)
		}
		return a.expectTunnel(b0.prefix(), both...)
	})
	out, _, code := runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--config", a.cfgPath)
	if code != 1 || !strings.Contains(out, "site2 (") || !strings.Contains(out, "site2.1 (") {
		t.Errorf("drain --wait on site1 with flows to both gateways: exit %d, %q; want 1 naming site2 and site2.1", code, out)
	}
	m.cli("undrain", "--config", a.cfgPath)
	send.p.Interrupt(5 * time.Second)
	recv0.p.Interrupt(5 * time.Second)
	recv1.p.Interrupt(5 * time.Second)
	runs := append(parseFlowRuns("site2.0", recv0.p.Output()), parseFlowRuns("site2.1", recv1.p.Output())...)
	var drained, undrained flowStats
	for p := gatewayFlowPort; p < gatewayFlowPort+gatewayFlows; p++ {
		var fr []flowRun
		for _, r := range runs {
			if r.port == p {
				fr = append(fr, r)
			}
		}
		d, u := joinFlow(fr, drainAt, undrainAt), joinFlow(fr, undrainAt, nowSeconds())
		drained.lost, drained.moves, drained.silence = drained.lost+d.lost, drained.moves+d.moves, max(drained.silence, d.silence)
		undrained.lost, undrained.moves, undrained.silence = undrained.lost+u.lost, undrained.moves+u.moves, max(undrained.silence, u.silence)
	}
	t.Logf("drain: out of the group in %d ms, %d flows moved, %d packets lost, longest silence %d ms; drain --wait idle %.1f s after; undrain: back in %d ms, %d flows moved, %d lost",
		int((leftAt-drainAt)*1000), drained.moves, drained.lost, int(drained.silence*1000), idleAt-leftAt, int((backAt-undrainAt)*1000), undrained.moves, undrained.lost)
	if drained.moves == 0 || drained.lost > 0 {
		t.Errorf("drain moved %d flows and lost %d packets: want some moved, none lost", drained.moves, drained.lost)
	}
	if undrained.lost > 0 {
		t.Errorf("undrain lost %d packets, want none", undrained.lost)
	}
}

// waitSent waits until s has sent n more bytes to peer on iface.
func (s *site) waitSent(iface, peer string, n int64, what string) {
	t := s.m.t
	t.Helper()
	base := txBytes(s.wgAll("transfer"), iface, peer)
	waitFor(t, 20*time.Second, what, func() error {
		if sent := txBytes(s.wgAll("transfer"), iface, peer) - base; sent < n {
			return fmt.Errorf("%s sent %d bytes, want %d", iface, sent, n)
		}
		return nil
	})
}

// startHelper runs this test binary's helper test in s's namespace.
func startHelper(t *testing.T, s *site, label, test string, env []string) *probe {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &probe{s.ns.StartEnv(t, label, env, self, "-test.run", "^"+test+"$")}
}

// newGatewayMesh starts site1 (one gateway) and site2 with two gateways
// (site2.0 is m.sites[1], site2.1 m.sites[2], certified with --gateway 1,
// both holding site2's address), and waits until site1 holds each on its
// slot's interface, routes site2's prefix over a group of both and probes
// both.
func newGatewayMesh(t *testing.T) (m *testMesh, a, b0, b1 *site) {
	t.Helper()
	m = newMesh(t, 3)
	a, b0, b1 = m.sites[0], m.sites[1], m.sites[2]
	caDir := m.newCA("ca")
	a.enroll(caDir, nil)
	b0.enroll(caDir, []string{a.seed()})
	b1.enrollAs(caDir, []string{a.seed()}, b0.name, b0.prefix(), "--gateway", "1")
	// site2's address (on lo in site2.0, as every test site's) is in
	// site2.1 too (this kernel has no dummy links).
	b1.ns.Run(t, "ip", "addr", "add", b0.host()+"/32", "dev", "lo")
	// Flows spread over a group's members by their ports (an operator's
	// setting on a gateway or router that balances flows between two
	// hosts; the kernel's default hashes the addresses only).
	a.ns.Run(t, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
	m.startAll()
	slot1 := a.iface + "g1"
	waitFor(t, 30*time.Second, "site1 holds site2.0 on "+a.iface+" and site2.1 on "+slot1+", both with a handshake", func() error {
		hs := a.wgAll("latest-handshakes")
		if len(hs[a.iface]) != 1 || hs[a.iface][b0.pub] == "0" || hs[a.iface][b0.pub] == "" {
			return fmt.Errorf("wg show %s: %v", a.iface, hs[a.iface])
		}
		if len(hs[slot1]) != 1 || hs[slot1][b1.pub] == "0" || hs[slot1][b1.pub] == "" {
			return fmt.Errorf("wg show %s: %v", slot1, hs[slot1])
		}
		return nil
	})
	waitFor(t, 30*time.Second, "site1 routes site2's prefix over both gateways", func() error {
		return a.expectTunnel(b0.prefix(), a.iface, slot1)
	})
	if eps := b1.wgAll("endpoints")[b1.iface]; eps[a.pub] != a.underlay()+":51821" {
		t.Fatalf("site2.1 holds site1 at %q, want its port + 1 (%s:51821)", eps[a.pub], a.underlay())
	}
	// Until a probe session is up, a gateway counts as healthy on its
	// handshake alone (fail-static for a gateway just learned): a cut must
	// find both sessions up.
	a.waitProbesUp(t, "site2", "site2.1")
	st := a.status()
	if r := st.Routes; r.Desired != 3 || r.Programmed != 3 || r.FailClosedDesired != 3 || r.FailClosedProgrammed != 3 {
		t.Errorf("site1's status routes %+v: want site2's prefix and both overlay addresses, all programmed", r)
	}
	for _, p := range st.Peers {
		if !p.RoutesProgrammed {
			t.Errorf("site1's status: %s's routes not programmed", p.Node)
		}
	}
	return m, a, b0, b1
}

// startGatewayFlows starts TestHelperGatewayFlows in s's namespace:
// "send" from s's host address to addr, or "recv" on addr.
func startGatewayFlows(t *testing.T, s *site, mode, addr string) *probe {
	t.Helper()
	env := []string{"DCMESH_GWFLOWS=" + mode, fmt.Sprintf("PORT=%d", gatewayFlowPort), fmt.Sprintf("FLOWS=%d", gatewayFlows),
		fmt.Sprintf("RATE=%d", gatewayFlowRate), "SRC=" + s.host(), "DST=" + addr, "LISTEN=" + addr}
	p := startHelper(t, s, "flows "+mode+" "+s.name, "TestHelperGatewayFlows", env)
	p.p.WaitOutput(t, "flows "+map[string]string{"send": "sending", "recv": "listening"}[mode], 10*time.Second)
	return p
}

// tunnelMetric is the metric of s's tunnel route for prefix (0: none).
func (s *site) tunnelMetric(prefix string) int {
	out := s.ns.Run(s.m.t, "ip", "route", "show", "exact", prefix)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if i := slices.Index(f, "metric"); len(f) > 0 && f[0] != "unreachable" && i >= 0 && i+1 < len(f) {
			var m int
			_, _ = fmt.Sscanf(f[i+1], "%d", &m)
			return m
		}
	}
	return 0
}

// expectTunnel checks s's tunnel route for prefix (main table): over a
// nexthop group of exactly devs, or a plain route through devs[0] if one.
func (s *site) expectTunnel(prefix string, devs ...string) error {
	got, err := s.tunnelDevs(prefix)
	if err != nil {
		return err
	}
	if !slices.Equal(got, devs) {
		return fmt.Errorf("route to %s through %v, want %v", prefix, got, devs)
	}
	return nil
}

// tunnelDevs returns the devices of s's tunnel route for prefix, sorted:
// its nexthop group's members or its one device; none without one.
func (s *site) tunnelDevs(prefix string) ([]string, error) {
	out, err := s.ns.Try("ip", "route", "show", "exact", prefix)
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] == "unreachable" {
			continue
		}
		if i := slices.Index(f, "nhid"); i >= 0 && i+1 < len(f) {
			return s.nexthopDevs(f[i+1])
		}
		if i := slices.Index(f, "dev"); i >= 0 && i+1 < len(f) {
			return []string{f[i+1]}, nil
		}
	}
	return nil, nil
}

// nexthopDevs returns the devices of nexthop group id's members, sorted.
func (s *site) nexthopDevs(id string) ([]string, error) {
	out, err := s.ns.Try("ip", "nexthop", "show", "id", id)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(out)
	i := slices.Index(f, "group")
	if i < 0 || i+1 >= len(f) {
		return nil, fmt.Errorf("nexthop %s is no group: %s", id, out)
	}
	var devs []string
	for _, mb := range strings.Split(f[i+1], "/") {
		mid, _, _ := strings.Cut(mb, ",")
		one, err := s.ns.Try("ip", "nexthop", "show", "id", mid)
		if err != nil {
			return nil, err
		}
		g := strings.Fields(one)
		if j := slices.Index(g, "dev"); j >= 0 && j+1 < len(g) {
			devs = append(devs, g[j+1])
		}
	}
	slices.Sort(devs)
	return devs, nil
}

// wgAll is `wg show all KIND` in s's namespace: interface → peer → the
// rest of the line.
func (s *site) wgAll(kind string) map[string]map[string]string {
	s.m.t.Helper()
	out := s.ns.Run(s.m.t, "wg", "show", "all", kind)
	res := map[string]map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(l, "\t", 3)
		if len(f) != 3 {
			continue
		}
		if res[f[0]] == nil {
			res[f[0]] = map[string]string{}
		}
		res[f[0]][f[1]] = f[2]
	}
	return res
}

// txBytes is the transmitted bytes of `wg show all transfer` for a peer.
func txBytes(transfer map[string]map[string]string, iface, peer string) int64 {
	var rx, tx int64
	_, _ = fmt.Sscanf(transfer[iface][peer], "%d\t%d", &rx, &tx)
	return tx
}

func nowSeconds() float64 { return float64(time.Now().UnixMicro()) / 1e6 }
