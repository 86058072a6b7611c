package mesh

// The peer side and the rotating side of a rotation's cut-over and
// confirmation, on fakes (confirm.go, cutover.go).

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fake is the fake device client behind the recorder (scale meshes on fakes).
func (m *scaleMesh) fake() *wgtest.Client { return m.wg.Client.(*wgtest.Client) }

// rotatingPeer is a mesh of this site and one remote site, site0000, that
// has announced its next key and been pre-installed.
func rotatingPeer(t *testing.T) (m *scaleMesh, s *scaleSite, cur, next wg.PublicKey) {
	t.Helper()
	m = newScaleMesh(t, 1)
	s = m.sites[0]
	cur, next = trusttest.WGKey(s.name), trusttest.WGKey(s.name+"-next")
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, WGNext: next})
	m.reconcile(t)
	if ips := m.allowed(t); ips[next] != "" || ips[cur] == "" {
		t.Fatalf("not pre-installed: %v", ips)
	}
	return m, s, cur, next
}

// allowed returns the device's allowed IPs per peer ("" for none; peers
// absent from the device are absent from the map).
func (m *scaleMesh) allowed(t *testing.T) map[wg.PublicKey]string {
	t.Helper()
	dev, err := m.wg.Device(m.rt.cfg.Interface)
	if err != nil {
		t.Fatal(err)
	}
	out := map[wg.PublicKey]string{}
	for _, p := range dev.Peers {
		var ips []string
		for _, n := range p.AllowedIPs {
			ips = append(ips, n.String())
		}
		out[wg.PublicKey(p.PublicKey)] = strings.Join(ips, ",")
	}
	return out
}

// The switched record alone does not move a site's prefixes to its new key
// while the handshake the site's switch started may still be on its way: a
// cut-over then would make our own traffic initiate a handshake that
// crosses the site's, and crossing initiations cancel each other (5 s of
// silence). The old key keeps the prefixes; the handshake moves them.
func TestSwitchedRecordWaitsForTheHandshake(t *testing.T) {
	m, s, cur, next := rotatingPeer(t)
	m.rt.rot.watch = newCutoverWatch(m.wg, m.rt.cfg.Interface)
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, WGCurrent: next})
	m.reconcile(t)
	ips := m.allowed(t)
	if ips[cur] == "" || ips[next] != "" {
		t.Fatalf("cut over from the record before any handshake: %v", ips)
	}

	// The handshake completes: the watcher cuts over at once.
	if err := m.fake().SetPeerStats(m.rt.cfg.Interface, wgtypes.Key(next), time.Now(), 180, 92); err != nil {
		t.Fatal(err)
	}
	m.rt.rot.watch.poll(t.Logf)
	ips = m.allowed(t)
	if _, old := ips[cur]; old || ips[next] == "" {
		t.Fatalf("no cut-over at the handshake: %v", ips)
	}
	m.reconcile(t)
	if ips := m.allowed(t); len(ips) != 3 || ips[next] == "" {
		t.Errorf("a reconcile undid the cut-over: %v", ips)
	}
}

// Without a handshake, the switched record cuts over after switchGrace; a
// site that switched to a key we never pre-installed (an emergency
// rotation) is cut over at once.
func TestSwitchedRecordCutsOverAfterTheGrace(t *testing.T) {
	m, s, cur, next := rotatingPeer(t)
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, WGCurrent: next})
	m.reconcile(t)
	if ips := m.allowed(t); ips[cur] == "" {
		t.Fatalf("not held: %v", ips)
	}
	m.rt.rot.peerRotations().held[s.name] = time.Now().Add(-switchGrace)
	m.reconcile(t)
	if ips := m.allowed(t); ips[next] == "" || ips[cur] != "" {
		t.Errorf("still held after the grace: %v", ips)
	}

	emergency := trusttest.WGKey(s.name + "-emergency")
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, WGCurrent: emergency})
	m.reconcile(t)
	if ips := m.allowed(t); ips[emergency] == "" || ips[next] != "" {
		t.Errorf("emergency rotation held: %v", ips)
	}
}

// The watcher cuts over when the pre-installed key completed a handshake,
// not when bytes first arrive on it: those are the initiation, and the
// session cannot carry our traffic until the initiator's first packet.
func TestWatcherCutsOverAtTheCompletedHandshake(t *testing.T) {
	m, _, cur, next := rotatingPeer(t)
	fake := m.fake()
	w := newCutoverWatch(m.wg, m.rt.cfg.Interface)
	w.set(map[wg.PublicKey]wg.PublicKey{next: cur}, m.rt.lastWG)
	if err := fake.SetPeerStats("dcm0", wgtypes.Key(next), time.Time{}, 148, 92); err != nil {
		t.Fatal(err)
	}
	w.poll(t.Logf)
	if ips := m.allowed(t); ips[cur] == "" || ips[next] != "" {
		t.Fatalf("cut over at the initiation: %v", ips)
	}
	if err := fake.SetPeerStats("dcm0", wgtypes.Key(next), time.Now(), 180, 92); err != nil {
		t.Fatal(err)
	}
	w.poll(t.Logf)
	if ips := m.allowed(t); ips[next] == "" {
		t.Fatalf("no cut-over at the handshake: %v", ips)
	}
	if got := w.take(); len(got) != 1 || got[0] != next {
		t.Errorf("take: %v", got)
	}
}

// The rotating side: a peer's cut-over ack is not enough. The rotation
// completes once the device also shows a handshake with the peer since the
// switch and bytes received from it after the ack; at the deadline it is
// incomplete and says what is missing.
func TestRotationConfirmsDataBothWays(t *testing.T) {
	m := newScaleMesh(t, 1)
	s := m.sites[0]
	peer := wgtypes.Key(trusttest.WGKey(s.name))
	fake := m.fake()
	newKey, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m.rt.rot.keys = wg.NewKeyStore(filepath.Join(dir, "wg.key"), filepath.Join(dir, "rotation.json"))
	m.rt.rot.state = wg.RotationState{Phase: wg.PhaseStable, Epoch: 1}
	start := func(deadline time.Time) chan control.RotateReply {
		run := newRotationRun(newKey.Public(), deadline)
		run.expected, run.committed, run.switched = []string{s.name}, true, time.Now()
		w := make(chan control.RotateReply, 1)
		run.waiters = []chan control.RotateReply{w}
		m.rt.rot.run = run
		return w
	}
	ack := func() {
		t.Helper()
		raw, err := trust.SignAck(trust.Ack{From: s.name, To: m.rt.cfg.Site, Key: newKey.Public(), Stage: trust.AckCutOver, Seq: 1}, s.key)
		if err != nil {
			t.Fatal(err)
		}
		ack, peerKey, ok := m.rt.store.VerifyAck(raw, m.rt.cfg.Site)
		if !ok {
			t.Fatal("ack refused")
		}
		m.rt.rot.onAck(ack, peerKey)
	}
	done := func(w chan control.RotateReply) *control.RotateReply {
		select {
		case r := <-w:
			return &r
		default:
			return nil
		}
	}

	w := start(time.Now().Add(time.Hour))
	if err := fake.SetPeerStats("dcm0", peer, time.Now(), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	ack()
	if r := done(w); r != nil {
		t.Fatalf("complete on the ack alone: %+v", r)
	}
	m.rt.rot.pollConfirmations() // nothing received since the ack
	if r := done(w); r != nil {
		t.Fatalf("complete without data from the peer after its ack: %+v", r)
	}
	if err := fake.SetPeerStats("dcm0", peer, time.Now(), 1032, 1000); err != nil {
		t.Fatal(err)
	}
	m.rt.rot.pollConfirmations()
	r := done(w)
	if r == nil || r.Result != "complete" || len(r.CutOver) != 1 || len(r.Missing) != 0 {
		t.Fatalf("after data both ways: %+v", r)
	}
	if m.rt.rot.run != nil {
		t.Error("run still pending")
	}

	// A peer that acked nothing and never handshook: incomplete at the
	// deadline, with the reason.
	if err := fake.SetPeerStats("dcm0", peer, time.Now().Add(-time.Hour), 1032, 1000); err != nil {
		t.Fatal(err)
	}
	w = start(time.Now().Add(-time.Millisecond))
	m.rt.rot.onTimer()
	r = done(w)
	if r == nil || r.Result != "incomplete" || len(r.Missing) != 1 || r.Pending[s.name] != "no handshake under the new key" {
		t.Fatalf("at the deadline: %+v", r)
	}
}

// A nudge makes us send the asking site one keepalive, on the key that
// carries its prefixes, at most every nudgeInterval/2.
func TestNudgeSendsOneKeepalive(t *testing.T) {
	m := newScaleMesh(t, 2)
	sent := func(name string) int {
		return m.fake().KeepalivesSent("dcm0", wgtypes.Key(trusttest.WGKey(name)))
	}
	a, b := sent(m.sites[0].name), sent(m.sites[1].name)
	m.rt.rot.onNudge(m.sites[0].name)
	m.rt.rot.onNudge(m.sites[0].name) // too soon: ignored
	m.rt.rot.onNudge("nobody")
	if sent(m.sites[0].name) != a+1 || sent(m.sites[1].name) != b {
		t.Errorf("keepalives: %s %d → %d, %s %d → %d", m.sites[0].name, a, sent(m.sites[0].name), m.sites[1].name, b, sent(m.sites[1].name))
	}
	dev, _ := m.wg.Device("dcm0")
	for _, p := range dev.Peers {
		if p.PublicKey == wgtypes.Key(trusttest.WGKey(m.sites[0].name)) && p.PersistentKeepaliveInterval != m.rt.cfg.PersistentKeepalive {
			t.Errorf("keepalive left at %s, want %s", p.PersistentKeepaliveInterval, m.rt.cfg.PersistentKeepalive)
		}
	}
}

// After a restart, the first reconcile programs the gossip sites kept from
// the last run without holding any first handshake back: each of them still
// holds a session with us that a new embedded device does not have, so it
// will not initiate, and its traffic to us would be lost until we do.
func TestFirstReconcileDoesNotHoldBackKnownSites(t *testing.T) {
	m := newScaleMesh(t, 20)
	first := m.wg.cfgs[0]
	held := 0
	for _, pc := range first.Peers {
		static := slices.ContainsFunc(m.rt.cfg.Peers, func(s config.StaticPeer) bool { return wgtypes.Key(s.PublicKey) == pc.PublicKey })
		if !static && (pc.PersistentKeepaliveInterval == nil || *pc.PersistentKeepaliveInterval != m.rt.cfg.PersistentKeepalive) {
			held++
		}
	}
	if held > 0 {
		t.Errorf("the first reconcile held back the keepalive of %d of %d known sites", held, len(m.sites))
	}
}
