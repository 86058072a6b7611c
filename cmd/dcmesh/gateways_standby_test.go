package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// TestGatewaysStandby: site2.1 is a standby (`gateway_weight: 0`). site1
// holds it (a handshake and a probe session on its slot-1 interface) but
// routes site2's prefix through site2.0 alone, so the standby carries
// nothing but probes and keepalives. When site2.0's WireGuard UDP is cut
// silently, the standby takes every flow; uncut, the traffic goes back to
// site2.0 after the probes' hold and the standby is idle again.
func TestGatewaysStandby(t *testing.T) {
	requireTool(t, "nft")
	m := newMesh(t, 3)
	a, b0, b1 := m.sites[0], m.sites[1], m.sites[2]
	caDir := m.newCA("ca")
	a.enroll(caDir, nil)
	b0.enroll(caDir, []string{a.seed()})
	b1.enrollAs(caDir, []string{a.seed()}, b0.name, b0.prefix(), "--gateway", "1")
	b1.appendConfig("gateway_weight: 0\n")
	b1.ns.Run(t, "ip", "addr", "add", b0.host()+"/32", "dev", "lo")
	m.startAll()
	slot1 := a.iface + "g1"
	a.waitProbesUp(t, "site2", "site2.1")
	waitFor(t, 10*time.Second, "site2's prefix through site2.0 alone", func() error {
		return a.expectTunnel(b0.prefix(), a.iface)
	})

	recv0, recv1 := startGatewayFlows(t, b0, "recv", b0.host()), startGatewayFlows(t, b1, "recv", b0.host())
	send := startGatewayFlows(t, a, "send", b0.host())
	t.Cleanup(func() {
		send.p.Interrupt(5 * time.Second)
		recv0.p.Interrupt(5 * time.Second)
		recv1.p.Interrupt(5 * time.Second)
	})
	// idle checks that the standby's slot carries no flows while site2.0
	// does: over the time site2.0 gets 100 kB, the standby gets at most
	// what probes (5/s of ~100 bytes) and keepalives send, with room.
	idle := func(when string) {
		t.Helper()
		before := txBytes(a.wgAll("transfer"), slot1, b1.pub)
		a.waitSent(a.iface, b0.pub, 100000, "flows through site2.0 "+when)
		if sent := txBytes(a.wgAll("transfer"), slot1, b1.pub) - before; sent > 20000 {
			t.Errorf("%s: the standby site2.1 was sent %d bytes while site2.0 carried the flows; want only probes and keepalives", when, sent)
		}
	}
	idle("before the cut")
	a.expectGroupStatus(t, map[string]bool{"site2": true, "site2.1": false}, map[string]string{"site2": a.iface, "site2.1": slot1})

	cutAt := time.Now()
	b0.ns.Run(t, "nft", "add table inet dcmsb; add chain inet dcmsb in { type filter hook input priority 0; }; add chain inet dcmsb out { type filter hook output priority 0; }; "+
		"add rule inet dcmsb in udp dport 51820-51823 drop; add rule inet dcmsb out udp sport 51820-51823 drop")
	netconfigtest.Eventually(t, 10*time.Second, 20*time.Millisecond, "the standby alone in the group", func() error {
		return a.expectTunnel(b0.prefix(), slot1)
	})
	took := time.Since(cutAt)
	a.expectGroupStatus(t, map[string]bool{"site2": false, "site2.1": true}, nil)
	a.waitSent(slot1, b1.pub, 100000, "flows through the standby")

	uncutAt := time.Now()
	b0.ns.Run(t, "nft", "delete table inet dcmsb")
	netconfigtest.Eventually(t, 30*time.Second, 20*time.Millisecond, "back to site2.0 alone", func() error {
		return a.expectTunnel(b0.prefix(), a.iface)
	})
	back := time.Since(uncutAt)
	idle("after the uncut")
	// A drained gateway 1 shows as draining at its peers (by node name:
	// gateway 0 of the same site does not).
	b1.ns.Run(t, dcmeshBinary(t), "drain", "--config", b1.cfgPath)
	waitFor(t, 10*time.Second, "site1 sees site2.1 draining, site2 not", func() error {
		got := map[string]bool{}
		for _, p := range a.status().Peers {
			got[p.Node] = p.Draining
		}
		if !got["site2.1"] || got["site2"] {
			return fmt.Errorf("draining by node: %v", got)
		}
		return nil
	})
	t.Logf("standby: took the group %d ms after site2.0 was cut; site2.0 back %.1f s after the uncut (probes' hold 2 s)", took.Milliseconds(), back.Seconds())
	if back < 1900*time.Millisecond {
		t.Errorf("traffic went back to site2.0 %.2f s after the uncut, before the probes' hold of 2 s", back.Seconds())
	}
}

// expectGroupStatus checks s's status: each node's in_group as want says
// and, where ifaces names one, the interface it is held on.
func (s *site) expectGroupStatus(t *testing.T, want map[string]bool, ifaces map[string]string) {
	t.Helper()
	waitFor(t, 5*time.Second, "status shows the group", func() error {
		for _, p := range s.status().Peers {
			w, ok := want[p.Node]
			if !ok {
				continue
			}
			if p.InGroup == nil || *p.InGroup != w {
				return fmt.Errorf("%s: in_group %v, want %v", p.Node, p.InGroup, w)
			}
			if i, ok := ifaces[p.Node]; ok && p.Interface != i {
				return fmt.Errorf("%s: interface %q, want %q", p.Node, p.Interface, i)
			}
		}
		return nil
	})
}
