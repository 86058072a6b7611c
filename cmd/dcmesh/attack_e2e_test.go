package main

// The attacks of issue 15 ("Availability, from the network"), each against
// real agents in namespaces, with the attack program in a namespace of its
// own on the underlay. During and after every attack the attacked agent must
// answer status within 1 s, repair a deleted route within 2 s, stay under
// 150 MB of RSS, lose no probe traffic with a peer (even while a site
// rotates) and stop within 5 s of SIGTERM (attackWatch checks all of it).
//
//	go test -count=1 -v -run '^TestAttack' ./cmd/dcmesh/

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/hashicorp/memberlist"
)

// 1. A gossip-key holder with no pinned certificate joins ten times a
// second, its push/pull state 4,096 records, each signed under its own
// certificate from a CA nobody pins; a peer rotates meanwhile.
func TestAttackGossipFlood(t *testing.T) {
	am := newAttackMesh(t)
	state := floodState(t, am.m.dir, trust.MaxStateRecords)
	w := am.watch(t, watchOptions{rotate: []*site{am.peer}, atEnd: func() {
		requireCounted(t, am.victim.s, "records refused as unknown_ca", func(st control.Status) uint64 { return st.RecordsRejected["unknown_ca"] })
		requireCounted(t, am.victim.s, "records skipped as refused before", func(st control.Status) uint64 { return st.Untrusted.RecordsSkipped })
	}})
	atk := am.attacker(am.victim.s.seed(), "flood", am.gossipKeyEnv(), "ATTACK_STATE="+state, "ATTACK_RATE=10")
	w.during(atk, 15*time.Second)
	w.finish()
	w.requireAttack(50, "pushpulls", "failed")
}

// requireCounted checks that s's status counts what an attack sent.
func requireCounted(t *testing.T, s *site, what string, count func(control.Status) uint64) {
	t.Helper()
	if n := count(s.status()); n == 0 {
		t.Errorf("status --json does not count %s", what)
	} else {
		t.Logf("status counts %d %s", n, what)
	}
}

// 1b. The same key holder, its push/pull state trust.MaxStateSize of random
// bytes (it does not compress and does not decode): what costs the gossip
// layer most memory per stream.
func TestAttackLargeStates(t *testing.T) {
	am := newAttackMesh(t)
	junk := make([]byte, trust.MaxStateSize)
	_, _ = rand.Read(junk)
	path := filepath.Join(am.m.dir, "junk-state")
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	w := am.watch(t, watchOptions{rotate: []*site{am.peer}})
	atk := am.attacker(am.victim.s.seed(), "flood", am.gossipKeyEnv(), "ATTACK_STATE="+path, "ATTACK_RATE=10")
	w.during(atk, 15*time.Second)
	w.finish()
	w.requireAttack(20, "pushpulls", "failed")
}

// 2. With no key at all: 100 TCP streams to the gossip port, each with the
// cluster's label and an encrypted-stream header announcing 20 MB, then
// 19.5 MB of random bytes; reconnected when memberlist times them out.
func TestAttackStreamMemory(t *testing.T) {
	am := newAttackMesh(t)
	w := am.watch(t, watchOptions{rotate: []*site{am.peer}, atEnd: func() {
		requireCounted(t, am.victim.s, "refused gossip streams", func(st control.Status) uint64 {
			var n uint64
			for _, v := range st.Untrusted.GossipStreamsRefused {
				n += v
			}
			return n
		})
	}})
	atk := am.attacker(am.victim.s.seed(), "streams", "ATTACK_CONNS=100", "ATTACK_ANNOUNCE=20000000", "ATTACK_SEND=19500000")
	w.during(atk, 15*time.Second)
	w.finish()
	w.requireAttack(100, "connections")
}

// 3. A gossip-key holder joins under site2's name before site2's agent
// starts. site2 must still complete `rotate --wait` (it gets its acks), and
// rotations of the other sites must not wait out their ack timeouts (site2's
// acks reach them).
func TestAttackNameSquatting(t *testing.T) {
	m, caDir := newGossipMesh(t, 3)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]
	am := &attackMesh{m: m, caDir: caDir, peer: s1, third: s3}
	s1.start()
	s3.start()
	m.waitFullMesh(s1, s3)
	atk := am.attacker(s1.seed(), "squat", am.gossipKeyEnv(), "ATTACK_NAME="+s2.name)
	for _, mb := range s1.status().Gossip.Members {
		if mb.Name == s2.name {
			t.Logf("site1 lists %s at %s (%s) before the real site2 started", mb.Name, mb.Addr, mb.State)
		}
	}
	am.victim = startVictim(s2)
	start := time.Now()
	if err := waitSoft(30*time.Second, func() error { return fullMesh(s1, s2, s3) }); err != nil {
		t.Errorf("the real site2 does not reach a full mesh with a squatter on its name: %v", err)
	} else {
		t.Logf("full mesh %s after the real site2 started", time.Since(start).Round(time.Millisecond))
	}
	// site1 rotates first, while the probes with site2 run.
	w := am.watch(t, watchOptions{rotate: []*site{s1, s2, s3}})
	w.during(atk, 16*time.Second)
	w.finish()
	w.requireAttack(1, "attempts")
}

// 4. Garbage UDP datagrams and garbage TCP connections on the gossip port,
// thousands a second: the agent's log must stay bounded.
func TestAttackLogFlood(t *testing.T) {
	am := newAttackMesh(t)
	w := am.watch(t, watchOptions{rotate: []*site{am.peer}, atEnd: func() {
		requireCounted(t, am.victim.s, "garbage on the gossip port", func(st control.Status) uint64 { return st.Untrusted.GossipMalformed })
	}})
	atk := am.attacker(am.victim.s.seed(), "logflood", "ATTACK_UDP_RATE=3000", "ATTACK_TCP_RATE=150")
	w.during(atk, 12*time.Second)
	w.finish()
	w.requireAttack(10000, "datagrams")
	w.requireAttack(500, "tcp_connections", "tcp_refused")
	// The bound leaves room for what the agent logs about the watch's own
	// doings: a line per repaired route, a few for the peer's rotation.
	if w.attackLines > 50 {
		t.Errorf("the attacked agent logged %d lines during the attack, want at most 50 (rate-limited, aggregated)", w.attackLines)
	}
}

// 5. 300 fake names joined with the gossip key: only the certified sites are
// members, in status and in known-peers.json.
func TestAttackGhostMembers(t *testing.T) {
	am := newAttackMesh(t)
	v := am.victim.s
	var atk *netconfigtest.Proc
	certified := map[string]bool{}
	for _, s := range am.m.sites[:3] {
		certified[s.name] = true
	}
	w := am.watch(t, watchOptions{rotate: []*site{am.peer}, atEnd: func() {
		if err := waitSoft(30*time.Second, func() error {
			if !strings.Contains(atk.Output(), "attempted=300 ") {
				return fmt.Errorf("%s", lastLineWith(atk.Output(), "attack-stat"))
			}
			return nil
		}); err != nil {
			t.Errorf("the ghosts did not all try to join: %v", err)
		}
		checkOnlyCertified(t, v, certified)
	}})
	atk = am.attacker(v.seed(), "ghosts", am.gossipKeyEnv(), "ATTACK_GHOSTS=300")
	w.during(atk, 15*time.Second)
	w.finish()
	w.requireAttack(300, "attempted")
}

// checkOnlyCertified checks that s's status and known-peers.json hold only
// certified site names.
func checkOnlyCertified(t *testing.T, s *site, certified map[string]bool) {
	st := s.status()
	var ghosts []string
	for _, mb := range st.Gossip.Members {
		if !certified[mb.Name] {
			ghosts = append(ghosts, mb.Name)
		}
	}
	t.Logf("status: members by state %v, %d members (%d uncertified)", st.Gossip.MembersByState, len(st.Gossip.Members), len(ghosts))
	if len(ghosts) > 0 || st.Gossip.MembersByState["alive"] != len(certified) {
		t.Errorf("status counts uncertified members: %v alive (want %d); uncertified: %s", st.Gossip.MembersByState, len(certified), strings.Join(firstN(ghosts, 5), ", "))
	}
	raw, err := os.ReadFile(filepath.Join(s.stateDir, "known-peers.json"))
	if err != nil {
		t.Errorf("known-peers.json: %v", err)
		return
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil {
		t.Errorf("known-peers.json: %v", err)
	}
	var bad []string
	for name := range known {
		if !certified[name] {
			bad = append(bad, name)
		}
	}
	t.Logf("known-peers.json: %d names, %d uncertified", len(known), len(bad))
	if len(bad) > 0 {
		t.Errorf("known-peers.json persists %d uncertified names: %s", len(bad), strings.Join(firstN(bad, 5), ", "))
	}
}

// waitSoft polls cond for up to timeout and returns its last error.
func waitSoft(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fullMesh reports whether every site has a handshake with every other.
func fullMesh(sites ...*site) error {
	for _, s := range sites {
		hs := s.handshakes()
		for _, o := range sites {
			if o != s && hs[o.pub] == 0 {
				return fmt.Errorf("%s has no handshake with %s", s.name, o.name)
			}
		}
	}
	return nil
}

// floodState writes a push/pull state of n records, each signed under its
// own certificate from a CA nobody pins, and returns its path.
func floodState(t *testing.T, dir string, n int) string {
	start := time.Now()
	ca := trusttest.NewCA(t) // cluster "test", like the mesh's, but not its CA
	recs := make([][]byte, n)
	for i := range recs {
		prefix := fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256)
		cert, key := trusttest.Issue(t, ca, fmt.Sprintf("flood-%04d", i), prefix)
		recs[i] = trusttest.SignedRecord(t, cert, key, trusttest.RecordOptions{}).Raw
	}
	st, err := trust.EncodeState(trust.State{Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flood-state.der")
	if err := os.WriteFile(path, st, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("flood state: %d records, %d bytes, made in %s", n, len(st), time.Since(start).Round(time.Millisecond))
	return path
}

// ---- the attack programs ----

// attackEnv is an attack program's settings, from its environment.
type attackEnv struct {
	from   string // this namespace's underlay address
	target string // IP:PORT of the attacked gossip port
	label  string
	key    []byte // the gossip key, if the attack has one
}

// TestHelperAttacker is not a test: it is the attack programs, one per
// mode, run by attackMesh.attacker inside the attackers' namespace.
//
//	DCMESH_ATTACK=flood     ATTACK_KEY ATTACK_STATE ATTACK_RATE (joins/s)
//	DCMESH_ATTACK=streams   ATTACK_CONNS ATTACK_ANNOUNCE ATTACK_SEND (bytes)
//	DCMESH_ATTACK=squat     ATTACK_KEY ATTACK_NAME
//	DCMESH_ATTACK=logflood  ATTACK_UDP_RATE ATTACK_TCP_RATE (per second)
//	DCMESH_ATTACK=ghosts    ATTACK_KEY ATTACK_GHOSTS
//
// and ATTACK_FROM, ATTACK_TARGET, ATTACK_LABEL, ATTACK_FOR for all. Each
// prints "attack-started" once under way and an "attack-stat" line a second.
func TestHelperAttacker(t *testing.T) {
	mode := os.Getenv("DCMESH_ATTACK")
	if mode == "" {
		t.Skip("helper process: the attack programs of the attack tests")
	}
	a := attackEnv{from: os.Getenv("ATTACK_FROM"), target: os.Getenv("ATTACK_TARGET"), label: os.Getenv("ATTACK_LABEL")}
	if f := os.Getenv("ATTACK_KEY"); f != "" {
		raw, err := os.ReadFile(f)
		if err == nil {
			a.key, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	dur, err := time.ParseDuration(os.Getenv("ATTACK_FOR"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	switch mode {
	case "flood":
		err = attackFlood(ctx, a)
	case "streams":
		err = attackStreams(ctx, a)
	case "squat":
		err = attackSquat(ctx, a)
	case "logflood":
		err = attackLogFlood(ctx, a)
	case "ghosts":
		err = attackGhosts(ctx, a)
	default:
		err = fmt.Errorf("unknown attack %q", mode)
	}
	if err != nil {
		fmt.Println("attack-error", err)
		t.Fatal(err)
	}
}

func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		panic(fmt.Sprintf("%s: %v", name, err))
	}
	return n
}

// every prints f's report each second until ctx is done, and a last one
// on SIGTERM, which ends the attack.
func every(ctx context.Context, f func() string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			fmt.Println("attack-stat " + f())
			os.Exit(0)
		case <-tick.C:
			fmt.Println("attack-stat " + f())
		}
	}
}

// memberlistNode is a gossip node with the attack's key and label; with a
// state, it offers that state in every push/pull. passive turns off its
// own probes, gossip and push/pull (it still answers).
func memberlistNode(a attackEnv, name string, port int, state []byte, passive bool) (*memberlist.Memberlist, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.BindPort = a.from, port
	mc.AdvertiseAddr, mc.AdvertisePort = a.from, port
	mc.SecretKey = a.key
	mc.Label = a.label
	mc.EnableCompression = false
	mc.LogOutput = io.Discard
	if state != nil {
		mc.Delegate = stateDelegate(state)
	}
	if passive {
		mc.ProbeInterval, mc.GossipInterval, mc.PushPullInterval = 0, 0, 0
	}
	return memberlist.Create(mc)
}

type stateDelegate []byte

func (d stateDelegate) NodeMeta(int) []byte                 { return nil }
func (d stateDelegate) NotifyMsg([]byte)                    {}
func (d stateDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d stateDelegate) LocalState(bool) []byte              { return d }
func (d stateDelegate) MergeRemoteState(buf []byte, _ bool) {}

// attackFlood joins RATE times a second (at most 4 joins in flight), each
// join a push/pull of the state.
func attackFlood(ctx context.Context, a attackEnv) error {
	state, err := os.ReadFile(os.Getenv("ATTACK_STATE"))
	if err != nil {
		return err
	}
	ml, err := memberlistNode(a, "intruder", 7946, state, false)
	if err != nil {
		return err
	}
	defer ml.Shutdown()
	var ok, failed, skipped atomic.Int64
	fmt.Println("attack-started")
	go every(ctx, func() string {
		return fmt.Sprintf("pushpulls=%d failed=%d skipped=%d state_bytes=%d", ok.Load(), failed.Load(), skipped.Load(), len(state))
	})
	sem := make(chan struct{}, 4)
	tick := time.NewTicker(time.Second / time.Duration(envInt("ATTACK_RATE")))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
			go func() {
				defer func() { <-sem }()
				if n, _ := ml.Join([]string{a.target}); n > 0 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}()
		default:
			skipped.Add(1)
		}
	}
}

// attackStreams keeps CONNS connections open to the gossip port, each
// announcing an encrypted stream of ANNOUNCE bytes and sending SEND bytes of
// it, then holding on; a connection the agent closes is opened again.
func attackStreams(ctx context.Context, a attackEnv) error {
	announce, send := envInt("ATTACK_ANNOUNCE"), envInt("ATTACK_SEND")
	junk := make([]byte, 1<<20)
	_, _ = rand.Read(junk)
	header := append(labelHeader(a.label), 10) // memberlist's encryptMsg
	header = binary.BigEndian.AppendUint32(header, uint32(announce))
	var conns, open, sent atomic.Int64
	fmt.Println("attack-started")
	go every(ctx, func() string {
		return fmt.Sprintf("connections=%d open=%d sent_mb=%d", conns.Load(), open.Load(), sent.Load()>>20)
	})
	var wg sync.WaitGroup
	for i := 0; i < envInt("ATTACK_CONNS"); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", a.target, 2*time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond) // the agent is not listening: try again
					continue
				}
				conns.Add(1)
				open.Add(1)
				opened := time.Now()
				dl, _ := ctx.Deadline()
				_ = c.SetDeadline(dl)
				_, err = c.Write(header)
				for n := 0; err == nil && n < send; {
					var k int
					k, err = c.Write(junk[:min(len(junk), send-n)])
					n += k
					sent.Add(int64(k))
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, c) // hold on until the agent gives up
				}
				c.Close()
				open.Add(-1)
				if time.Since(opened) < time.Second {
					// Refused at once: this attack is 100 streams, not a
					// connection flood (that is attackLogFlood's).
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// labelHeader is memberlist's label header: type 244, length, label.
func labelHeader(label string) []byte {
	return append([]byte{244, byte(len(label))}, label...)
}

// attackSquat joins as NAME, again every 2 s to keep the claim.
func attackSquat(ctx context.Context, a attackEnv) error {
	ml, err := memberlistNode(a, os.Getenv("ATTACK_NAME"), 7946, nil, false)
	if err != nil {
		return err
	}
	defer ml.Shutdown()
	var attempts, joined atomic.Int64
	go every(ctx, func() string {
		return fmt.Sprintf("attempts=%d joined=%d members=%d", attempts.Load(), joined.Load(), ml.NumMembers())
	})
	for ctx.Err() == nil {
		if n, _ := ml.Join([]string{a.target}); n > 0 {
			joined.Add(1)
		}
		if attempts.Add(1) == 1 {
			fmt.Println("attack-started")
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	return nil
}

// attackLogFlood sends UDP_RATE garbage datagrams and opens TCP_RATE
// garbage connections a second, half of each behind the cluster's label
// (past the label check, to the decryption).
func attackLogFlood(ctx context.Context, a attackEnv) error {
	udpRate, tcpRate := envInt("ATTACK_UDP_RATE"), envInt("ATTACK_TCP_RATE")
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	garbage := func(i int) []byte {
		b := junk[i%2048 : i%2048+64+i%448]
		if i%2 == 0 {
			return append(labelHeader(a.label), b...)
		}
		return b
	}
	u, err := net.Dial("udp", a.target)
	if err != nil {
		return err
	}
	defer u.Close()
	var datagrams, conns, refused atomic.Int64
	fmt.Println("attack-started")
	go every(ctx, func() string {
		return fmt.Sprintf("datagrams=%d tcp_connections=%d tcp_refused=%d", datagrams.Load(), conns.Load(), refused.Load())
	})
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var udpDue, tcpDue float64
	for i := 0; ctx.Err() == nil; {
		<-tick.C
		for udpDue += float64(udpRate) / 100; udpDue >= 1; udpDue-- {
			i++
			if _, err := u.Write(garbage(i)); err == nil {
				datagrams.Add(1)
			}
		}
		for tcpDue += float64(tcpRate) / 100; tcpDue >= 1; tcpDue-- {
			i++
			select {
			case sem <- struct{}{}:
			default:
				continue // 64 in flight: the agent is slow to accept
			}
			go func(k int) {
				defer func() { <-sem }()
				c, err := net.DialTimeout("tcp", a.target, time.Second)
				if err != nil {
					refused.Add(1)
					return
				}
				conns.Add(1)
				_ = c.SetDeadline(time.Now().Add(time.Second))
				_, _ = c.Write(garbage(k))
				c.Close()
			}(i)
		}
	}
	return nil
}

// attackGhosts runs GHOSTS passive memberlist nodes with fake names, each on
// a port of its own, and joins each to the target.
func attackGhosts(ctx context.Context, a attackEnv) error {
	n := envInt("ATTACK_GHOSTS")
	var created, attempted, joined atomic.Int64
	fmt.Println("attack-started")
	go every(ctx, func() string {
		return fmt.Sprintf("created=%d attempted=%d joined=%d ", created.Load(), attempted.Load(), joined.Load())
	})
	var nodes []*memberlist.Memberlist
	defer func() {
		for _, ml := range nodes {
			_ = ml.Shutdown()
		}
	}()
	base := netip.MustParseAddrPort(a.target).Port() + 10000
	for i := 0; i < n && ctx.Err() == nil; i++ {
		ml, err := memberlistNode(a, fmt.Sprintf("ghost-%03d", i), int(base)+i, nil, true)
		if err != nil {
			return err
		}
		nodes = append(nodes, ml)
		created.Add(1)
		if k, _ := ml.Join([]string{a.target}); k > 0 {
			joined.Add(1)
		}
		attempted.Add(1)
	}
	<-ctx.Done()
	return nil
}
