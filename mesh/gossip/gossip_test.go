package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func newNode(t *testing.T, name string, key []byte, seeds ...string) *Gossip {
	t.Helper()
	return startNode(t, Config{NodeName: name, SecretKey: key, Seeds: seeds})
}

// startNode starts a node on a free loopback port, with the test cluster's
// label, the LAN profile and a fast rejoin unless cfg says otherwise.
func startNode(t *testing.T, cfg Config) *Gossip {
	t.Helper()
	if !cfg.Bind.IsValid() {
		cfg.Bind = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t))
	}
	if cfg.Label == "" {
		cfg.Label = testLabel
	}
	if cfg.Profile == "" {
		cfg.Profile = ProfileLAN
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = 200 * time.Millisecond
	}
	if cfg.KnownPeersFile == "" {
		cfg.KnownPeersFile = filepath.Join(t.TempDir(), "peers.json")
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go g.Run(ctx)
	t.Cleanup(func() { cancel(); _ = g.Shutdown() })
	return g
}

const testLabel = "dcmesh:test"

// certify gives every node the roster of all of them, as the agent does once
// it holds their records.
func certify(nodes ...*Gossip) map[string]netip.AddrPort {
	r := map[string]netip.AddrPort{}
	for _, g := range nodes {
		r[g.cfg.NodeName] = g.cfg.Advertise
	}
	for _, g := range nodes {
		g.SetRoster(r)
	}
	return r
}

func key(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func waitMessage(t *testing.T, g *Gossip, kind MsgKind, want []byte) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-g.Inbox():
			if m.Kind == kind && bytes.Equal(m.Data, want) {
				return
			}
		case <-deadline:
			t.Fatalf("%s never received %q (%d bytes)", g.cfg.NodeName, want[:min(len(want), 40)], len(want))
		}
	}
}

func TestStateAndBroadcastsReachEveryone(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	a.SetLocalState([]byte("state-of-a"))
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	c := newNode(t, "c", k, a.cfg.Advertise.String())
	certify(a, b, c)
	// Push/pull at join carries a's state to the joiners.
	waitMessage(t, b, MsgState, []byte("state-of-a"))
	waitMessage(t, c, MsgState, []byte("state-of-a"))
	// A broadcast from c reaches a, through gossip.
	c.Broadcast("record/c", []byte("hello from c"))
	waitMessage(t, a, MsgUser, []byte("hello from c"))
	waitMembers(t, a, 3)
	// Direct TCP sends.
	if err := a.SendToAll([]byte("urgent")); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, b, MsgUser, []byte("urgent"))
	waitMessage(t, c, MsgUser, []byte("urgent"))
}

// A node with another key cannot join, and hears nothing.
func TestWrongKeyIsShutOut(t *testing.T) {
	a := newNode(t, "a", key(t))
	rogue := newNode(t, "rogue", key(t), a.cfg.Advertise.String())
	certify(a, rogue) // so that Members would show it, had it joined
	time.Sleep(time.Second)
	if n := aliveMembers(a); n != 1 || a.Uncertified() != 0 {
		t.Errorf("a has %d alive members, %d uncertified, after a join with the wrong key", n, a.Uncertified())
	}
	if n := aliveMembers(rogue); n != 1 {
		t.Errorf("rogue has %d alive members", n)
	}
	if a.Malformed() == 0 {
		t.Error("the rogue's packets and streams were not counted as garbage")
	}
}

func TestNamedBroadcastReplacesQueuedOlder(t *testing.T) {
	a := newNode(t, "a", key(t))
	a.Broadcast("record/a", []byte("v1"))
	a.Broadcast("record/a", []byte("v2"))
	a.Broadcast("record/b", []byte("other"))
	if n := a.queue.NumQueued(); n != 2 {
		t.Fatalf("queued %d broadcasts, want 2 (v1 replaced by v2)", n)
	}
}

// A node that restarts with no seeds finds the cluster through its
// known-peers file.
func TestKnownPeersFile(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	dir := t.TempDir()
	file := filepath.Join(dir, "peers.json")
	port := freePort(t)
	mk := func(seeds ...string) *Gossip {
		g, err := New(Config{NodeName: "b", Bind: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
			SecretKey: k, Label: testLabel, Profile: ProfileLAN, Seeds: seeds, RejoinInterval: 200 * time.Millisecond, KnownPeersFile: file})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	b := mk(a.cfg.Advertise.String())
	roster := certify(a, b)
	ctx, cancel := context.WithCancel(context.Background())
	go b.Run(ctx)
	waitMembers(t, a, 2)
	cancel()
	_ = b.Shutdown() // saves the file
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil || known["a"] != a.cfg.Advertise.String() {
		t.Fatalf("known peers file: %s (%v)", raw, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("known peers file mode %04o", st.Mode().Perm())
	}
	b2 := mk() // no seeds
	b2.SetRoster(roster)
	ctx2, cancel2 := context.WithCancel(context.Background())
	go b2.Run(ctx2)
	t.Cleanup(func() { cancel2(); _ = b2.Shutdown() })
	waitMembers(t, b2, 2)
}

func aliveMembers(g *Gossip) int {
	alive := 0
	for _, m := range g.Members() {
		if m.State == "alive" {
			alive++
		}
	}
	return alive
}

func waitMembers(t *testing.T, g *Gossip, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if aliveMembers(g) == n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %d alive members never reached; view %v", g.cfg.NodeName, n, fmt.Sprint(g.Members()))
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{NodeName: "a", SecretKey: []byte("short")}); err == nil {
		t.Error("short key accepted")
	}
	if _, err := New(Config{NodeName: "a", SecretKey: make([]byte, 32), Bind: netip.MustParseAddrPort("0.0.0.0:7946")}); err == nil {
		t.Error("unspecified advertise address accepted")
	}
}

// A node that left for good is forgotten: no longer a known peer to re-join
// (nor written to the known-peers file), while Members still lists it.
func TestForget(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	certify(a, b)
	waitMembers(t, a, 2)
	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = b.Shutdown()
	a.Forget("b")
	time.Sleep(500 * time.Millisecond) // a few rejoin rounds
	a.saveKnown()
	raw, err := os.ReadFile(a.cfg.KnownPeersFile)
	if err != nil {
		t.Fatal(err)
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil || len(known) != 0 {
		t.Errorf("known peers after b left: %s (%v)", raw, err)
	}
	if got := fmt.Sprint(a.Members()); !strings.Contains(got, "{b ") {
		t.Errorf("b no longer listed: %s", got)
	}
}
