package mesh

// The peer side of a rotation's cut-over as the agent programs it, on fakes
// (mesh/rotation has the rotating side and the watcher on their own).

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/rotation"
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
	w := rotation.NewWatcher(m.wg, m.rt.cfg.Interface)
	m.rt.rot.UseWatcher(w)
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
	w.Poll(t.Logf)
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
	now := time.Now()
	m.rt.rot.SetClock(func() time.Time { return now })
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 0)}, WGCurrent: next})
	m.reconcile(t)
	if ips := m.allowed(t); ips[cur] == "" {
		t.Fatalf("not held: %v", ips)
	}
	now = now.Add(rotation.SwitchGrace)
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

// A nudge makes us send the asking site one keepalive, on the key that
// carries its prefixes, at most every nudgeInterval/2.
func TestNudgeSendsOneKeepalive(t *testing.T) {
	m := newScaleMesh(t, 2)
	sent := func(name string) int {
		return m.fake().KeepalivesSent("dcm0", wgtypes.Key(trusttest.WGKey(name)))
	}
	a, b := sent(m.sites[0].name), sent(m.sites[1].name)
	m.rt.rot.OnNudge(m.sites[0].name)
	m.rt.rot.OnNudge(m.sites[0].name) // too soon: ignored
	m.rt.rot.OnNudge("nobody")
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
