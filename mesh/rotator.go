package mesh

import (
	"crypto/ed25519"
	"crypto/mlkem"
	"fmt"
	"log/slog"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// rotator owns this site's WireGuard key, its rotation, the other sites'
// rotations as this site follows them, and the pre-shared keys: every piece
// of state a rotation touches. The agent's loop drives it (prepare before a
// reconcile computes, applied after it applies, the timer, the gossip
// messages, the watcher's cut-overs); it reaches the rest of the agent only
// through rotationEnv.
type rotator struct {
	env      rotationEnv
	log      *slog.Logger
	wgc      wg.Client
	cfg      *config.Config
	identity ed25519.PrivateKey // signs acks
	online   bool               // gossip runs: rotations and acks can happen

	// this site
	keys         *wg.KeyStore
	state        wg.RotationState
	key          wg.PrivateKey // the device's key
	next         wg.PrivateKey // while prepared
	run          *rotationRun
	nextRotation time.Time
	// other sites
	cutover  map[wg.PublicKey]bool   // new keys seen handshaking: cut over
	ackedPre map[string]uint64       // site → record sequence acked
	ackedCut map[wg.PublicKey]bool   // cut-overs acked
	siteKeys map[string]wg.PublicKey // current key per site, as last applied
	watch    *cutoverWatch           // cutover.go
	peerRot  *peerRotations          // confirm.go
	// pre-shared keys (psk.go)
	psks      wg.PresharedKeys
	pskFile   string
	pskOffers map[wg.PublicKey]pskOffer
	kem       *mlkem.DecapsulationKey768 // ours, while prepared
	// the sites and WireGuard state of the last reconcile
	sites []records.Site
	wgcfg wg.Config
}

// rotationEnv is what a rotation needs of the agent.
type rotationEnv interface {
	// publish signs and sends a new record of this site (with the
	// rotator's part of it: recordKeys).
	publish() error
	// liveSites are the remote sites a rotation waits for.
	liveSites() []records.Site
	// sendTo sends a message to one site directly; it may block.
	sendTo(site string, msg []byte) error
	// kick asks the loop for a reconcile.
	kick()
	// counted counts a rotation's result.
	counted(result control.RotateResult)
}

// keySet is this site's WireGuard keys as stored: the device must use the
// next key from the moment the switch was persisted.
type keySet struct {
	store     *wg.KeyStore
	state     wg.RotationState
	key, next wg.PrivateKey
}

// loadKeys reads the WireGuard keys and rotation state of cfg.
func loadKeys(cfg *config.Config) (keySet, error) {
	ks := keySet{store: wg.NewKeyStore(cfg.PrivateKeyFile, cfg.StateDir.Rotation())}
	cur, next, st, err := ks.store.Load()
	if err != nil {
		return keySet{}, fmt.Errorf("private_key_file: %w", err)
	}
	ks.state, ks.key, ks.next = st, cur, next
	if (st.Phase == wg.PhaseSwitching || st.Phase == wg.PhaseSwitched) && !next.IsZero() {
		ks.key, ks.next = next, wg.PrivateKey{}
	}
	for i, p := range cfg.Peers {
		if p.PublicKey == ks.key.Public() {
			return keySet{}, fmt.Errorf("config %s: peers[%d].public_key is this site's own public key (from %s)", cfg.Path, i, cfg.PrivateKeyFile)
		}
	}
	return ks, nil
}

// newRotator starts from the keys and pre-shared keys read from cfg's files.
// Its device client (wgc) is set once the device is open.
func newRotator(cfg *config.Config, ks keySet, psks wg.PresharedKeys, env rotationEnv, log *slog.Logger) *rotator {
	if ks.state.Phase != wg.PhaseStable {
		log.Info("resuming a key rotation interrupted by a restart", "phase", string(ks.state.Phase), "epoch", ks.state.Epoch)
	}
	r := &rotator{env: env, log: log, cfg: cfg, cutover: map[wg.PublicKey]bool{}, ackedPre: map[string]uint64{},
		ackedCut: map[wg.PublicKey]bool{}, siteKeys: map[string]wg.PublicKey{}, psks: psks, pskFile: cfg.StateDir.PSK(),
		pskOffers: map[wg.PublicKey]pskOffer{}}
	r.useKeys(ks)
	return r
}

func (r *rotator) useKeys(ks keySet) {
	r.keys, r.state, r.key, r.next = ks.store, ks.state, ks.key, ks.next
}

// rotating reports whether a rotation of this site is under way.
func (r *rotator) rotating() bool { return r.state.Phase != wg.PhaseStable }

// reload takes a new configuration, and the keys read from it unless a
// rotation is under way (it owns the key files then). It reports whether
// the key changed.
func (r *rotator) reload(cfg *config.Config, ks *keySet, identity ed25519.PrivateKey) bool {
	old := r.key
	r.cfg, r.identity = cfg, identity
	if ks != nil && ks.state.Phase == wg.PhaseStable && !r.rotating() {
		r.useKeys(*ks)
	}
	return !old.Equal(r.key)
}

// start is called once gossip runs: it finishes what a restart interrupted
// and schedules the next rotation.
func (r *rotator) start(identity ed25519.PrivateKey) {
	r.online, r.identity = true, identity
	r.resumeRotation()
	r.scheduleRotation()
}

// recordKeys fills this site's keys into its record: the current key and,
// while prepared, the next one with the KEM key for the pre-shared keys;
// and the sites it holds a pre-shared key for.
func (r *rotator) recordKeys(rec *trust.Record) error {
	rec.WGCurrent, rec.Phase = r.key.Public(), trust.PhaseStable
	if r.state.Phase == wg.PhasePrepared && !r.next.IsZero() {
		rec.WGNext, rec.Phase = r.next.Public(), trust.PhasePrepared
		if r.cfg.Rotation.PSK && !r.state.Emergency {
			if r.kem == nil {
				kem, err := mlkem.GenerateKey768()
				if err != nil {
					return fmt.Errorf("generate ML-KEM key: %w", err)
				}
				r.kem = kem
			}
			rec.KEM = r.kem.EncapsulationKey().Bytes()
		}
	}
	if r.cfg.Rotation.PSK {
		rec.PSKSites = r.pskSites()
	}
	return nil
}

// prepare is the rotation's part before a reconcile computes the desired
// state from sites: it takes the cut-overs the watcher made (done on the
// device: never undone), answers new KEM keys, holds back sites that
// switched until their handshake, and gives each site its pre-shared keys.
// It returns the sites to program and the keys cut over to; release must
// be called after the apply (the watcher waits for it).
func (r *rotator) prepare(sites []records.Site, gossipSites bool) (out []records.Site, cutover map[wg.PublicKey]bool, release func()) {
	release = func() {}
	if r.watch != nil {
		r.watch.device.Lock()
		release = r.watch.device.Unlock
		for _, k := range r.watch.take() {
			r.markCutOver(k) // already done on the device: never undo it
		}
	}
	r.offerPSKs(sites)
	if gossipSites {
		r.holdSwitches(sites) // confirm.go
	}
	for i := range sites {
		sites[i].PSK, sites[i].NextPSK = r.psks[sites[i].PublicKey], r.psks[sites[i].Next]
	}
	return sites, r.cutover, release
}

// applied is the rotation's part after a reconcile applied wgcfg for sites;
// complete says whether everything applied. It forgets the pre-shared keys
// of peers gone and acks what the apply did for rotating sites (only then),
// and tells the watcher what to watch.
func (r *rotator) applied(sites []records.Site, wgcfg wg.Config, complete, gossipSites bool) {
	r.sites, r.wgcfg = sites, wgcfg
	if gossipSites && complete {
		r.prunePSKs(wgcfg)
	}
	if complete {
		r.afterApply(sites)
	}
	r.publishWatch(sites)
}
