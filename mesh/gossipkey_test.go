package mesh

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// gkSite is one site's runtime with a real gossip node on loopback (alone:
// nobody joins it) and the gossip-key rotation loaded from its state dir.
type gkSite struct {
	a        *Agent
	rt       *siteRuntime
	ca       *trust.CA
	cert     *trust.Certificate
	identity ed25519.PrivateKey
}

func newGKSite(t *testing.T, dir string, ca *trust.CA, cert *trust.Certificate, identity ed25519.PrivateKey, enrollKey []byte) *gkSite {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := NewAgent(Options{Logger: log})
	cfg := &config.Config{Site: cert.Site, StateDir: config.StateDir(dir)}
	rt := &siteRuntime{cfg: cfg, disk: newStateDisk(cfg.StateDir),
		enr:   &enroll.Enrollment{CAs: []*x509.Certificate{ca.Cert}, Cert: cert, Identity: identity, GossipKey: enrollKey},
		store: records.NewStore(cfg.StateDir.Records(), log)}
	keys, err := a.loadGossipKeys(rt)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	g, err := gossip.New(gossip.Config{NodeName: cert.Site, Bind: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		SecretKey: keys[0], Label: "dcmesh/test", Profile: gossip.ProfileLAN, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	for _, k := range keys[1:] {
		if err := g.InstallKey(k); err != nil {
			t.Fatal(err)
		}
	}
	rt.gossip = g
	return &gkSite{a: a, rt: rt, ca: ca, cert: cert, identity: identity}
}

func (s *gkSite) ids() []string { _, all := s.rt.gossip.KeyIDs(); return all }

func randomKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func sealFor(t *testing.T, ca *trust.CA, key []byte, epoch uint64, certs ...*trust.Certificate) *trust.GossipKeyBundle {
	t.Helper()
	b, err := trust.SealGossipKey(key, epoch, certs, ca, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Bundles that do not fit are refused with an error naming why, and change
// nothing: neither the keyring nor the state directory.
func TestInstallGossipKeyRefusals(t *testing.T) {
	ca, other := trusttest.NewCA(t), trusttest.NewCA(t)
	cert, identity := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	ams, _ := trusttest.Issue(t, ca, "ams1", "10.2.0.0/16")
	foreign, _ := trusttest.Issue(t, other, "fra1", "10.1.0.0/16")
	dir := t.TempDir()
	s := newGKSite(t, dir, ca, cert, identity, randomKey(t))
	before := s.ids()
	good := sealFor(t, ca, randomKey(t), 10, cert, ams)
	cases := []struct {
		name, der, want string
	}{
		{"corrupt", string(good.Raw[:len(good.Raw)-3]), "malformed"},
		{"another CA", string(sealFor(t, other, randomKey(t), 11, foreign).Raw), "not pinned"},
		{"not sealed to this site", string(sealFor(t, ca, randomKey(t), 12, ams).Raw), "not a recipient"},
		{"empty", "", "empty"},
	}
	for _, c := range cases {
		_, err := s.a.installGossipKey(s.rt, []byte(c.der))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		if !slices.Equal(s.ids(), before) {
			t.Errorf("%s: keyring changed to %v", c.name, s.ids())
		}
		if _, err := os.Stat(s.rt.cfg.StateDir.GossipKey()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s written", c.name, config.GossipKeyState)
		}
	}
	// A refusal is remembered: the same bytes again cost a lookup, and say
	// the same.
	if _, err := s.a.installGossipKey(s.rt, []byte(cases[2].der)); err == nil || len(s.rt.gkeys.refused) != 4 {
		t.Errorf("repeat: %v, %d remembered", err, len(s.rt.gkeys.refused))
	}
}

// A rotation on a site alone (no live site to wait for, like the site that
// was down): install, use, remove; persisted at every step, resumed after a
// restart from the sealed bundle; an older bundle and a second rotation
// while one is under way are refused.
func TestInstallGossipKeyStepsAndRestarts(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, identity := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	enrollKey, newKey := randomKey(t), randomKey(t)
	dir := t.TempDir()
	s := newGKSite(t, dir, ca, cert, identity, enrollKey)
	oldID, newID := trust.GossipKeyID(enrollKey), trust.GossipKeyID(newKey)
	b := sealFor(t, ca, newKey, 20, cert)
	if changed, err := s.a.installGossipKey(s.rt, b.Raw); err != nil || !changed {
		t.Fatalf("install: %v %v", changed, err)
	}
	if got := s.ids(); !slices.Equal(got, []string{oldID, newID}) || s.rt.gkeys.phase != gkInstalled {
		t.Fatalf("after install: %v %s", got, s.rt.gkeys.phase)
	}
	if st, err := os.Stat(s.rt.cfg.StateDir.GossipKey()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v", config.GossipKeyState, err)
	}
	raw, _ := os.ReadFile(s.rt.cfg.StateDir.GossipKey())
	if strings.Contains(string(raw), string(newKey)) {
		t.Fatal("the key is on disk unsealed")
	}
	if changed, err := s.a.installGossipKey(s.rt, b.Raw); err != nil || changed {
		t.Fatalf("same bundle again: %v %v, want nothing", changed, err)
	}
	if _, err := s.a.installGossipKey(s.rt, sealFor(t, ca, randomKey(t), 21, cert).Raw); err == nil || !strings.Contains(err.Error(), "still under way") {
		t.Fatalf("second rotation while one is under way: %v", err)
	}

	// Restarted while installed: the old key sends, the new one is held.
	s = newGKSite(t, dir, ca, cert, identity, enrollKey)
	if got := s.ids(); !slices.Equal(got, []string{oldID, newID}) || s.rt.gkeys.phase != gkInstalled {
		t.Fatalf("restart while installed: %v %s", got, s.rt.gkeys.phase)
	}
	s.a.stepGossipKey(s.rt) // alone: nobody to wait for
	if got := s.ids(); !slices.Equal(got, []string{newID, oldID}) || s.rt.gkeys.phase != gkSwitched {
		t.Fatalf("after use: %v %s", got, s.rt.gkeys.phase)
	}
	s = newGKSite(t, dir, ca, cert, identity, enrollKey)
	if got := s.ids(); !slices.Equal(got, []string{newID, oldID}) || s.rt.gkeys.phase != gkSwitched {
		t.Fatalf("restart while switched: %v %s", got, s.rt.gkeys.phase)
	}
	s.a.stepGossipKey(s.rt) // starts the grace
	if got := s.ids(); len(got) != 2 {
		t.Fatalf("removed before the grace: %v", got)
	}
	s.rt.gkeys.since = time.Now().Add(-gossipKeyGrace)
	s.a.stepGossipKey(s.rt)
	if got := s.ids(); !slices.Equal(got, []string{newID}) || s.rt.gkeys.phase != gkStable {
		t.Fatalf("after remove: %v %s", got, s.rt.gkeys.phase)
	}
	s = newGKSite(t, dir, ca, cert, identity, enrollKey)
	if got := s.ids(); !slices.Equal(got, []string{newID}) || s.rt.gkeys.epoch != 20 {
		t.Fatalf("restart when stable: %v epoch %d", got, s.rt.gkeys.epoch)
	}
	stale := sealFor(t, ca, randomKey(t), 19, cert).Raw
	if _, err := s.a.installGossipKey(s.rt, stale); !errors.Is(err, trust.ErrStaleGossipKey) {
		t.Fatalf("older epoch: %v, want ErrStaleGossipKey", err)
	}
	s.a.onGossipKeyBundle(s.rt, stale) // from gossip: counted as a replay
	if n := s.rt.store.Rejected()[trust.ReasonReplay]; n != 1 {
		t.Fatalf("an older bundle from gossip: %d replays counted, want 1", n)
	}
	// The next rotation's old key is the last bundle's, not the enrollment's.
	third := randomKey(t)
	if _, err := s.a.installGossipKey(s.rt, sealFor(t, ca, third, 30, cert).Raw); err != nil {
		t.Fatal(err)
	}
	s = newGKSite(t, dir, ca, cert, identity, enrollKey)
	if got := s.ids(); !slices.Equal(got, []string{newID, trust.GossipKeyID(third)}) {
		t.Fatalf("second rotation after a restart: %v, want %s then %s", got, newID, trust.GossipKeyID(third))
	}
	if st := gossipKeyStatus(s.rt); st.InUse != newID || st.Epoch != 30 || st.Phase != gkInstalled {
		t.Fatalf("status: %+v", st)
	}
}

// Key lists from gossip: only a certified site's own signature counts, the
// newest of each site is kept, a replay of an older one changes nothing,
// and refusals are counted like those of records.
func TestGossipKeyAcksFromGossip(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, identity := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	ams, amsKey := trusttest.Issue(t, ca, "ams1", "10.2.0.0/16")
	_, otherKey := trusttest.Issue(t, ca, "lon1", "10.3.0.0/16")
	s := newGKSite(t, t.TempDir(), ca, cert, identity, randomKey(t))
	if _, err := s.rt.store.Consider(trusttest.SignedRecord(t, ams, amsKey, trusttest.RecordOptions{}), trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}
	sign := func(a trust.GossipKeyAck, k ed25519.PrivateKey) []byte {
		raw, err := trust.SignGossipKeyAck(a, k)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	rejected := func() uint64 { return s.rt.store.Rejected()[trust.ReasonSignature] }
	s.a.onGossipKeyAck(s.rt, sign(trust.GossipKeyAck{Site: "ams1", Seq: 5, Held: []string{newID}}, otherKey))
	if s.rt.gkeys.acks["ams1"] != nil || rejected() != 1 {
		t.Fatalf("forged ack: kept %v, %d signature rejections", s.rt.gkeys.acks["ams1"], rejected())
	}
	s.a.onGossipKeyAck(s.rt, sign(trust.GossipKeyAck{Site: "ams1", Seq: 5, Held: []string{oldID, newID}}, amsKey))
	s.a.onGossipKeyAck(s.rt, sign(trust.GossipKeyAck{Site: "ams1", Seq: 4, Held: []string{oldID}}, amsKey))
	if a := s.rt.gkeys.acks["ams1"]; a == nil || a.Seq != 5 || !a.Holds(newID) {
		t.Fatalf("kept %+v, want seq 5 holding %s", a, newID)
	}
	// ams1 rotates (two keys): it waits for our key list, which a stable
	// site announces to nobody by itself, so it is answered directly.
	if s.rt.gkeys.answered["ams1"].IsZero() {
		t.Fatal("a rotating site's key list was not answered")
	}
	s.a.onGossipKeyAck(s.rt, sign(trust.GossipKeyAck{Site: "lon1", Seq: 9, Held: []string{newID}}, otherKey))
	if s.rt.gkeys.acks["lon1"] != nil {
		t.Fatal("an ack of a site without a record was kept")
	}
	before := s.rt.store.Rejected()[trust.ReasonDecode]
	s.a.onGossipKeyAck(s.rt, []byte("garbage"))
	s.a.onGossipKeyBundle(s.rt, []byte("garbage"))
	if got := s.rt.store.Rejected()[trust.ReasonDecode]; got != before+2 {
		t.Fatalf("garbage ack and bundle: %d decode rejections, want %d", got, before+2)
	}
	// Another bundle at once is not even looked at; the first again is a
	// lookup (refused before).
	if _, err := s.a.installGossipKeyFrom(s.rt, []byte("other garbage"), true); !errors.Is(err, errGossipKeyLimited) {
		t.Fatalf("a second bundle within %s: %v, want it dropped", gossipKeyParseEvery, err)
	}
	if _, err := s.a.installGossipKeyFrom(s.rt, []byte("garbage"), true); err == nil || errors.Is(err, errGossipKeyLimited) {
		t.Fatalf("the refused bundle again: %v, want its refusal", err)
	}
}

// A refusal of the moment (a rotation under way) is not remembered: the
// same bundle installs once the rotation ended.
func TestInstallGossipKeyRetriesAfterARotation(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, identity := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	s := newGKSite(t, t.TempDir(), ca, cert, identity, randomKey(t))
	if _, err := s.a.installGossipKey(s.rt, sealFor(t, ca, randomKey(t), 5, cert).Raw); err != nil {
		t.Fatal(err)
	}
	later := sealFor(t, ca, randomKey(t), 6, cert)
	if _, err := s.a.installGossipKey(s.rt, later.Raw); err == nil {
		t.Fatal("a second rotation while one is under way was accepted")
	}
	s.a.stepGossipKey(s.rt) // use
	s.rt.gkeys.since = time.Now().Add(-gossipKeyGrace)
	s.a.stepGossipKey(s.rt) // remove
	if changed, err := s.a.installGossipKey(s.rt, later.Raw); err != nil || !changed {
		t.Fatalf("after the rotation ended: %v %v", changed, err)
	}
}

// The stored bundle still opens after its CA was unpinned (a CA rollover);
// when it no longer opens at all (the identity key changed with a renewal)
// the site starts anyway, on the enrollment's key, and status says why.
func TestStoredGossipKeyAfterRolloverAndRenewal(t *testing.T) {
	ca, newCA := trusttest.NewCA(t), trusttest.NewCA(t)
	cert, identity := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	enrollKey, key := randomKey(t), randomKey(t)
	dir := t.TempDir()
	s := newGKSite(t, dir, ca, cert, identity, enrollKey)
	if _, err := s.a.installGossipKey(s.rt, sealFor(t, ca, key, 5, cert).Raw); err != nil {
		t.Fatal(err)
	}
	s.a.stepGossipKey(s.rt)
	s.rt.gkeys.since = time.Now().Add(-gossipKeyGrace)
	s.a.stepGossipKey(s.rt)

	renewed, _ := trusttest.Issue(t, newCA, "fra1", "10.1.0.0/16")
	s = newGKSite(t, dir, newCA, renewed, identity, enrollKey) // only the new CA pinned
	if got := s.ids(); !slices.Equal(got, []string{trust.GossipKeyID(key)}) || s.rt.gkeys.problem != "" {
		t.Fatalf("after a CA rollover: %v %q", got, s.rt.gkeys.problem)
	}
	_, otherIdentity := trusttest.Issue(t, newCA, "fra1", "10.1.0.0/16")
	s = newGKSite(t, dir, newCA, renewed, otherIdentity, enrollKey)
	if got := s.ids(); !slices.Equal(got, []string{trust.GossipKeyID(enrollKey)}) {
		t.Fatalf("with a new identity key: %v, want the enrollment's key", got)
	}
	st := gossipKeyStatus(s.rt)
	if why := st.Pending["fra1"]; !strings.Contains(why, "does not open") || !strings.Contains(why, "dcmesh gossip-key install") || st.Epoch != 5 {
		t.Fatalf("status: %+v", st)
	}
	if _, err := s.a.installGossipKey(s.rt, sealFor(t, newCA, randomKey(t), 5, renewed).Raw); !errors.Is(err, trust.ErrStaleGossipKey) {
		t.Fatalf("a bundle of the same epoch again: %v, want refused as stale", err)
	}
}
