package gossip

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// rogue is a plain memberlist node with the gossip key: what a compromised
// machine can run. It counts the user messages it receives.
type rogue struct {
	ml   *memberlist.Memberlist
	addr netip.AddrPort
	msgs atomic.Int64
}

func (r *rogue) NodeMeta(int) []byte             { return nil }
func (r *rogue) NotifyMsg([]byte)                { r.msgs.Add(1) }
func (r *rogue) GetBroadcasts(int, int) [][]byte { return nil }
func (r *rogue) LocalState(bool) []byte          { return nil }
func (r *rogue) MergeRemoteState([]byte, bool)   {}
func (r *rogue) String() string                  { return r.addr.String() }
func (r *rogue) join(t *testing.T, to netip.AddrPort) bool {
	_, err := r.ml.Join([]string{to.String()})
	return err == nil
}

func startRogue(t *testing.T, name, ip string, key []byte) *rogue {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertiseAddr = name, ip, 0, ip
	mc.SecretKey, mc.Label = key, testLabel
	mc.Logger = log.New(io.Discard, "", 0)
	r := &rogue{}
	mc.Delegate = r
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	r.ml = ml
	r.addr = netip.AddrPortFrom(netip.MustParseAddr(ip), ml.LocalNode().Port)
	return r
}

// viewed is memberlist's node for name at g, as g's events saw it.
func viewed(g *Gossip, name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.view[name]
	return m, ok
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling state
	}
}

// Issue 15 item 3: a key holder that joins first under an enrolled site's
// name received that site's direct messages (SendTo resolved the name with
// memberlist, which keeps the first claimant).
func TestSquatterGetsNothing(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	sq := startRogue(t, "b", "127.0.0.9", k)
	if !sq.join(t, a.cfg.Advertise) {
		t.Fatal("squatter could not join")
	}
	waitFor(t, "a sees the squatter as b", func() bool {
		m, ok := viewed(a, "b")
		return ok && m.Addr == sq.addr && m.State == "alive"
	})
	if err := a.SendTo("b", []byte("x")); err == nil {
		t.Error("SendTo an uncertified name succeeded")
	}
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	c := newNode(t, "c", k, a.cfg.Advertise.String())
	waitFor(t, "memberlist kept the first claimant of b", func() bool { return a.RosterStats().Conflicts > 0 })

	certified := time.Now()
	certify(a, b, c)
	for _, from := range []*Gossip{a, c} {
		msg := []byte("for b, from " + from.cfg.NodeName)
		if err := from.SendTo("b", msg); err != nil {
			t.Fatal(err)
		}
		waitMessage(t, b, MsgUser, msg)
	}
	// The squatter is cut off, declared dead and refused; the real b takes
	// its name back.
	waitFor(t, "a refuses the squatter", func() bool { return a.RosterStats().Squatters > 0 })
	waitFor(t, "a has the real b alive", func() bool {
		m, ok := viewed(a, "b")
		return ok && m.Addr == b.cfg.Advertise && m.State == "alive"
	})
	t.Logf("the real b had its name back %v after the roster knew it", time.Since(certified).Round(time.Millisecond))
	if err := a.SendToAll([]byte("to all")); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, b, MsgUser, []byte("to all"))
	waitMessage(t, c, MsgUser, []byte("to all"))
	if n := sq.msgs.Load(); n != 0 {
		t.Errorf("the squatter received %d messages", n)
	}
	for _, g := range []*Gossip{a, c} {
		for _, m := range g.Members() {
			if m.Addr == sq.addr {
				t.Errorf("%s lists the squatter: %v", g.cfg.NodeName, g.Members())
			}
		}
	}
	if st := a.RosterStats(); st.Unreached == 0 {
		t.Errorf("nothing was withheld from the squatter: %+v", st)
	}
}

// Issue 15 item 5: 300 fake names joined with the key stayed in
// known-peers.json and in status as alive members.
func TestGhostsAreNotMembers(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	certify(a, b)
	waitMembers(t, a, 2)
	const ghosts = 50
	for i := range ghosts {
		g := startRogue(t, fmt.Sprintf("ghost-%02d", i), "127.0.0.1", k)
		if !g.join(t, a.cfg.Advertise) {
			t.Fatalf("ghost %d could not join", i)
		}
	}
	waitFor(t, "a counts the ghosts", func() bool { return a.Uncertified() == ghosts })
	members := a.Members()
	if len(members) != 2 || members[0].Name != "a" || members[1].Name != "b" || members[1].State != "alive" {
		t.Errorf("members: %v", members)
	}
	a.saveKnown()
	raw, err := os.ReadFile(a.cfg.KnownPeersFile)
	if err != nil {
		t.Fatal(err)
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil || len(known) != 1 || known["b"] != b.cfg.Advertise.String() {
		t.Errorf("known peers: %s (%v)", raw, err)
	}
	for len(a.Joins()) > 0 {
		if name := <-a.Joins(); name != "b" {
			t.Errorf("Joins reported %q", name)
		}
	}
}

// A node that joins before it is certified is reported in Joins once the
// roster gains it, not before; the set of such nodes is bounded.
func TestJoinsWaitForCertification(t *testing.T) {
	k := key(t)
	a := newNode(t, "a", k)
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	waitFor(t, "b joined", func() bool { _, ok := viewed(a, "b"); return ok })
	if a.Uncertified() != 1 || len(a.Joins()) != 0 {
		t.Fatalf("uncertified %d, joins %d before b is certified", a.Uncertified(), len(a.Joins()))
	}
	certify(a, b)
	select {
	case name := <-a.Joins():
		if name != "b" {
			t.Errorf("Joins reported %q", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b not reported once certified")
	}
	if a.Uncertified() != 0 {
		t.Errorf("uncertified %d after b is certified", a.Uncertified())
	}

	a.mu.Lock()
	for i := range 3 * maxPendingJoins {
		a.addPending(fmt.Sprintf("n%d", i), netip.MustParseAddrPort("192.0.2.1:1"))
	}
	n, first := len(a.pending), a.pendingOrder.Front().Value.(pendingJoin).name
	a.mu.Unlock()
	if n != maxPendingJoins || first != fmt.Sprintf("n%d", 2*maxPendingJoins) {
		t.Errorf("%d pending joins, oldest %s; want %d, the oldest forgotten first", n, first, maxPendingJoins)
	}
}

// The roster replaces itself whole, and Members follows it.
func TestSetRosterReplaces(t *testing.T) {
	a := newNode(t, "a", key(t))
	x := netip.MustParseAddrPort("192.0.2.1:7946")
	a.SetRoster(map[string]netip.AddrPort{"a": a.cfg.Advertise, "x": x, "bad": {}})
	got := a.Members()
	if !slices.Equal(got, []Member{{"a", a.cfg.Advertise, "alive"}, {"x", x, "dead"}}) {
		t.Errorf("members: %v", got)
	}
	a.SetRoster(nil)
	if got := a.Members(); len(got) != 1 {
		t.Errorf("members after an empty roster: %v", got)
	}
}
