package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// wgPacket matches tcpdump's line for a UDP packet between two WireGuard
// ports on the underlay.
var wgPacket = regexp.MustCompile(`IP 192\.168\.\d+\.\d+\.51820 > 192\.168\.\d+\.\d+\.51820: UDP, length \d+$`)

// wgPortUnreachable is the ICMP error a site answers a handshake with while
// its agent is not yet listening; it quotes only the encrypted packet's
// headers.
var wgPortUnreachable = regexp.MustCompile(`IP 192\.168\.\d+\.\d+ > 192\.168\.\d+\.\d+: ICMP 192\.168\.\d+\.\d+ udp port 51820 unreachable, length \d+$`)

// Three sites, each a real agent with the embedded backend and static peers:
// traffic crosses between all prefixes both ways, wg show lists the two peers
// with a handshake, and the underlay carries only WireGuard UDP with no trace
// of the probe's cleartext.
func TestThreeSitesEncryptedMesh(t *testing.T) {
	m := newMesh(t, 3)
	m.writeConfigs()
	capt := m.startCapture()
	start := time.Now()
	m.startAll()
	for _, s := range m.sites {
		s.waitHandshakes(others(m, s)...)
	}
	t.Logf("3 sites: every pair handshaken %s after the first agent started", time.Since(start).Round(time.Millisecond))
	for _, a := range m.sites {
		for _, b := range m.sites {
			if a != b {
				if err := a.ping(b, 3); err != nil {
					t.Error(err)
				}
			}
		}
	}
	lines, raw := capt.stop(t)
	udp := 0
	observer := fmt.Sprintf("IP 192.168.%d.254 > ", m.subnet) // the capture namespace's own bridge (IGMP reports)
	for _, l := range lines {
		switch {
		case wgPacket.MatchString(l):
			udp++
		case strings.Contains(l, " ARP, "), wgPortUnreachable.MatchString(l), strings.Contains(l, observer):
		default:
			t.Errorf("underlay carried something other than WireGuard: %s", l)
		}
	}
	if udp < 6*3*2 { // 6 directions × 3 pings × request and reply, at least
		t.Errorf("capture saw only %d WireGuard packets; is it capturing?", udp)
	}
	if bytes.Contains(raw, []byte(probePattern)) {
		t.Errorf("the probe's cleartext %q appears on the underlay", probePattern)
	}
	t.Logf("underlay capture: %d packets, %d of them WireGuard UDP, no probe cleartext", len(lines), udp)
}

// Changing one peer and reloading (SIGHUP) changes that peer only: the other
// peer's session is not renegotiated, on either end.
func TestReloadLeavesOtherPeersAlone(t *testing.T) {
	m := newMesh(t, 3)
	m.writeConfigs()
	m.startAll()
	a, b, c := m.sites[0], m.sites[1], m.sites[2]
	for _, s := range m.sites {
		s.waitHandshakes(others(m, s)...)
	}
	// Handshake times have one-second resolution: let them age so a new
	// handshake would show.
	time.Sleep(2 * time.Second)
	aBefore, bBefore := a.handshakes()[b.pub], b.handshakes()[a.pub]

	a.writeConfig(map[string][]string{c.name: {"10.33.0.0/24"}})
	if err := a.agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	netconfigtest.Eventually(t, 10*time.Second, 100*time.Millisecond, "reload applied", func() error {
		out := a.ns.Run(t, "wg", "show", a.iface, "allowed-ips")
		if !strings.Contains(out, "10.33.0.0/24") {
			return fmt.Errorf("wg show allowed-ips:\n%s", out)
		}
		if r := a.ns.Run(t, "ip", "route", "show", "10.33.0.0/24", "proto", "220"); !strings.Contains(r, "dev "+a.iface) {
			return fmt.Errorf("no route for the new prefix: %q", r)
		}
		return nil
	})
	if err := a.ping(b, 2); err != nil {
		t.Error(err)
	}
	if err := a.ping(c, 2); err != nil {
		t.Error(err)
	}
	if got := a.handshakes()[b.pub]; got != aBefore {
		t.Errorf("%s's handshake with %s moved from %d to %d: its session was reset", a.name, b.name, aBefore, got)
	}
	if got := b.handshakes()[a.pub]; got != bBefore {
		t.Errorf("%s's handshake with %s moved from %d to %d: its session was reset", b.name, a.name, bBefore, got)
	}
	if !strings.Contains(a.agent.Output(), "configuration reloaded") || !strings.Contains(a.agent.Output(), "updated=["+c.name+"]") {
		t.Errorf("reload not logged as an update of %s only:\n%s", c.name, a.agent.Output())
	}

	// A broken config on reload is rejected and the running one stays.
	if err := os.WriteFile(a.cfgPath, []byte("site: BAD NAME\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = a.agent.Signal(syscall.SIGHUP)
	a.agent.WaitOutput(t, "reload rejected", 5*time.Second)
	if err := a.ping(c, 1); err != nil {
		t.Errorf("after a rejected reload: %v", err)
	}
}

// kill -9 of an agent: its embedded device dies with it, and traffic for
// the remote prefixes hits the fail-closed routes instead of the default
// route, which leads to a capture on the underlay. A restart restores
// traffic.
func TestKilledAgentFailsClosed(t *testing.T) {
	m := newMesh(t, 2)
	a, b := m.sites[0], m.sites[1]
	gw := fmt.Sprintf("192.168.%d.254", m.subnet)
	a.ns.Run(t, "ip", "route", "add", "default", "via", gw)
	m.writeConfigs()
	m.startAll()
	a.waitHandshakes(b)
	if err := a.ping(b, 2); err != nil {
		t.Fatal(err)
	}

	a.agent.Kill()
	if out := a.ns.Run(t, "ip", "link", "show"); strings.Contains(out, a.iface) {
		t.Fatalf("embedded device survived its process:\n%s", out)
	}
	routes := a.ns.Run(t, "ip", "route", "show", "proto", "220")
	for _, want := range []string{"unreachable " + b.prefix(), "unreachable " + b.overlay()} {
		if !strings.Contains(routes, want) {
			t.Errorf("fail-closed route %q missing after kill -9:\n%s", want, routes)
		}
	}

	capt := m.startCapture("icmp")
	if err := a.ping(b, 3); err == nil {
		t.Error("traffic to the remote prefix still flows with the agent dead")
	}
	// Control: traffic that is not for a remote site does follow the default
	// route into the capture, so the capture would have seen a leak.
	_, _ = a.ns.Try("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I", a.host(), "-p", "c0ffee", "198.51.100.7")
	lines, raw := capt.stop(t)
	control := 0
	for _, l := range lines {
		if strings.Contains(l, "> 198.51.100.7: ICMP echo request") {
			control++
		}
		if strings.Contains(l, b.host()) {
			t.Errorf("probe for %s leaked to the underlay: %s", b.name, l)
		}
	}
	if control == 0 {
		t.Fatalf("control ping never reached the capture; the leak check proves nothing:\n%s", strings.Join(lines, "\n"))
	}
	if bytes.Contains(raw, []byte(probePattern)) {
		t.Error("probe cleartext on the underlay")
	}

	a.start()
	netconfigtest.Eventually(t, 15*time.Second, 200*time.Millisecond, "traffic after restart", func() error { return a.ping(b, 1) })
	if err := b.ping(a, 2); err != nil {
		t.Error(err)
	}
}

// A route of ours deleted by hand comes back at once (route watch), not only
// at the next periodic check. Also: the tunnel MTU follows the underlay
// interface toward the peers, minus 80.
func TestDeletedRouteIsRepairedAndMTUFollowsUnderlay(t *testing.T) {
	requireTool(t, "curl")
	m := newMesh(t, 2)
	a, b := m.sites[0], m.sites[1]
	a.ns.Run(t, "ip", "link", "set", "eth0", "mtu", "1400")
	a.agentArgs = []string{"--metrics-addr", "127.0.0.1:9469"}
	m.writeConfigs()
	m.startAll()
	for _, c := range []struct {
		s   *site
		mtu string
	}{{a, "mtu 1320 "}, {b, "mtu 1420 "}} {
		if out := c.s.ns.Run(t, "ip", "link", "show", c.s.iface); !strings.Contains(out, c.mtu) {
			t.Errorf("%s: want %s(underlay − 80):\n%s", c.s.name, c.mtu, out)
		}
	}
	a.ns.Run(t, "ip", "route", "del", b.prefix(), "dev", a.iface, "proto", "220")
	start := time.Now()
	netconfigtest.Eventually(t, 5*time.Second, 20*time.Millisecond, "route repaired", func() error {
		if r := a.ns.Run(t, "ip", "route", "show", b.prefix(), "dev", a.iface, "proto", "220"); r == "" {
			return fmt.Errorf("route %s still missing", b.prefix())
		}
		return nil
	})
	t.Logf("deleted route restored after %s", time.Since(start).Round(time.Millisecond))
	// Counted as a repair, of that one route only (the first reconcile's
	// routes, and the peer's appearing, are not repairs).
	netconfigtest.Eventually(t, 5*time.Second, 50*time.Millisecond, "repair counted", func() error {
		scrape := a.ns.Run(t, "curl", "-sf", "http://127.0.0.1:9469/metrics")
		if !strings.Contains(scrape, `dcmesh_route_repairs_total{kind="tunnel"} 1`+"\n") || !strings.Contains(scrape, `dcmesh_route_repairs_total{kind="fail_closed"} 0`+"\n") {
			return fmt.Errorf("repairs:\n%s", grepLines(scrape, "dcmesh_route_repairs_total"))
		}
		return nil
	})
	a.waitHandshakes(b)
	if err := a.ping(b, 2); err != nil {
		t.Error(err)
	}
}

// Interop: the third site is the reference wireguard-go binary, configured
// with wg(8) and ip(8) only; the dcmesh sites reach it and each other.
func TestInteropWithReferenceWireGuardGo(t *testing.T) {
	requireTool(t, "wireguard-go")
	m := newMesh(t, 3)
	ref := m.sites[2]
	ref.external = true
	m.writeConfigs()

	// The reference site, by hand.
	ref.agent = ref.ns.Start(t, "wireguard-go", "wireguard-go", "-f", ref.iface)
	netconfigtest.Eventually(t, 5*time.Second, 50*time.Millisecond, "wireguard-go up", func() error {
		_, err := ref.ns.Try("wg", "show", ref.iface)
		return err
	})
	args := []string{"set", ref.iface, "private-key", ref.keyPath, "listen-port", "51820"}
	for _, o := range m.sites[:2] {
		args = append(args, "peer", o.pub, "endpoint", o.underlay()+":51820",
			"allowed-ips", o.prefix()+","+o.overlay()+"/32", "persistent-keepalive", "25")
	}
	ref.ns.Run(t, "wg", args...)
	ref.ns.Run(t, "ip", "addr", "add", ref.overlay()+"/32", "dev", ref.iface)
	ref.ns.Run(t, "ip", "link", "set", ref.iface, "up")
	for _, o := range m.sites[:2] {
		ref.ns.Run(t, "ip", "route", "add", o.prefix(), "dev", ref.iface)
		ref.ns.Run(t, "ip", "route", "add", o.overlay()+"/32", "dev", ref.iface)
	}

	m.startAll()
	for _, s := range m.sites {
		s.waitHandshakes(others(m, s)...)
	}
	for _, a := range m.sites {
		for _, b := range m.sites {
			if a != b {
				if err := a.ping(b, 2); err != nil {
					t.Error(err)
				}
			}
		}
	}
}

func others(m *testMesh, s *site) []*site {
	var out []*site
	for _, o := range m.sites {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// `dcmesh down` stops the agent and keeps the fail-closed routes; `down
// --purge` removes the interface and every route of ours, whether the agent
// runs or not.
func TestDownAndPurge(t *testing.T) {
	m := newMesh(t, 2)
	m.writeConfigs()
	m.startAll()
	a, b := m.sites[0], m.sites[1]
	a.waitHandshakes(b)
	bin := dcmeshBinary(t)

	out := a.ns.Run(t, bin, "down", "--config", a.cfgPath)
	if !strings.Contains(out, "agent stopping") {
		t.Errorf("down said: %s", out)
	}
	netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, "agent exits", func() error {
		if !a.agent.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if r := a.ns.Run(t, "ip", "route", "show", "proto", "220"); !strings.Contains(r, "unreachable "+b.prefix()) || strings.Contains(r, " dev ") {
		t.Errorf("after down, want only fail-closed routes:\n%s", r)
	}
	// Agent gone: purge does the work itself.
	out = a.ns.Run(t, bin, "down", "--purge", "--config", a.cfgPath)
	if !strings.Contains(out, "agent not running; removed") {
		t.Errorf("down --purge said: %s", out)
	}
	if r := a.ns.Run(t, "ip", "route", "show", "table", "all", "proto", "220"); strings.TrimSpace(r) != "" {
		t.Errorf("routes left after purge:\n%s", r)
	}
	// Agent running: it purges on its way out.
	b.ns.Run(t, bin, "down", "--purge", "--config", b.cfgPath)
	netconfigtest.Eventually(t, 10*time.Second, 50*time.Millisecond, "purged", func() error {
		if r := b.ns.Run(t, "ip", "route", "show", "table", "all", "proto", "220"); strings.TrimSpace(r) != "" {
			return fmt.Errorf("routes left:\n%s", r)
		}
		if l, err := b.ns.Try("ip", "link", "show", b.iface); err == nil {
			return fmt.Errorf("link left: %s", l)
		}
		return nil
	})
}
