package gossip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// Gossip-key rotation, memberlist's way: every node first installs the new
// key (it decrypts with it, still sends with the old one), then every node
// uses it (sends with it; the others already decrypt it), then every node
// removes the old one. No step needs all nodes to act at once, so there is
// no partition at any moment; the agent runs the steps, waiting before
// UseKey until every reachable site holds the new key.
//
// Two keyrings must agree: memberlist's, and the screening transport's
// (screen.go), which authenticates every stream and datagram before
// memberlist sees it. InstallKey adds to memberlist's first and RemoveKey
// takes from the screener's first, so the screener never passes what
// memberlist cannot decrypt.
//
// A node holds at most MaxKeys keys: the one it sends with and one more.
// That is all a rotation needs; it bounds what one unauthenticated datagram
// costs (one AES-GCM trial per key); and it keeps memberlist's RemoveKey
// from shifting its key list in place under readers (it does unless the key
// removed is the last one, which the second of two always is).
//
// A node that was down during the whole rotation still holds only the old
// key once it has been removed everywhere: every node refuses its packets
// and streams, and it cannot rejoin until it is handed the new key — for
// example the CA-signed bundle (trust.SealGossipKey) through its control
// socket — and installs and uses it (or restarts with it).

// MaxKeys is how many gossip keys a node holds at once.
const MaxKeys = 2

// keyID names a key in status output and logs: the first 8 bytes, in hex,
// of its SHA-256 — trust.GossipKeyID's formula.
func keyID(k []byte) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:8])
}

// keySet is an immutable list of keys, the primary (sending) key first.
type keySet struct{ keys [][]byte }

func (ks *keySet) aeads() ([]cipher.AEAD, error) {
	out := make([]cipher.AEAD, 0, len(ks.keys))
	for _, k := range ks.keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		a, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// keyRing is the screener's view of the keys: swapped whole, read per
// message without a lock.
type keyRing struct{ cur atomic.Pointer[keySet] }

func (r *keyRing) load() *keySet { return r.cur.Load() }

func (r *keyRing) store(keys [][]byte) {
	cp := make([][]byte, len(keys))
	for i, k := range keys {
		cp[i] = slices.Clone(k)
	}
	r.cur.Store(&keySet{keys: cp})
}

func checkKey(k []byte) error {
	if len(k) != 32 {
		return fmt.Errorf("gossip key must be 32 bytes (AES-256), got %d", len(k))
	}
	return nil
}

// initKeys sets up both keyrings with the primary key.
func (g *Gossip) initKeys(primary []byte) error {
	if err := checkKey(primary); err != nil {
		return err
	}
	kr, err := memberlist.NewKeyring(nil, slices.Clone(primary))
	if err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	g.mlKeyring = kr
	g.ring = &keyRing{}
	g.ring.store([][]byte{primary})
	return nil
}

// keysLocked returns the current keys, primary first. g.keyMu is held.
func (g *Gossip) keysLocked() [][]byte { return g.ring.load().keys }

func indexOf(keys [][]byte, k []byte) int {
	return slices.IndexFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) })
}

// InstallKey adds k to the keyring: messages sealed with it are accepted
// from now on, while this node still sends with its primary key. Installing
// a key already held does nothing. With MaxKeys keys held, remove the
// non-primary one first.
func (g *Gossip) InstallKey(k []byte) error {
	if err := checkKey(k); err != nil {
		return err
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	keys := g.keysLocked()
	if indexOf(keys, k) >= 0 {
		return nil
	}
	if len(keys) >= MaxKeys {
		return fmt.Errorf("gossip keyring holds %d keys already (primary %s, also %s): remove %s first",
			len(keys), keyID(keys[0]), keyID(keys[1]), keyID(keys[1]))
	}
	if err := g.mlKeyring.AddKey(slices.Clone(k)); err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	g.ring.store(append(slices.Clone(keys), k))
	g.log.Info("gossip key installed", "key_id", keyID(k), "primary", keyID(keys[0]))
	return nil
}

// UseKey makes the installed key k the primary one: this node sends with it
// from now on. Every node this one talks to must hold k already
// (InstallKey), or it stops understanding this node.
func (g *Gossip) UseKey(k []byte) error {
	if err := checkKey(k); err != nil {
		return err
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	keys := g.keysLocked()
	i := indexOf(keys, k)
	if i < 0 {
		return fmt.Errorf("gossip key %s is not installed: InstallKey first", keyID(k))
	}
	if i == 0 {
		return nil
	}
	if err := g.mlKeyring.UseKey(keys[i]); err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	next := [][]byte{keys[i]}
	for j, o := range keys {
		if j != i {
			next = append(next, o)
		}
	}
	g.ring.store(next)
	g.log.Info("gossip key in use", "key_id", keyID(k), "previous", keyID(keys[0]))
	return nil
}

// RemoveKey removes k from the keyring: messages sealed with it are refused
// from now on. The primary key cannot be removed (UseKey another first);
// removing a key not held does nothing.
func (g *Gossip) RemoveKey(k []byte) error {
	if err := checkKey(k); err != nil {
		return err
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	keys := g.keysLocked()
	i := indexOf(keys, k)
	switch {
	case i < 0:
		return nil
	case i == 0:
		return fmt.Errorf("gossip key %s is the primary key: use another key before removing it", keyID(k))
	}
	// The screener first: from here on nothing sealed with k reaches
	// memberlist.
	g.ring.store(slices.Delete(slices.Clone(keys), i, i+1))
	if err := g.mlKeyring.RemoveKey(keys[i]); err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	g.log.Info("gossip key removed", "key_id", keyID(k), "primary", keyID(keys[0]))
	return nil
}

// KeyIDs names the keys held: the primary (sending) key and all of them,
// primary first. Ids, never keys.
func (g *Gossip) KeyIDs() (primary string, all []string) {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	keys := g.keysLocked()
	for _, k := range keys {
		all = append(all, keyID(k))
	}
	return all[0], all
}
