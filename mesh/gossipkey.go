package mesh

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Gossip-key rotation, the agent's side (memberlist's install → use →
// remove, mesh/gossip/keyring.go):
//
//  1. install: a CA-signed bundle (trust.SealGossipKey) arrives through the
//     control socket (`dcmesh gossip-key install`) or gossip. The agent
//     checks it (a pinned CA, an epoch newer than the one it holds), opens
//     its own share with its identity key, persists the sealed bundle and
//     the phase (gossip-key.json, 0600), installs the key (it now also
//     decrypts with it), spreads the bundle and says, signed, which keys it
//     holds (trust.GossipKeyAck).
//  2. use: once every live site (alive in gossip, certified) said it holds
//     the new key, the agent sends with it.
//  3. remove: once every live site said it sends with the new key, and
//     gossipKeyGrace later, the agent removes the old key.
//
// Every site decides by itself from the signed acks, so nothing needs all
// sites to act at once, and memberlist decrypts with either key in between:
// no partition at any moment. The key itself is only ever in memory; what
// survives a restart is the sealed bundle, opened again at start.
//
// A site that was down during the whole rotation still holds only the old
// key, which the others removed: it cannot hear them, nor they it. It
// rejoins when the same bundle is installed on it (`dcmesh gossip-key
// install --file FILE` on that site): no live site is reachable from it, so
// it switches at once and the others' periodic rejoin finds it. Accepting
// the old key until every enrolled site has the new one would let a site
// that was removed, or whose old key leaked, listen for as long as any site
// is down — which is what the rotation is for.

// gossipKeyGrace is how long a site keeps the old key after every live site
// said it sends with the new one: packets and streams sealed before the
// switch may still be on their way.
const gossipKeyGrace = 3 * time.Second

// gossipKeyTick is how often a rotation under way re-evaluates (members
// that died, acks that were lost) and re-announces this site's keys.
const gossipKeyTick = 500 * time.Millisecond

// gossipKeyParseEvery bounds how often a bundle from gossip is checked.
const gossipKeyParseEvery = 100 * time.Millisecond

// Phases of gossip-key.json and control.GossipKeyStatus.Phase.
const (
	gkStable    = "stable"    // one key
	gkInstalled = "installed" // the new key accepted, the old one sent with
	gkSwitched  = "switched"  // the new key sent with, the old one accepted
)

// gossipKeyFile is gossip-key.json: the bundle last installed, sealed, and
// how far its rotation got. Previous is the bundle before it, whose key is
// the old one while the rotation is under way (none: the enrollment's).
type gossipKeyFile struct {
	Epoch    uint64 `json:"epoch"`
	Phase    string `json:"phase"`
	Bundle   []byte `json:"bundle"`
	Previous []byte `json:"previous,omitempty"`
	// SignerCA is the certificate (DER) of the CA that signed Bundle.
	SignerCA []byte `json:"signer_ca,omitempty"`
}

// maxGossipKeyFile bounds gossip-key.json: two bundles in base64.
const maxGossipKeyFile = 4*trust.MaxGossipKeyBundleSize/3*2 + 4096

// gossipKeys is the runtime's gossip-key rotation. Only the loop touches it.
type gossipKeys struct {
	file     string
	epoch    uint64
	phase    string
	bundle   *trust.GossipKeyBundle // the last installed, or nil
	previous []byte                 // gossipKeyFile.Previous
	signerCA []byte                 // gossipKeyFile.SignerCA
	problem  string                 // why the stored bundle did not open at start
	// cur is the key sent with outside a rotation, and the old key during
	// one; next the new key during one (UseKey and RemoveKey take keys).
	// Only ever in memory.
	cur, next []byte

	acks   map[string]*trust.GossipKeyAck // the newest of each site
	ackSeq uint64
	since  time.Time // when every live site was first seen using the new key
	// started is when this site's current rotation began (installed here,
	// or resumed at start: a restart counts from then); zero when stable.
	started time.Time
	pending map[string]string
	refused map[[32]byte]error   // bundles refused, by hash
	sentAt  time.Time            // of the last direct announcement
	resent  map[string]time.Time // when the bundle was last sent to a site behind
	// answered is when a site's key list was last answered with ours
	answered map[string]time.Time
	parsedAt time.Time // of the last bundle from gossip checked
}

func (gk *gossipKeys) rotating() bool { return gk.phase == gkInstalled || gk.phase == gkSwitched }

func (gk *gossipKeys) save() error {
	f := gossipKeyFile{Epoch: gk.epoch, Phase: gk.phase, Previous: gk.previous, SignerCA: gk.signerCA}
	if gk.bundle != nil {
		f.Bundle = gk.bundle.Raw
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return wg.WriteFileAtomic(gk.file, append(raw, '\n'), 0o600)
}

// loadGossipKeys reads gossip-key.json and opens what it needs: the keys
// gossip starts with, the one it sends with first. Without the file that is
// the enrollment's key alone. A bundle that no longer opens (the identity
// key changed with a renewal) does not keep the site from starting: it
// gossips with the enrollment's key, as a site that was down during a
// rotation, until a newer bundle is installed, and status says so.
func (a *Agent) loadGossipKeys(rt *siteRuntime) (keys [][]byte, err error) {
	gk := &gossipKeys{file: rt.cfg.StateDir.GossipKey(), phase: gkStable, acks: map[string]*trust.GossipKeyAck{},
		refused: map[[32]byte]error{}, resent: map[string]time.Time{}, answered: map[string]time.Time{}}
	rt.gkeys = gk
	gk.cur = slices.Clone(rt.enr.GossipKey) // erased when replaced
	raw, err := wg.ReadStateFile(gk.file, maxGossipKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return [][]byte{gk.cur}, nil
	}
	if err != nil {
		return nil, err
	}
	var f gossipKeyFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v): restore it, or remove it and install the last gossip-key bundle again (dcmesh gossip-key install)", gk.file, err)
	}
	gk.epoch, gk.signerCA = f.Epoch, f.SignerCA
	newKey, b, err := a.openStoredGossipKey(rt, f.Bundle)
	if err != nil {
		gk.problem = fmt.Sprintf("the gossip-key bundle of epoch %d in %s does not open (%v): gossiping with the enrollment's key; install a newer bundle (dcmesh ca gossip-key rotate, then dcmesh gossip-key install)", f.Epoch, gk.file, err)
		a.log.Error("gossip key: " + gk.problem)
		return [][]byte{gk.cur}, nil
	}
	gk.phase, gk.bundle, gk.previous = f.Phase, b, f.Previous
	if !gk.rotating() {
		gk.phase, gk.cur = gkStable, newKey
		return [][]byte{newKey}, nil
	}
	if len(f.Previous) > 0 {
		old, _, err := a.openStoredGossipKey(rt, f.Previous)
		if err != nil {
			a.log.Warn("gossip key: the previous bundle does not open; resuming with the new key alone", "err", err)
			gk.phase, gk.cur, gk.previous = gkStable, newKey, nil
			return [][]byte{newKey}, nil
		}
		gk.cur = old
	}
	gk.next = newKey
	a.log.Info("gossip-key rotation resumes", "epoch", gk.epoch, "key_id", b.KeyID, "phase", gk.phase)
	gk.started = time.Now()
	if gk.phase == gkInstalled {
		return [][]byte{gk.cur, gk.next}, nil
	}
	return [][]byte{gk.next, gk.cur}, nil
}

// openStoredGossipKey opens a bundle this site installed before. Its CA
// may have been unpinned since (a CA rollover): the signer's certificate,
// kept when it was installed, still verifies it.
func (a *Agent) openStoredGossipKey(rt *siteRuntime, der []byte) ([]byte, *trust.GossipKeyBundle, error) {
	cas := rt.enr.CAs
	if c, err := x509.ParseCertificate(rt.gkeys.signerCA); err == nil {
		cas = append(slices.Clone(cas), c)
	}
	b, err := trust.ParseGossipKeyBundle(der, cas, time.Now())
	if err != nil {
		return nil, nil, err
	}
	k, err := trust.OpenGossipKey(b, rt.enr.Identity, b.Epoch-1)
	if err != nil {
		return nil, nil, err
	}
	return k, b, nil
}

// installGossipKey takes a gossip-key bundle (DER): checked, opened,
// persisted, installed, spread. Installing the bundle held again does
// nothing; an older one, one not sealed to this site, or a new one while a
// rotation is under way is refused. changed says whether it was new.
func (a *Agent) installGossipKey(rt *siteRuntime, der []byte) (changed bool, err error) {
	return a.installGossipKeyFrom(rt, der, false)
}

// errGossipKeyLimited refuses a bundle from gossip that came too soon after
// the last one that had to be checked.
var errGossipKeyLimited = errors.New("gossip key bundle dropped: another was checked less than 100 ms ago")

// installGossipKeyFrom is installGossipKey; bundles from gossip that are
// neither the one held nor one refused before are checked at most every
// gossipKeyParseEvery: a key holder sending distinct bundles of 512 KiB
// would otherwise cost the loop a parse each.
func (a *Agent) installGossipKeyFrom(rt *siteRuntime, der []byte, fromGossip bool) (changed bool, err error) {
	gk := rt.gkeys
	if gk.bundle != nil && string(der) == string(gk.bundle.Raw) {
		return false, nil
	}
	h := sha256.Sum256(der)
	if err, ok := gk.refused[h]; ok {
		return false, err
	}
	if fromGossip {
		if time.Since(gk.parsedAt) < gossipKeyParseEvery {
			return false, errGossipKeyLimited
		}
		gk.parsedAt = time.Now()
	}
	changed, err = a.takeGossipKey(rt, der)
	var r *bundleRefusal
	if errors.As(err, &r) {
		// What the bundle itself is (signature, epoch, recipients) does
		// not change: the same bytes again cost a lookup.
		if len(gk.refused) >= 64 {
			clear(gk.refused)
		}
		gk.refused[h] = err
	}
	return changed, err
}

// bundleRefusal is a refusal of the bundle itself, as opposed to one of
// this moment (a rotation under way, a full disk).
type bundleRefusal struct{ err error }

func (r *bundleRefusal) Error() string { return r.err.Error() }
func (r *bundleRefusal) Unwrap() error { return r.err }

func (a *Agent) takeGossipKey(rt *siteRuntime, der []byte) (bool, error) {
	gk := rt.gkeys
	b, err := trust.ParseGossipKeyBundle(der, rt.enr.CAs, time.Now())
	if err != nil {
		return false, &bundleRefusal{err}
	}
	if gk.bundle != nil && b.Epoch == gk.epoch && b.KeyID == gk.bundle.KeyID {
		return false, nil
	}
	if gk.rotating() && b.Epoch > gk.epoch {
		return false, fmt.Errorf("gossip key: the rotation to key %s (epoch %d) is still under way (%s): wait until dcmesh status shows it stable, then install epoch %d",
			gk.bundle.KeyID, gk.epoch, gk.phase, b.Epoch)
	}
	key, err := trust.OpenGossipKey(b, rt.enr.Identity, gk.epoch)
	if err != nil {
		return false, &bundleRefusal{fmt.Errorf("gossip key: %w", err)}
	}
	_, held := rt.gossip.KeyIDs()
	if len(held) != 1 {
		clear(key)
		return false, fmt.Errorf("gossip key: %d keys held outside a rotation; restart the agent", len(held))
	}
	next := *gk
	next.epoch, next.phase, next.bundle, next.previous, next.problem = b.Epoch, gkInstalled, b, nil, ""
	next.signerCA = signerCert(rt.enr.CAs, b.SignerID)
	if gk.bundle != nil {
		next.previous = gk.bundle.Raw
	}
	// On disk before the keyring: once this site says it holds the key,
	// others may send with it, and a restart must still hold it.
	if err := rt.disk.wrote(config.GossipKeyState, next.save()); err != nil {
		clear(key)
		return false, fmt.Errorf("gossip key: persist %s: %w", gk.file, err)
	}
	if err := rt.gossip.InstallKey(key); err != nil {
		clear(key)
		return false, err
	}
	*gk = next
	gk.next, gk.since, gk.pending, gk.started = key, time.Time{}, nil, time.Now()
	a.log.Info("gossip key installed", "epoch", b.Epoch, "key_id", b.KeyID, "recipients", len(b.Recipients))
	a.spreadGossipKey(rt)
	a.announceGossipKeys(rt)
	return true, nil
}

// signerCert is the DER of the pinned CA whose id is id.
func signerCert(cas []*x509.Certificate, id string) []byte {
	for _, c := range cas {
		if trust.CAID(c) == id {
			return c.Raw
		}
	}
	return nil
}

// spreadGossipKey sends the bundle held to the cluster: broadcast when it
// fits, and to every member directly.
func (a *Agent) spreadGossipKey(rt *siteRuntime) {
	msg := records.Encode(records.KindGossipKey, rt.gkeys.bundle.Raw)
	a.broadcastOrSend(rt, "gossip-key", msg, "gossip-key bundle")
}
