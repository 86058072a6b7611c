package rotation

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

// Rotator owns this site's WireGuard key, its rotation, the other sites'
// rotations as this site follows them, and the pre-shared keys: every piece
// of state a rotation touches. The agent's loop drives it (prepare before a
// reconcile computes, applied after it applies, the timer, the gossip
// messages, the watcher's cut-overs); it reaches the rest of the agent only
// through Env.
type Rotator struct {
	env      Env
	log      *slog.Logger
	wgc      wg.Client
	cfg      *config.Config
	identity ed25519.PrivateKey // signs acks
	// node is this gateway's node name (trust.GatewayID.String), the name
	// its acks, nudges and PSKSites use; SetNode, cfg.Site until then
	node   string
	online bool // gossip runs: rotations and acks can happen

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
	watch    *Watcher                // cutover.go
	peerRot  *peerRotations          // confirm.go
	// pre-shared keys (psk.go)
	psks      wg.PresharedKeys
	pskFile   string
	pskOffers map[wg.PublicKey]pskOffer
	kem       *mlkem.DecapsulationKey768 // ours, while prepared
	// the sites and WireGuard state of the last reconcile
	sites []records.Site
	wgcfg wg.Config // slot 0's
	slots []slot    // every slot's interface (slots.go)
	// clock tells how long a switched site has been held (SetClock)
	clock func() time.Time
}

// Env is what a rotation needs of the agent. Its methods are called on the
// agent's loop, except SendTo, which the Rotator calls off the loop.
type Env interface {
	// Publish signs and sends a new record of this site (with the
	// Rotator's part of it: RecordKeys).
	Publish() error
	// LiveSites are the remote sites a rotation waits for.
	LiveSites() []records.Site
	// SendTo sends a message to one site directly; it may block.
	SendTo(site string, msg []byte) error
	// Kick asks the loop for a reconcile.
	Kick()
	// Counted counts a rotation's result.
	Counted(result control.RotateResult)
}

// KeySet is this site's WireGuard keys as stored: the device must use the
// next key from the moment the switch was persisted.
type KeySet struct {
	Store     *wg.KeyStore
	State     wg.RotationState
	Key, Next wg.PrivateKey
}

// LoadKeys reads the WireGuard keys and rotation state of cfg.
func LoadKeys(cfg *config.Config) (KeySet, error) {
	ks := KeySet{Store: wg.NewKeyStore(cfg.PrivateKeyFile, cfg.StateDir.Rotation())}
	cur, next, st, err := ks.Store.Load()
	if err != nil {
		return KeySet{}, fmt.Errorf("private_key_file: %w", err)
	}
	ks.State, ks.Key, ks.Next = st, cur, next
	if (st.Phase == wg.PhaseSwitching || st.Phase == wg.PhaseSwitched) && !next.IsZero() {
		ks.Key, ks.Next = next, wg.PrivateKey{}
	}
	for i, p := range cfg.Peers {
		if p.PublicKey == ks.Key.Public() {
			return KeySet{}, fmt.Errorf("config %s: peers[%d].public_key is this site's own public key (from %s)", cfg.Path, i, cfg.PrivateKeyFile)
		}
	}
	return ks, nil
}

// New starts from the keys and pre-shared keys read from cfg's files.
// Its device client is set once the device is open (SetDevice).
func New(cfg *config.Config, ks KeySet, psks wg.PresharedKeys, env Env, log *slog.Logger) *Rotator {
	if ks.State.Phase != wg.PhaseStable {
		log.Info("resuming a key rotation interrupted by a restart", "phase", string(ks.State.Phase), "epoch", ks.State.Epoch)
	}
	r := &Rotator{env: env, log: log, cfg: cfg, cutover: map[wg.PublicKey]bool{}, ackedPre: map[string]uint64{},
		ackedCut: map[wg.PublicKey]bool{}, siteKeys: map[string]wg.PublicKey{}, psks: psks, pskFile: cfg.StateDir.PSK(),
		pskOffers: map[wg.PublicKey]pskOffer{}}
	r.useKeys(ks)
	return r
}

// SetNode sets this gateway's node name (trust.GatewayID.String: "fra1"
// for gateway 0, "fra1.1" for gateway 1): the From of its acks, the name in
// its nudges and switching notices, what it looks for in a peer's
// PSKSites. Until it is called, the site name (gateway 0's node name).
func (r *Rotator) SetNode(name string) { r.node = name }

// nodeName is the node name SetNode set, else the site name.
func (r *Rotator) nodeName() string {
	if r.node != "" {
		return r.node
	}
	return r.cfg.Site
}

// SetDevice gives the Rotator the client of the open device.
func (r *Rotator) SetDevice(wgc wg.Client) { r.wgc = wgc }

// Key is the private key the device must use now.
func (r *Rotator) Key() wg.PrivateKey { return r.key }

// State is the rotation state of this site's key, as persisted.
func (r *Rotator) State() wg.RotationState { return r.state }

// NextRotation is when the next scheduled rotation starts (zero: none).
func (r *Rotator) NextRotation() time.Time { return r.nextRotation }

// CutOvers are the next keys of rotating sites that carry the sites'
// prefixes now (the caller must not change the map).
func (r *Rotator) CutOvers() map[wg.PublicKey]bool { return r.cutover }

// SetClock replaces the clock that times how long a site that switched is
// held back (SwitchGrace); tests move it instead of waiting.
func (r *Rotator) SetClock(now func() time.Time) { r.clock = now }

func (r *Rotator) now() time.Time {
	if r.clock != nil {
		return r.clock()
	}
	return time.Now()
}

func (r *Rotator) useKeys(ks KeySet) {
	r.keys, r.state, r.key, r.next = ks.Store, ks.State, ks.Key, ks.Next
}

// Rotating reports whether a rotation of this site is under way.
func (r *Rotator) Rotating() bool { return r.state.Phase != wg.PhaseStable }

// Reload takes a new configuration, and the keys read from it unless a
// rotation is under way (it owns the key files then). It reports whether
// the key changed.
func (r *Rotator) Reload(cfg *config.Config, ks *KeySet, identity ed25519.PrivateKey) bool {
	old := r.key
	r.cfg, r.identity = cfg, identity
	if ks != nil && ks.State.Phase == wg.PhaseStable && !r.Rotating() {
		r.useKeys(*ks)
	}
	return !old.Equal(r.key)
}

// Start is called once gossip runs: it finishes what a restart interrupted
// and schedules the next rotation.
func (r *Rotator) Start(identity ed25519.PrivateKey) {
	r.online, r.identity = true, identity
	r.resumeRotation()
	r.scheduleRotation()
}

// RecordKeys fills this site's keys into its record: the current key and,
// while prepared, the next one with the KEM key for the pre-shared keys;
// and the sites it holds a pre-shared key for.
func (r *Rotator) RecordKeys(rec *trust.Record) error {
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

// Prepare is the rotation's part before a reconcile computes the desired
// state from sites: it takes the cut-overs the watcher made (done on the
// device: never undone), answers new KEM keys, holds back sites that
// switched until their handshake, and gives each site its pre-shared keys.
// It returns the sites to program and the keys cut over to; release must
// be called after the apply (the watcher waits for it).
func (r *Rotator) Prepare(sites []records.Site, gossipSites bool) (out []records.Site, cutover map[wg.PublicKey]bool, release func()) {
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

// Applied is the rotation's part after a reconcile applied wgcfg for sites;
// complete says whether everything applied. It forgets the pre-shared keys
// of peers gone and acks what the apply did for rotating sites (only then),
// and tells the watcher what to watch.
func (r *Rotator) Applied(sites []records.Site, wgcfg wg.Config, complete, gossipSites bool) {
	r.sites, r.wgcfg = sites, wgcfg
	if gossipSites && complete {
		r.prunePSKs(r.allPeers())
	}
	if complete {
		r.afterApply(sites)
	}
	r.publishWatch(sites)
}
