package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
)

// Four sites bootstrapped from nothing with the CLI (ca init, ca issue, init,
// agent) reach a full mesh: handshakes between all pairs, routes to every
// remote prefix, traffic between all pairs. A fifth site started later is
// learned by all.
func TestGossipBootstrapFullMesh(t *testing.T) {
	m, caDir := newGossipMesh(t, 4)
	start := time.Now()
	m.startAll()
	m.waitFullMesh(m.sites...)
	t.Logf("4 sites: full mesh (every pair handshaken) %s after the first agent started", time.Since(start).Round(time.Millisecond))
	if os.Getenv("DCMESH_DEBUG_LOGS") != "" {
		for _, s := range m.sites {
			t.Logf("%s:\n%s", s.name, s.agent.Output())
		}
	}
	for _, a := range m.sites {
		routes := a.ns.Run(t, "ip", "route", "show", "proto", "220")
		for _, b := range m.sites {
			if a == b {
				continue
			}
			if !strings.Contains(routes, b.prefix()+" dev "+a.iface) || !strings.Contains(routes, "unreachable "+b.prefix()) {
				t.Errorf("%s lacks routes for %s:\n%s", a.name, b.prefix(), routes)
			}
			if err := a.ping(b, 1); err != nil {
				t.Error(err)
			}
		}
	}

	// A fifth site joins later, through the third one.
	s5 := m.addSite(5)
	s5.enroll(caDir, []string{m.sites[2].seed()})
	join := time.Now()
	s5.start()
	m.waitFullMesh(m.sites...)
	t.Logf("5th site: handshaken with all 4 others %s after its agent started", time.Since(join).Round(time.Millisecond))
	for _, o := range m.sites[:4] {
		if err := s5.ping(o, 1); err != nil {
			t.Error(err)
		}
		if err := o.ping(s5, 1); err != nil {
			t.Error(err)
		}
	}
}

// Gossip between {1,2} and {3,4} is blocked with nftables for longer than
// failure detection: the tunnels keep carrying traffic, nothing is removed,
// and when gossip is unblocked the groups merge again with no restart.
func TestGossipPartitionKeepsDataPlane(t *testing.T) {
	requireTool(t, "nft")
	m, _ := newGossipMesh(t, 4)
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1, s3 := m.sites[0], m.sites[2]
	peersBefore := s1.allowedIPs()
	routesBefore := s1.ns.Run(t, "ip", "route", "show", "proto", "220")

	groups := [][]*site{m.sites[:2], m.sites[2:]}
	block := func(on bool) {
		for gi, g := range groups {
			var other []string
			for _, o := range groups[1-gi] {
				other = append(other, o.underlay())
			}
			set := "{ " + strings.Join(other, ", ") + " }"
			for _, s := range g {
				if !on {
					s.ns.Run(t, "nft", "delete", "table", "inet", "dcmtpart")
					continue
				}
				rules := fmt.Sprintf(`table inet dcmtpart {
  chain in { type filter hook input priority 0; ip saddr %[1]s tcp dport 7946 drop; ip saddr %[1]s udp dport 7946 drop; ip saddr %[1]s tcp sport 7946 drop; ip saddr %[1]s udp sport 7946 drop; }
  chain out { type filter hook output priority 0; ip daddr %[1]s tcp dport 7946 drop; ip daddr %[1]s udp dport 7946 drop; }
}`, set)
				f := filepath.Join(m.dir, s.name+".nft")
				if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
					t.Fatal(err)
				}
				s.ns.Run(t, "nft", "-f", f)
			}
		}
	}
	block(true)
	partitioned := time.Now()
	// Traffic across the partition all along: 5 pings a second.
	pinger := s1.ns.Start(t, "pinger", "ping", "-n", "-i", "0.2", "-W", "1", "-I", s1.host(), s3.host())
	waitFor(t, 60*time.Second, "site1 sees the other group as dead", func() error {
		st := s1.memberStates()
		if st["site3"] != "dead" || st["site4"] != "dead" {
			return fmt.Errorf("site1's view: %v", st)
		}
		return nil
	})
	t.Logf("failure detection declared the other group dead after %s", time.Since(partitioned).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // well past detection: any removal would have happened
	if got := s1.allowedIPs(); fmt.Sprint(got) != fmt.Sprint(peersBefore) {
		t.Errorf("peers changed during the partition:\nbefore %v\nafter  %v", peersBefore, got)
	}
	if got := s1.ns.Run(t, "ip", "route", "show", "proto", "220"); got != routesBefore {
		t.Errorf("routes changed during the partition:\nbefore\n%s\nafter\n%s", routesBefore, got)
	}
	pinger.Interrupt(5 * time.Second) // ping prints its statistics on SIGINT
	stats := pinger.Output()
	var sent, got int
	if _, err := fmt.Sscanf(pingSummary.FindString(stats), "%d packets transmitted, %d received", &sent, &got); err != nil || sent < 20 || sent-got > 1 {
		// One straggler is tolerated: on a loaded test host a reply can
		// miss ping's deadline; a torn-down tunnel loses them all.
		t.Errorf("traffic across the partition was disturbed:\n%s", sitetest.Tail(stats, 3))
	}
	t.Logf("during the partition: %s", strings.TrimSpace(sitetest.Tail(stats, 2)))

	block(false)
	healed := time.Now()
	waitFor(t, 60*time.Second, "groups merge after the partition heals", func() error {
		for _, s := range m.sites {
			for name, state := range s.memberStates() {
				if state != "alive" {
					return fmt.Errorf("%s sees %s as %s", s.name, name, state)
				}
			}
		}
		return nil
	})
	t.Logf("merged %s after gossip was unblocked, without restarts", time.Since(healed).Round(time.Millisecond))
	for _, s := range m.sites {
		if s.agent.Exited() {
			t.Errorf("%s's agent exited", s.name)
		}
	}
}

var pingSummary = regexp.MustCompile(`\d+ packets transmitted, \d+ received`)

// Rogue agents with the real gossip key but certificates from another CA —
// one claiming an existing site's name, one claiming another site's prefix —
// change nothing anywhere.
func TestGossipRogueCAChangesNothing(t *testing.T) {
	m, caDir := newGossipMesh(t, 3)
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1, s2 := m.sites[0], m.sites[1]
	type snapshot struct{ peers, routes string }
	snap := func() map[string]snapshot {
		out := map[string]snapshot{}
		for _, s := range m.sites {
			out[s.name] = snapshot{fmt.Sprint(s.allowedIPs()), s.ns.Run(t, "ip", "route", "show", "proto", "220")}
		}
		return out
	}
	before := snap()

	rogueCA := m.newCA("rogue-ca")
	gossipKey, err := os.ReadFile(filepath.Join(caDir, "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	// rogue 4 is "site2" (an existing name) with site1's prefix; rogue 5 is a
	// new name, also claiming site1's prefix.
	r4, r5 := m.addSite(4), m.addSite(5)
	r4.enrollRogue(rogueCA, gossipKey, s1.seed(), "10.1.0.0/25")
	r5.enrollRogue(rogueCA, gossipKey, s1.seed(), "10.1.0.128/25")
	r4.start()
	r5.start()
	waitFor(t, 20*time.Second, "site1 rejects the rogue records", func() error {
		if n := s1.status().RecordsRejected["unknown_ca"]; n == 0 {
			return fmt.Errorf("no unknown_ca rejection yet: %v", s1.status().RecordsRejected)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // let gossip spread whatever it would
	after := snap()
	for name, b := range before {
		if after[name] != b {
			t.Errorf("%s changed:\nbefore %+v\nafter  %+v", name, b, after[name])
		}
	}
	for _, a := range m.sites[:3] {
		for _, b := range m.sites[:3] {
			if a != b {
				if err := a.ping(b, 1); err != nil {
					t.Error(err)
				}
			}
		}
	}
	t.Logf("site1 rejected: %v; site2 rejected: %v", s1.status().RecordsRejected, s2.status().RecordsRejected)
}

// enrollRogue gives r a bundle from a foreign CA, with the real gossip key,
// claiming the given prefix, and renames it to claim when claim is set.
func (r *site) enrollRogue(rogueCA string, gossipKey []byte, seed, prefix string) {
	m := r.m
	name := r.name
	if r.idx == 4 {
		name = "site2" // an existing site's name
	}
	r.bundle = filepath.Join(m.dir, r.name+"-rogue-bundle")
	r.stateDir = filepath.Join(m.dir, r.name+"-rogue-state")
	m.cli("ca", "issue", "--dir", rogueCA, "--site", name, "--prefix", prefix, "--overlay", r.overlay(), "--out", r.bundle)
	if err := os.WriteFile(filepath.Join(r.bundle, "gossip.key"), gossipKey, 0o600); err != nil {
		m.t.Fatal(err)
	}
	out := m.cli("init", "--bundle", r.bundle, "--state-dir", r.stateDir, "--endpoint", r.underlay()+":51820", "--interface", r.iface, "--join", seed)
	r.pub = pubKeyLine.FindStringSubmatch(out)[1]
	r.cfgPath = filepath.Join(r.stateDir, "dcmesh.yaml")
	f, _ := os.OpenFile(r.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString("  profile: lan\n  rejoin_interval: 1s\nwireguard: userspace\n")
	f.Close()
	m.t.Cleanup(func() { _ = os.Remove(filepath.Join(r.stateDir, "control.sock")) })
}

// A certificate for a prefix overlapping an existing site's, issued from a
// copy of the CA directory taken before that site was certified: the newer
// certificate gets no route for the overlap and the older site's traffic is
// untouched, whichever started first.
func TestGossipOverlapOlderCertificateWins(t *testing.T) {
	for _, newerFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("newer-started-first=%v", newerFirst), func(t *testing.T) {
			m := newMesh(t, 4)
			caDir := m.newCA("ca")
			caCopy := filepath.Join(m.dir, "ca-copy")
			if out, err := exec.Command("cp", "-a", caDir, caCopy).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			s1, s2, s3, intruder := m.sites[0], m.sites[1], m.sites[2], m.sites[3]
			for i, s := range m.sites[:3] {
				var seeds []string
				if i > 0 {
					seeds = []string{s1.seed()}
				}
				s.enroll(caDir, seeds)
			}
			time.Sleep(1100 * time.Millisecond) // certificate times have 1 s resolution
			// The copy does not know site1, so it certifies an overlapping /25.
			overlap := "10.1.0.0/25"
			m.cli("ca", "issue", "--dir", caCopy, "--site", intruder.name, "--prefix", overlap, "--prefix", intruder.prefix(),
				"--overlay", intruder.overlay(), "--out", filepath.Join(m.dir, "intruder-bundle"))
			intruder.bundle = filepath.Join(m.dir, "intruder-bundle")
			intruder.stateDir = filepath.Join(m.dir, "intruder-state")
			out := m.cli("init", "--bundle", intruder.bundle, "--state-dir", intruder.stateDir, "--endpoint", intruder.underlay()+":51820",
				"--interface", intruder.iface, "--join", s2.seed())
			intruder.pub = pubKeyLine.FindStringSubmatch(out)[1]
			intruder.cfgPath = filepath.Join(intruder.stateDir, "dcmesh.yaml")
			f, _ := os.OpenFile(intruder.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
			_, _ = f.WriteString("  profile: lan\n  rejoin_interval: 1s\nwireguard: userspace\nresync_interval: 2s\n")
			f.Close()
			t.Cleanup(func() { _ = os.Remove(filepath.Join(intruder.stateDir, "control.sock")) })

			if newerFirst {
				intruder.start()
				s2.start()
				waitFor(t, 20*time.Second, "site2 learns the intruder first", func() error {
					if !strings.Contains(s2.allowedIPs()[intruder.pub], overlap) {
						return fmt.Errorf("site2 does not route %s to the intruder yet", overlap)
					}
					return nil
				})
				s1.start()
				s3.start()
			} else {
				m.startAll()
			}
			// site1 refuses the intruder's record outright: it claims part
			// of site1's own prefix.
			s1.waitHandshakes(s2, s3)
			for _, s := range []*site{s2, s3} {
				s.waitHandshakes(others(m, s)...)
			}
			intruder.waitHandshakesWith(false, s2, s3)
			waitFor(t, 10*time.Second, "site1 rejects the intruder", func() error {
				if n := s1.status().RecordsRejected["overlap_local"]; n == 0 {
					return fmt.Errorf("rejections: %v", s1.status().RecordsRejected)
				}
				return nil
			})
			if _, ok := s1.allowedIPs()[intruder.pub]; ok {
				t.Error("site1 has the intruder as a peer")
			}
			for _, obs := range []*site{s2, s3} {
				waitFor(t, 20*time.Second, obs.name+" gives the overlap to the older certificate", func() error {
					ips := obs.allowedIPs()
					if strings.Contains(ips[intruder.pub], overlap) {
						return fmt.Errorf("%s still routes %s to the intruder: %v", obs.name, overlap, ips)
					}
					if !strings.Contains(ips[s1.pub], s1.prefix()) || !strings.Contains(ips[intruder.pub], intruder.prefix()) {
						return fmt.Errorf("%s: unexpected allowed IPs %v", obs.name, ips)
					}
					return nil
				})
				if r := obs.ns.Run(t, "ip", "route", "show", overlap, "proto", "220"); strings.TrimSpace(r) != "" {
					t.Errorf("%s has a route for the overlap %s: %s", obs.name, overlap, r)
				}
				// 10.1.0.1 is inside the overlap: it must reach site1.
				if err := obs.ping(s1, 2); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
