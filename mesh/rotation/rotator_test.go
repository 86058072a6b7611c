package rotation

// The rotating side of a rotation's confirmation and the cut-over watcher,
// on a fake device (the peer side as the agent programs it is tested in
// mesh, rotate_confirm_test.go).

import (
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeEnv is the agent as a test plays it.
type fakeEnv struct {
	mu   sync.Mutex
	live []records.Site
	sent []string // site: kind
	msgs [][]byte // as sent, in the order of sent
}

func (e *fakeEnv) Publish() error                 { return nil }
func (e *fakeEnv) LiveSites() []records.Site      { return e.live }
func (e *fakeEnv) Kick()                          {}
func (e *fakeEnv) Counted(_ control.RotateResult) {}

func (e *fakeEnv) SendTo(site string, msg []byte) error {
	k, _, _ := records.Decode(msg)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sent = append(e.sent, site+": "+k.String())
	e.msgs = append(e.msgs, msg)
	return nil
}

const testConfig = `
site: fra1
private_key_file: wg.key
overlay_address: 10.255.0.1/32
`

// newTestRotator is a stable fra1 (epoch 1, its key store in a temporary
// directory) on a fake device dcm0 whose peers are sites, each with its
// current key and prefixes; the sites are also the last reconcile's.
func newTestRotator(t *testing.T, sites ...records.Site) (*Rotator, *wgtest.Client, *fakeEnv) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(testConfig), dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Interface = "dcm0"
	key, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	fake := wgtest.NewClient("dcm0")
	wgcfg := wg.Config{PrivateKey: key}
	for _, s := range sites {
		wgcfg.Peers = append(wgcfg.Peers, wg.Peer{PublicKey: s.PublicKey, Endpoint: s.Endpoint, AllowedIPs: s.Prefixes,
			PersistentKeepalive: cfg.PersistentKeepalive})
	}
	if _, err := wg.Apply(fake, "dcm0", wgcfg); err != nil {
		t.Fatal(err)
	}
	env := &fakeEnv{live: sites}
	ks := KeySet{Store: wg.NewKeyStore(filepath.Join(dir, "wg.key"), filepath.Join(dir, "rotation.json")),
		State: wg.RotationState{Phase: wg.PhaseStable, Epoch: 1}, Key: key}
	r := New(cfg, ks, wg.PresharedKeys{}, env, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.SetDevice(fake)
	r.sites, r.wgcfg = sites, wgcfg
	return r, fake, env
}

// testSites are n sites site0000... with their current keys, each owning a
// /24 and its overlay address.
func testSites(n int) []records.Site {
	var out []records.Site
	for i := range n {
		name := "site000" + string(rune('0'+i))
		out = append(out, records.Site{Name: name, PublicKey: trusttest.WGKey(name), Seq: 1,
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 51820),
			Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24),
				netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), 32)}})
	}
	return out
}

// allowed returns the device's allowed IPs per peer ("" for none; peers
// absent from the device are absent from the map).
func allowed(t *testing.T, c wg.Client) map[wg.PublicKey]string {
	t.Helper()
	dev, err := c.Device("dcm0")
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

// The watcher cuts over when the pre-installed key completed a handshake,
// not when bytes first arrive on it: those are the initiation, and the
// session cannot carry our traffic until the initiator's first packet.
func TestWatcherCutsOverAtTheCompletedHandshake(t *testing.T) {
	sites := testSites(1)
	cur, next := sites[0].PublicKey, trusttest.WGKey(sites[0].Name+"-next")
	r, fake, _ := newTestRotator(t, sites...)
	// next is pre-installed: the endpoint, no allowed IPs.
	r.wgcfg.Peers = append(r.wgcfg.Peers, wg.Peer{PublicKey: next, Endpoint: sites[0].Endpoint})
	if _, err := wg.Apply(fake, "dcm0", r.wgcfg); err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(fake, "dcm0")
	w.set(map[wg.PublicKey]wg.PublicKey{next: cur}, r.wgcfg)
	if err := fake.SetPeerStats("dcm0", wgtypes.Key(next), time.Time{}, 148, 92); err != nil {
		t.Fatal(err)
	}
	w.Poll(t.Logf)
	if ips := allowed(t, fake); ips[cur] == "" || ips[next] != "" {
		t.Fatalf("cut over at the initiation: %v", ips)
	}
	if err := fake.SetPeerStats("dcm0", wgtypes.Key(next), time.Now(), 180, 92); err != nil {
		t.Fatal(err)
	}
	w.Poll(t.Logf)
	if ips := allowed(t, fake); ips[next] == "" {
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
	sites := testSites(1)
	s := sites[0]
	peer := wgtypes.Key(s.PublicKey)
	r, fake, _ := newTestRotator(t, sites...)
	newKey, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	start := func(deadline time.Time) chan control.RotateReply {
		run := newRotationRun(newKey.Public(), deadline)
		run.expected, run.committed, run.switched = []string{s.Name}, true, time.Now()
		w := make(chan control.RotateReply, 1)
		run.waiters = []chan control.RotateReply{w}
		r.run = run
		return w
	}
	ack := func() {
		t.Helper()
		// As the agent hands it over: verified against the site's
		// certificate (records.Store.VerifyAck).
		r.OnAck(&trust.Ack{From: s.Name, To: r.cfg.Site, Key: newKey.Public(), Stage: trust.AckCutOver, Seq: 1}, s.PublicKey)
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
	r.pollConfirmations() // nothing received since the ack
	if r := done(w); r != nil {
		t.Fatalf("complete without data from the peer after its ack: %+v", r)
	}
	if err := fake.SetPeerStats("dcm0", peer, time.Now(), 1032, 1000); err != nil {
		t.Fatal(err)
	}
	r.pollConfirmations()
	rep := done(w)
	if rep == nil || rep.Result != control.RotateComplete || len(rep.CutOver) != 1 || len(rep.Missing) != 0 {
		t.Fatalf("after data both ways: %+v", rep)
	}
	if r.run != nil {
		t.Error("run still pending")
	}

	// A peer that acked nothing and never handshook: incomplete at the
	// deadline, with the reason.
	if err := fake.SetPeerStats("dcm0", peer, time.Now().Add(-time.Hour), 1032, 1000); err != nil {
		t.Fatal(err)
	}
	w = start(time.Now().Add(-time.Millisecond))
	r.OnTimer()
	rep = done(w)
	if rep == nil || rep.Result != control.RotateIncomplete || len(rep.Missing) != 1 || rep.Pending[s.Name] != "no handshake under the new key" {
		t.Fatalf("at the deadline: %+v", rep)
	}
}
