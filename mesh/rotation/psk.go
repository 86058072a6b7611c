package rotation

import (
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"slices"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Pre-shared keys (rotation.psk: true): a post-quantum hedge against traffic
// recorded today and decrypted once Curve25519 falls. Each pair of sites gets
// a WireGuard pre-shared key that changes with every rotation of either site:
//
//   - the rotating site A publishes a fresh ML-KEM-768 encapsulation key in
//     its prepared record;
//   - each peer B encapsulates a secret to it, derives the pair's key
//     HKDF-SHA256(secret, "dcmesh psk v1" ‖ A's new key ‖ B's key), puts it
//     on the pre-installed peer A2, persists it, and sends the ciphertext in
//     its signed pre-install ack;
//   - A decapsulates, derives the same key and sets it on peer B in the very
//     device call that switches A's private key, so the first handshake under
//     the new key is also the first under the new pre-shared key, on both
//     ends.
//
// A then lists in its records the sites it holds a key for; a peer that is
// not listed (its ack came too late) clears its own, so the pair falls back
// to no pre-shared key rather than to a mismatch. Emergency rotations skip
// the exchange (no waiting), which leaves the site's pairs without one until
// its next rotation. Pairs where either side has psk off have none.

const pskInfo = "dcmesh psk v1"

// pskOffer is what a peer did for one rotating site's announced KEM key.
type pskOffer struct {
	ek         []byte // the encapsulation key it answered
	ciphertext []byte // sent in the pre-install ack
}

// derivePSK turns a KEM shared secret into the pair's pre-shared key.
func derivePSK(secret []byte, rotatingNext, peer wg.PublicKey) (wg.PresharedKey, error) {
	info := pskInfo + string(rotatingNext[:]) + string(peer[:])
	k, err := hkdf.Key(sha256.New, secret, nil, info, wg.KeyLen)
	if err != nil {
		return wg.PresharedKey{}, err
	}
	defer clear(k)
	return wg.NewPresharedKey(k)
}

// offerPSKs runs before each reconcile on the peer side: for every rotating
// site that published a KEM key we have not answered, encapsulate, derive
// and persist the pair's new key (before the pre-install that uses it).
func (r *Rotator) offerPSKs(sites []records.Site) {
	if !r.cfg.Rotation.PSK {
		return
	}
	changed := false
	me := r.key.Public()
	for _, s := range sites {
		if s.Next.IsZero() || len(s.KEM) == 0 {
			continue
		}
		if o, ok := r.pskOffers[s.Next]; ok && slices.Equal(o.ek, s.KEM) {
			continue
		}
		ek, err := mlkem.NewEncapsulationKey768(s.KEM)
		if err != nil {
			r.log.Warn("rotation: unusable KEM key; no pre-shared key for this pair", "site", s.Node(), "err", err)
			continue
		}
		secret, ct := ek.Encapsulate()
		psk, err := derivePSK(secret, s.Next, me)
		clear(secret)
		if err != nil {
			continue
		}
		r.psks[s.Next] = psk
		r.pskOffers[s.Next] = pskOffer{ek: slices.Clone(s.KEM), ciphertext: ct}
		changed = true
	}
	// A site that switched to a key we made an offer for tells us in its
	// record whether it took the offer. If it did not (our ack came too
	// late), drop ours too. Either way the offer is settled: later records
	// do not touch a key agreed in another rotation.
	for _, s := range sites {
		if _, offered := r.pskOffers[s.PublicKey]; !offered || !s.Next.IsZero() {
			continue
		}
		if !slices.Contains(s.PSKSites, r.nodeName()) {
			delete(r.psks, s.PublicKey)
			changed = true
		}
		delete(r.pskOffers, s.PublicKey)
	}
	if changed {
		r.savePSKs()
	}
}

// prunePSKs forgets keys of peers that are gone from cfg.
func (r *Rotator) prunePSKs(cfg wg.Config) {
	keep := map[wg.PublicKey]bool{}
	for _, p := range cfg.Peers {
		keep[p.PublicKey] = true
	}
	changed := false
	for k := range r.psks {
		if !keep[k] {
			delete(r.psks, k)
			delete(r.pskOffers, k)
			changed = true
		}
	}
	if changed {
		r.savePSKs()
	}
}

func (r *Rotator) savePSKs() {
	if err := wg.SavePresharedKeys(r.pskFile, r.psks); err != nil {
		r.log.Error("cannot persist pre-shared keys", "err", err)
	}
}

// acceptPSK is the rotating side of an ack that carries a ciphertext.
func (r *Rotator) acceptPSK(ack *trust.Ack, peerKey wg.PublicKey) {
	if r.kem == nil || len(ack.KEMCiphertext) == 0 || r.run == nil {
		return
	}
	secret, err := r.kem.Decapsulate(ack.KEMCiphertext)
	if err != nil {
		return
	}
	psk, err := derivePSK(secret, r.run.key, peerKey)
	clear(secret)
	if err == nil {
		r.run.psk[ack.From] = psk
	}
}

// switchPSKs is the set of pre-shared keys the device gets with the new
// private key: what it holds, with each site's current key given the key
// agreed in this rotation, or none.
func (r *Rotator) switchPSKs() wg.PresharedKeys {
	if !r.cfg.Rotation.PSK {
		return nil
	}
	m := wg.PresharedKeys{}
	for k, v := range r.psks {
		m[k] = v
	}
	for _, s := range r.sites {
		var psk wg.PresharedKey
		ok := false
		if r.run != nil {
			psk, ok = r.run.psk[s.Node()]
		}
		if ok {
			m[s.PublicKey] = psk
		} else {
			delete(m, s.PublicKey)
		}
	}
	return m
}

// pskSites lists the sites whose current key we hold a pre-shared key for.
func (r *Rotator) pskSites() []string {
	var out []string
	for _, s := range r.sites {
		if _, ok := r.psks[s.PublicKey]; ok {
			out = append(out, s.Node())
		}
	}
	slices.Sort(out)
	return out
}
