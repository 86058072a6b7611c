package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// uplinkHold is the test's health.uplink_hold: one return trial runs while
// the first uplink is still cut, and fails; the return to the repaired one
// follows site2's packets (the hold's doubling and the trials on a fake
// clock are TestUplink* in mesh).
const uplinkHold = 3 * time.Second

// TestUplinkFailoverAndShadowedRoutes: site2 has two uplinks (two links,
// two subnets, routed by the underlay namespace) and announces both; probes
// at 100 ms × 3, a ping at 100/s from site1's hosts to site2's. Cutting
// site2's first uplink silently makes site1's probes go down and site1 try
// the second endpoint (the longest silence of the ping is measured); once
// site2's routing sends through its second uplink the session comes up
// there, and site1 stays across a resync without a loss (a reconcile must
// not put the dead endpoint back). After the hold site1 tries the first
// again, still cut: the trial fails, briefly, and site1 goes back to the
// second. Repairing the first (site2 sends from it again) brings site1 back
// without a loss. Then a more specific route of another protocol in site1
// shadows site2's prefix: status names it, health is critical; removing it
// makes site1 healthy again.
func TestUplinkFailoverAndShadowedRoutes(t *testing.T) {
	requireTool(t, "nft", "tcpdump")
	start := time.Now()
	m := newMesh(t, 2)
	a, b := m.sites[0], m.sites[1]
	// site2's second uplink: its own link and subnet, routed by the
	// underlay namespace, with a source rule so that what leaves from its
	// address leaves through it (as a multihomed gateway's would).
	secondNet := fmt.Sprintf("172.16.%d", m.subnet)
	second := secondNet + ".2"
	netconfigtest.Veth(t, b.ns, "eth1", m.ul, "ul2b")
	m.ul.Run(t, "ip", "addr", "add", secondNet+".254/24", "dev", "ul2b")
	m.ul.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	b.ns.Run(t, "ip", "addr", "add", second+"/24", "dev", "eth1")
	b.ns.Run(t, "ip", "route", "add", "default", "via", secondNet+".254", "dev", "eth1", "table", "100")
	b.ns.Run(t, "ip", "rule", "add", "from", second, "table", "100")
	a.ns.Run(t, "ip", "route", "add", secondNet+".0/24", "via", fmt.Sprintf("192.168.%d.254", m.subnet))
	caDir := m.newCA("ca")
	a.enroll(caDir, nil)
	b.enroll(caDir, []string{a.seed()}, "--underlay", secondNet+".0/24")
	first := b.underlay()
	cfg, err := os.ReadFile(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	one := fmt.Sprintf("endpoint: %q\n", first+":51820")
	if !strings.Contains(string(cfg), one) {
		t.Fatalf("site2's configuration has no %q:\n%s", one, cfg)
	}
	two := fmt.Sprintf("endpoints: [%q, %q]\n", first+":51820", second+":51820")
	if err := os.WriteFile(b.cfgPath, []byte(strings.Replace(string(cfg), one, two, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.sites {
		s.appendConfig(fmt.Sprintf("health:\n  probe_interval: 100ms\n  uplink_hold: %s\n", uplinkHold))
	}
	m.startAll()
	m.waitFullMesh(a, b)
	waitFor(t, 20*time.Second, "site1 probes site2 on its first uplink", func() error {
		return a.expectUplink(b, first, 0, control.ProbeUp)
	})
	t.Logf("mesh up in %s", time.Since(start).Round(100*time.Millisecond))

	ping := a.ns.Start(t, "ping", "ping", "-D", "-n", "-i", "0.01", "-W", "1", "-I", a.host(), b.host())
	ping.WaitOutput(t, "icmp_seq=50 ", 10*time.Second)

	// Cut the first uplink silently: nothing reaches site2's first address
	// or leaves from it (nft). site1's probes go down and it tries the
	// second endpoint; site2's routing then sends to site1 through the
	// second uplink, as a multihomed gateway's does once it notices, and the
	// session comes up there: settled. (Sooner, site1 would simply follow
	// site2's packets; see the return below.)
	cutAt := float64(time.Now().UnixMicro()) / 1e6
	b.ns.Run(t, "nft", fmt.Sprintf("add table inet dcmcut; add chain inet dcmcut in { type filter hook input priority 0; }; add chain inet dcmcut out { type filter hook output priority 0; }; "+
		"add rule inet dcmcut in ip daddr %s drop; add rule inet dcmcut out ip saddr %s drop", first, first))
	netconfigtest.Eventually(t, 5*time.Second, 20*time.Millisecond, "site1 trying site2's second uplink", func() error {
		for _, p := range a.status().Peers {
			if p.Site == b.name && p.Uplinks != nil && p.Uplinks.Phase == "trying" && p.Uplinks.InUse == second+":51820" {
				return nil
			}
		}
		return fmt.Errorf("not trying the second uplink")
	})
	switchedAt := float64(time.Now().UnixMicro()) / 1e6
	egress := []string{fmt.Sprintf("192.168.%d.1/32", m.subnet), "via", secondNet + ".254", "dev", "eth1", "src", second}
	b.ns.Run(t, "ip", append([]string{"route", "add"}, egress...)...)
	waitFor(t, 10*time.Second, "site1 settled on site2's second uplink", func() error {
		return a.expectUplink(b, second, 1, "")
	})
	settledAt := float64(time.Now().UnixMicro()) / 1e6
	// After the hold, site1 tries the first uplink again; it is still cut,
	// site2's packets keep coming from the second, the device follows them,
	// and the trial fails: back to the second.
	trialAt := a.logTime(10*time.Second, fmt.Sprintf(`from=%s:51820 to=%s:51820 phase=returning`, second, first))
	a.agent.WaitOutput(t, fmt.Sprintf(`from=%s:51820 to=%s:51820 phase=settled`, first, second), 5*time.Second)
	waitFor(t, 10*time.Second, "replies for 1 s after the failed return trial", func() error {
		if r := pingReplies(ping.Output()); len(r) == 0 || r[len(r)-1].at < trialAt+1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := a.expectUplink(b, second, -1, control.ProbeUp); err != nil {
		t.Fatal(err)
	}
	if ep := a.wgShow("endpoints")[b.pub]; ep != second+":51820" {
		t.Fatalf("wg show on site1: site2's endpoint %s, want %s", ep, second+":51820")
	}

	restoredAt := float64(time.Now().UnixMicro()) / 1e6
	b.ns.Run(t, "nft", "delete table inet dcmcut")
	b.ns.Run(t, "ip", append([]string{"route", "del"}, egress...)...)
	waitFor(t, 10*time.Second, "site1 back on site2's first uplink", func() error {
		if ep := a.wgShow("endpoints")[b.pub]; ep != first+":51820" {
			return fmt.Errorf("wg show: site2's endpoint %s", ep)
		}
		return a.expectUplink(b, first, -1, "")
	})
	backAt := float64(time.Now().UnixMicro()) / 1e6
	waitFor(t, 5*time.Second, "replies after the return", func() error {
		if r := pingReplies(ping.Output()); len(r) == 0 || r[len(r)-1].at < backAt+0.5 {
			return fmt.Errorf("no reply 0.5 s after the return")
		}
		return nil
	})
	ping.Interrupt(5 * time.Second)
	replies := pingReplies(ping.Output())
	silence := longestGap(replies, cutAt-0.05, settledAt)
	lostOnSecond := lostBetween(replies, settledAt+0.1, trialAt-0.05)
	trialGap := longestGap(replies, trialAt-0.05, trialAt+1)
	lost := lostBetween(replies, restoredAt, backAt+0.5)
	t.Logf("first uplink cut: probes down and the second endpoint tried within %d ms, longest silence %d ms (ping every 10 ms), settled on the second uplink %.2f s after the cut; %d replies lost on it over %.1f s (a resync every 2 s); "+
		"the failed return trial after the hold cost %d ms; restored: back on the first %.1f s later, %d echo replies lost around the return",
		int((switchedAt-cutAt)*1000), int(silence*1000), settledAt-cutAt, lostOnSecond, trialAt-settledAt, int(trialGap*1000), backAt-restoredAt, lost)
	if trialAt-settledAt < 2.1 {
		t.Errorf("only %.1f s on the second uplink before the return trial: want a resync (2 s) in between", trialAt-settledAt)
	}
	if trialGap > 0.5 {
		t.Errorf("the failed return trial silenced traffic for %.2f s, want ≤ one probe interval and some (0.5 s)", trialGap)
	}
	if lostOnSecond > 0 {
		t.Errorf("%d echo replies lost while on the second uplink, want 0", lostOnSecond)
	}
	if silence > 1.5 {
		t.Errorf("traffic was silent %.2f s after the cut, want ≤ 1.5 s", silence)
	}
	if lost > 0 {
		t.Errorf("%d echo replies lost while returning to the repaired uplink, want 0", lost)
	}

	a.checkShadowing(b)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// expectUplink checks what status says of o's uplinks: two endpoints, the
// one in use, the failovers (unless negative), and (if given) the probe
// state.
func (s *site) expectUplink(o *site, inUse string, failovers int, probe control.ProbeState) error {
	for _, p := range s.status().Peers {
		if p.Site != o.name || p.Role != control.RoleCurrent {
			continue
		}
		u := p.Uplinks
		switch {
		case u == nil:
			return fmt.Errorf("status: no uplinks for %s", o.name)
		case len(u.Endpoints) != 2 || u.InUse != inUse+":51820" || (failovers >= 0 && u.Failovers != uint64(failovers)) || u.Phase != "settled":
			return fmt.Errorf("status: %s uplinks %+v, want %s in use, %d failovers, settled", o.name, *u, inUse, failovers)
		case probe != "" && (p.Probe == nil || p.Probe.State != probe):
			return fmt.Errorf("status: %s probe %+v, want %s", o.name, p.Probe, probe)
		}
		return nil
	}
	return fmt.Errorf("status: no peer %s", o.name)
}

// checkShadowing adds a route of another protocol, more specific than o's
// prefix, and checks status and health before and after removing it.
func (s *site) checkShadowing(o *site) {
	t := s.m.t
	t.Helper()
	waitFor(t, 10*time.Second, "healthy before the shadowing route", func() error {
		if h, code := s.health(); code != 0 {
			return fmt.Errorf("health %d %q", code, h.Reasons)
		}
		return nil
	})
	shadow := fmt.Sprintf("10.%d.0.0/25", o.idx)
	gw := fmt.Sprintf("192.168.%d.254", s.m.subnet)
	s.ns.Run(t, "ip", "route", "add", shadow, "via", gw, "proto", "bgp", "metric", "20")
	addedAt := time.Now()
	waitFor(t, 10*time.Second, "status lists the shadowing route", func() error {
		for _, p := range s.status().Peers {
			if p.Site != o.name {
				continue
			}
			if len(p.Shadowed) != 1 {
				return fmt.Errorf("%s shadowed %+v", o.name, p.Shadowed)
			}
			sh := p.Shadowed[0]
			if sh.Prefix != o.prefix() || sh.Dst != shadow || sh.Protocol != "bgp" || sh.Table != 254 || len(sh.Dev) != 1 || sh.Dev[0] != "eth0" {
				return fmt.Errorf("shadowed route %+v", sh)
			}
			return nil
		}
		return fmt.Errorf("no peer %s", o.name)
	})
	h, code := s.health()
	if code != 2 || h.Status != control.Critical || !strings.Contains(strings.Join(h.Reasons, "\n"), "prefix "+o.prefix()+" of peer "+o.name+" is shadowed by the route "+shadow+" via "+gw) {
		t.Fatalf("health with a shadowing route: %d %q, want critical naming the prefix and the route", code, h.Reasons)
	}
	t.Logf("shadowing route seen in %s: %s", time.Since(addedAt).Round(100*time.Millisecond), h.Reasons)
	s.ns.Run(t, "ip", "route", "del", shadow, "via", gw, "proto", "bgp", "metric", "20")
	waitFor(t, 10*time.Second, "healthy without the shadowing route", func() error {
		if h, code := s.health(); code != 0 {
			return fmt.Errorf("health %d %q", code, h.Reasons)
		}
		return nil
	})
}

// logTime waits for a line of s's agent log containing what and returns
// its time (unix seconds).
func (s *site) logTime(timeout time.Duration, what string) float64 {
	t := s.m.t
	t.Helper()
	s.agent.WaitOutput(t, what, timeout)
	for _, l := range strings.Split(s.agent.Output(), "\n") {
		if !strings.Contains(l, what) {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 0 {
			if at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time=")); err == nil {
				return float64(at.UnixMicro()) / 1e6
			}
		}
		t.Fatalf("no time in %q", l)
	}
	t.Fatalf("%q not in the log", what)
	return 0
}

// pingReply is one echo reply of `ping -D`.
type pingReply struct {
	at  float64 // unix seconds
	seq int
}

var pingReplyLine = regexp.MustCompile(`\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) `)

func pingReplies(out string) []pingReply {
	var rs []pingReply
	for _, m := range pingReplyLine.FindAllStringSubmatch(out, -1) {
		at, _ := strconv.ParseFloat(m[1], 64)
		seq, _ := strconv.Atoi(m[2])
		rs = append(rs, pingReply{at, seq})
	}
	return rs
}

// longestGap is the longest time between two replies, of those that cover
// [from, to].
func longestGap(rs []pingReply, from, to float64) float64 {
	gap := 0.0
	for i := 1; i < len(rs); i++ {
		if rs[i].at >= from && rs[i-1].at <= to {
			gap = max(gap, rs[i].at-rs[i-1].at)
		}
	}
	return gap
}

// lostBetween counts the sequence numbers missing among the replies
// received in [from, to].
func lostBetween(rs []pingReply, from, to float64) int {
	lo, hi, n := -1, -1, 0
	for _, r := range rs {
		if r.at < from || r.at > to {
			continue
		}
		if lo < 0 {
			lo = r.seq
		}
		hi = r.seq
		n++
	}
	if lo < 0 {
		return 0
	}
	return hi - lo + 1 - n
}
