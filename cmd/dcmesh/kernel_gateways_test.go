package main

// The multi-gateway data plane on the kernel backend, inside the qemu guest
// (run by TestKernelBackendUnderQEMU): the guest has no bridge module, no
// wg, no nft and a busybox ip without nexthops, so the underlay is routed
// by a namespace of its own, the devices and nexthops are read through
// netlink and wgctrl, and the silent cut is a blackhole route.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernelGatewayFlowRate is each flow's rate in the guest (packets/s): 12
// flows at 50/s, within what the emulated guest forwards without loss.
const kernelGatewayFlowRate = 50

// kernelProbeConfig is the probes' timing in the guest: 250 ms × 8 (2 s
// to detect) instead of 200 ms × 3. The guest's CPU is emulated, and on a
// loaded host it went 1.5 s and more without running: at 0.6 s the probes
// of healthy gateways flapped, and with both of site2's down at once
// site1's route to site2 went away (run 2 of the first three lost 1275
// packets to that in the kill -9 window).
const kernelProbeConfig = "health:\n  probe_interval: 250ms\n  probe_multiplier: 8\n"

// kernelFailoverSilence bounds the longest silence of a flow after a
// silent cut in the emulated guest: detection (2 s, kernelProbeConfig), a
// reconcile and a nexthop replace, with a margin for the emulated CPU
// (measured 3.4 s: the guest's reconciles take up to 2 s under load). A
// failover that never happens leaves the flows silent until the test ends.
const kernelFailoverSilence = 6 * time.Second

// TestKernelGatewayFailover runs inside the qemu guest: site1 (one
// gateway) and site2 with two gateways, all on the kernel backend. site1
// routes site2's prefix over a nexthop group of its two slot interfaces.
// kill -9 of site2.0's agent: its kernel tunnel keeps forwarding, site1's
// probes of it stop, the group moves to site2.1 with no packet lost; the
// restarted agent rejoins the group after the probes' hold. Then a silent
// cut of site2.1's underlay (blackhole routes both ways, no link down)
// moves its flows to site2.0 within kernelFailoverSilence.
func TestKernelGatewayFailover(t *testing.T) {
	if os.Getenv(inGuestEnv) == "" {
		t.Skip("runs inside the qemu guest started by TestKernelBackendUnderQEMU")
	}
	start := time.Now()
	m, a, b0, b1 := kernelGatewayMesh(t, 79)
	slot1, both := a.iface+"g1", []string{a.iface, a.iface + "g1"}
	t.Logf("kernel mesh up with the group and the probes in %s", time.Since(start).Round(100*time.Millisecond))

	dst := kernelGatewayAddr
	recv0, recv1 := startKernelFlows(t, b0, "recv", dst), startKernelFlows(t, b1, "recv", dst)
	send := startKernelFlows(t, a, "send", dst)
	flowsAt := nowSeconds()
	a.waitSentKernel(a.iface, b0.pub, 20000, "flows through site2.0")
	a.waitSentKernel(slot1, b1.pub, 20000, "flows through site2.1")

	// kill -9 site2.0's agent: nothing cleans up, its tunnel forwards on.
	killAt := nowSeconds()
	b0.agent.Kill()
	netconfigtest.Eventually(t, 20*time.Second, 20*time.Millisecond, "the group holds site2.1 only", func() error {
		return a.expectKernelTunnel(b0.prefix(), slot1)
	})
	leftAt := nowSeconds()
	a.waitSentKernel(slot1, b1.pub, 30000, "flows through site2.1 alone")
	restartAt := nowSeconds()
	b0.start()
	netconfigtest.Eventually(t, 30*time.Second, 20*time.Millisecond, "site2.0 back in the group", func() error {
		return a.expectKernelTunnel(b0.prefix(), both...)
	})
	rejoinAt := nowSeconds()
	a.waitSentKernel(a.iface, b0.pub, 20000, "flows through site2.0 again")

	// Silent cut of site2.1's underlay, both ways; its link stays up.
	cutAt := nowSeconds()
	m.blackholeSite(t, b1)
	netconfigtest.Eventually(t, 20*time.Second, 20*time.Millisecond, "the group holds site2.0 only", func() error {
		return a.expectKernelTunnel(b0.prefix(), a.iface)
	})
	cutLeftAt := nowSeconds()
	a.waitSentKernel(a.iface, b0.pub, 30000, "flows through site2.0 alone")
	endAt := nowSeconds()
	send.p.Interrupt(5 * time.Second)
	recv0.p.Interrupt(5 * time.Second)
	recv1.p.Interrupt(5 * time.Second)
	runs := append(parseFlowRuns("site2.0", recv0.p.Output()), parseFlowRuns("site2.1", recv1.p.Output())...)

	on0, on1 := flowsOn(runs, "site2.0", flowsAt, killAt), flowsOn(runs, "site2.1", flowsAt, killAt)
	if len(on0) == 0 || len(on1) == 0 {
		t.Fatalf("before the kill, flows on site2.0 %v and on site2.1 %v: want both used", on0, on1)
	}
	if after := flowsOn(runs, "site2.0", leftAt+0.5, restartAt); len(after) > 0 {
		t.Errorf("flows %v reached site2.0 after it left the group", after)
	}
	if after := flowsOn(runs, "site2.1", cutLeftAt+0.5, endAt); len(after) > 0 {
		t.Errorf("flows %v reached site2.1 after it was cut", after)
	}
	killed, back, cut := windowStats(runs, killAt, restartAt), windowStats(runs, restartAt, cutAt), windowStats(runs, cutAt, endAt)
	t.Logf("kernel gateways: before the kill %d flows on site2.0 %v, %d on site2.1 %v; kill -9 of site2.0's agent: out of the group after %d ms, %d flows moved, %d packets lost, longest silence %d ms; "+
		"restarted: back in the group after %.1f s (probes' hold 2 s), %d flows moved back, %d lost; silent cut of site2.1: out of the group after %d ms, %d flows moved, %d lost, longest silence %d ms",
		len(on0), on0, len(on1), on1, int((leftAt-killAt)*1000), killed.moves, killed.lost, int(killed.silence*1000),
		rejoinAt-restartAt, back.moves, back.lost, int((cutLeftAt-cutAt)*1000), cut.moves, cut.lost, int(cut.silence*1000))
	if back.lost > 0 {
		logFlowRuns(t, "runs around site2.0's restart", runs, restartAt-1, cutAt)
		t.Logf("site1's agent:\n%s", a.agent.Output())
		t.Logf("site2.0's restarted agent:\n%s", b0.agent.Output())
	}
	if killed.moves < len(on0) || killed.lost > 0 {
		t.Errorf("kill -9: %d flows moved to site2.1 (want the %d on site2.0), %d packets lost (want 0)", killed.moves, len(on0), killed.lost)
	}
	if rejoinAt-restartAt < 1.9 {
		t.Errorf("site2.0 rejoined %.2f s after its restart, before the probes' hold of 2 s", rejoinAt-restartAt)
	}
	if onCut := flowsOn(runs, "site2.1", cutAt-0.5, cutAt); len(onCut) == 0 || cut.moves < len(onCut) || cut.silence > kernelFailoverSilence.Seconds() {
		t.Errorf("silent cut: %d flows moved (want the %d on site2.1, %v), longest silence %.2f s (limit %s)", cut.moves, len(onCut), onCut, cut.silence, kernelFailoverSilence)
	}
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// kernelGatewayAddr is the address of site2's prefix both site2 gateways
// hold on a dummy link, the flows' destination.
const kernelGatewayAddr = "10.2.0.2"

// kernelGatewayMesh builds, inside the guest, site1 (one gateway) and
// site2's gateways site2.0 and site2.1 (certified with --gateway 1) on the
// kernel backend, on an underlay routed by a namespace of its own, and
// waits until site1 holds each gateway on its slot's interface with a
// handshake, routes site2's prefix over a group of both and probes both.
func kernelGatewayMesh(t *testing.T, subnet int) (m *testMesh, a, b0, b1 *site) {
	t.Helper()
	m = &testMesh{t: t, id: netconfigtest.UniqueSuffix(), dir: shortTempDir(t), backend: "kernel", subnet: subnet}
	m.ul = netconfigtest.NewNS(t, "dcmt-"+m.id+"-ul")
	m.ul.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	for i := 1; i <= 3; i++ {
		m.routedSite(i)
	}
	a, b0, b1 = m.sites[0], m.sites[1], m.sites[2]
	for _, s := range []*site{b0, b1} {
		s.addDummy(t, kernelGatewayAddr+"/32")
	}
	caDir := m.newCA("ca")
	a.enroll(caDir, nil)
	b0.enroll(caDir, []string{a.seed()})
	b1.enrollAs(caDir, []string{a.seed()}, b0.name, b0.prefix(), "--gateway", "1")
	for _, s := range m.sites {
		s.appendConfig(kernelProbeConfig)
		t.Cleanup(func() {
			_, _ = s.ns.Try("ip", "link", "del", s.iface)
			_, _ = s.ns.Try("ip", "link", "del", s.iface+"g1")
		})
	}
	// Flows spread over a group's members by their ports.
	a.ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/fib_multipath_hash_policy")
	m.startAll()
	slot1 := a.iface + "g1"
	waitFor(t, 60*time.Second, "site1 holds site2.0 on "+a.iface+" and site2.1 on "+slot1+", both with a handshake", func() error {
		for _, c := range []struct{ iface, peer string }{{a.iface, b0.pub}, {slot1, b1.pub}} {
			d, err := a.deviceOf(c.iface)
			if err != nil {
				return err
			}
			if len(d.Peers) != 1 || d.Peers[0].PublicKey.String() != c.peer || d.Peers[0].LastHandshakeTime.IsZero() {
				return fmt.Errorf("%s: peers %d, want %s with a handshake", c.iface, len(d.Peers), c.peer)
			}
		}
		return nil
	})
	waitFor(t, 30*time.Second, "site1 routes site2's prefix over both gateways", func() error {
		return a.expectKernelTunnel(b0.prefix(), a.iface, slot1)
	})
	a.waitProbesUp(t, "site2", "site2.1")
	return m, a, b0, b1
}

// routedSite creates site i with eth0 on a veth to the underlay namespace,
// which routes between the sites (the guest has no bridge module): the
// site holds 192.168.<subnet>.i/32 and reaches the others through .254.
func (m *testMesh) routedSite(i int) *site {
	t := m.t
	s := m.newSite(i)
	ul := fmt.Sprintf("ul%d", i)
	netconfigtest.Veth(t, s.ns, "eth0", m.ul, ul)
	router := fmt.Sprintf("192.168.%d.254", m.subnet)
	s.ns.Run(t, "ip", "addr", "add", s.underlay()+"/32", "dev", "eth0")
	s.ns.Run(t, "ip", "route", "add", router+"/32", "dev", "eth0")
	s.ns.Run(t, "ip", "route", "add", fmt.Sprintf("192.168.%d.0/24", m.subnet), "via", router)
	m.ul.Run(t, "ip", "addr", "add", router+"/32", "dev", ul)
	m.ul.Run(t, "ip", "route", "add", s.underlay()+"/32", "dev", ul)
	return s
}

// blackholeSite cuts s's underlay silently, both ways: the router drops
// what the other sites send to s, and s drops what it sends to them (its
// route to the underlay becomes a blackhole); every link stays up.
func (m *testMesh) blackholeSite(t *testing.T, s *site) {
	t.Helper()
	for _, c := range []struct {
		ns  *netconfigtest.NS
		dst string
	}{{m.ul, s.underlay() + "/32"}, {s.ns, fmt.Sprintf("192.168.%d.0/24", m.subnet)}} {
		_, dst, err := net.ParseCIDR(c.dst)
		if err == nil {
			err = c.ns.Handle(t).RouteReplace(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE, Table: unix.RT_TABLE_MAIN})
		}
		if err != nil {
			t.Fatalf("blackhole %s in %s: %v", c.dst, c.ns.Name, err)
		}
	}
}

// logFlowRuns logs every flow's runs that end after from and start before
// to, times relative to from: where a loss or silence was.
func logFlowRuns(t *testing.T, what string, runs []flowRun, from, to float64) {
	var b strings.Builder
	for _, r := range runs {
		first, last := float64(r.firstTime)/1e6-from, float64(r.lastTime)/1e6-from
		if last >= 0 && first <= to-from {
			fmt.Fprintf(&b, "\n  %d %s seq %d-%d at %.2f-%.2f s", r.port, r.receiver, r.first, r.last, first, last)
		}
	}
	t.Logf("%s:%s", what, b.String())
}

// addDummy adds addr on a dummy link in s's namespace.
func (s *site) addDummy(t *testing.T, addr string) {
	t.Helper()
	h := s.ns.Handle(t)
	d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dcmd" + s.m.id}}
	a, err := netlink.ParseAddr(addr)
	if err == nil {
		err = h.LinkAdd(d)
	}
	if err == nil {
		err = h.AddrAdd(d, a)
	}
	if err == nil {
		err = h.LinkSetUp(d)
	}
	if err != nil {
		t.Fatalf("dummy link with %s in %s: %v", addr, s.name, err)
	}
}

// startKernelFlows is startGatewayFlows at kernelGatewayFlowRate.
func startKernelFlows(t *testing.T, s *site, mode, addr string) *probe {
	t.Helper()
	env := []string{"DCMESH_GWFLOWS=" + mode, fmt.Sprintf("PORT=%d", gatewayFlowPort), fmt.Sprintf("FLOWS=%d", gatewayFlows),
		fmt.Sprintf("RATE=%d", kernelGatewayFlowRate), "SRC=" + s.host(), "DST=" + addr, "LISTEN=" + addr}
	p := startHelper(t, s, "flows "+mode+" "+s.name, "TestHelperGatewayFlows", env)
	p.p.WaitOutput(t, "flows "+map[string]string{"send": "sending", "recv": "listening"}[mode], 20*time.Second)
	return p
}

// waitSentKernel waits until s has sent n more bytes to peer on iface,
// read with wgctrl (the guest has no wg tool).
func (s *site) waitSentKernel(iface, peer string, n int64, what string) {
	t := s.m.t
	t.Helper()
	sent := func() (int64, error) {
		d, err := s.deviceOf(iface)
		if err != nil {
			return 0, err
		}
		for _, p := range d.Peers {
			if p.PublicKey.String() == peer {
				return p.TransmitBytes, nil
			}
		}
		return 0, fmt.Errorf("%s has no peer %s", iface, peer)
	}
	base, err := sent()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, what, func() error {
		now, err := sent()
		if err != nil {
			return err
		}
		if now-base < n {
			return fmt.Errorf("%s sent %d bytes, want %d", iface, now-base, n)
		}
		return nil
	})
}

// expectKernelTunnel is expectTunnel read through netlink (busybox ip has
// no nexthop objects).
func (s *site) expectKernelTunnel(prefix string, devs ...string) error {
	got, err := s.kernelTunnelDevs(netip.MustParsePrefix(prefix))
	if err != nil {
		return err
	}
	if !slices.Equal(got, devs) {
		return fmt.Errorf("route to %s through %v, want %v", prefix, got, devs)
	}
	return nil
}

// kernelTunnelDevs returns the devices of s's main-table route for prefix,
// sorted: its nexthop group's members, its one nexthop's or its one
// device; none for an unreachable route or none at all.
func (s *site) kernelTunnelDevs(prefix netip.Prefix) ([]string, error) {
	nsh, err := netns.GetFromPath(s.ns.Path)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	h, err := netconfig.OpenHandleAt(nsh)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := h.RouteListNexthop(unix.RT_TABLE_MAIN)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Dst == prefix && r.Nexthop != 0 {
			return nexthopLinks(h, r.Nexthop)
		}
	}
	_, dst, _ := net.ParseCIDR(prefix.String())
	plain, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	for _, r := range plain {
		if r.Type == unix.RTN_UNICAST && r.LinkIndex > 0 {
			l, err := h.LinkByIndex(r.LinkIndex)
			if err != nil {
				return nil, err
			}
			return []string{l.Attrs().Name}, nil
		}
	}
	return nil, nil
}

// nexthopLinks returns the link names of nexthop id (a group's members,
// or the one nexthop), sorted.
func nexthopLinks(h *netconfig.Handle, id uint32) ([]string, error) {
	nhs, err := h.NexthopList()
	if err != nil {
		return nil, err
	}
	byID := map[uint32]netconfig.Nexthop{}
	for _, nh := range nhs {
		byID[nh.ID] = nh
	}
	nh, ok := byID[id]
	if !ok {
		return nil, fmt.Errorf("route over nexthop %d, which is not there", id)
	}
	ids := []uint32{id}
	if nh.IsGroup() {
		ids = nil
		for _, mb := range nh.Members {
			ids = append(ids, mb.ID)
		}
	}
	var devs []string
	for _, mid := range ids {
		l, err := h.LinkByIndex(byID[mid].Link)
		if err != nil {
			return nil, fmt.Errorf("nexthop %d: %w", mid, err)
		}
		devs = append(devs, l.Attrs().Name)
	}
	slices.Sort(devs)
	return devs, nil
}
