package wg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// RotationPhase is where a site is in replacing its WireGuard key.
//
//	stable ──Prepare──▶ prepared ──BeginSwitch──▶ switching ──MarkSwitched──▶ switched ──Commit──▶ stable
//
// Every phase is persisted before it takes effect, so an agent killed at any
// moment resumes from the file: prepared (next key on disk and announced, the
// device still on the current one), switching (the device may or may not
// have the next key: set it), switched (the device has it: finish).
type RotationPhase string

const (
	PhaseStable    RotationPhase = "stable"
	PhasePrepared  RotationPhase = "prepared"
	PhaseSwitching RotationPhase = "switching"
	PhaseSwitched  RotationPhase = "switched"
)

// RotationState is the persisted rotation state of a site.
type RotationState struct {
	// Epoch counts completed rotations.
	Epoch uint64        `json:"epoch"`
	Phase RotationPhase `json:"phase"`
	// Started is when the rotation under way began.
	Started time.Time `json:"started,omitzero"`
	// Emergency marks a rotation that does not wait for peers.
	Emergency bool `json:"emergency,omitempty"`
	// KeySince is when the current key became current.
	KeySince time.Time `json:"key_since,omitzero"`
	// LastResult describes how the last rotation ended.
	LastResult string `json:"last_result,omitempty"`
}

// KeyStore keeps a site's WireGuard keys and rotation state on disk: the
// current key at KeyPath, the next one at KeyPath+".next" during a rotation,
// and the state (JSON) at StatePath. All files are 0600 and written
// atomically.
type KeyStore struct {
	KeyPath   string
	NextPath  string
	StatePath string
}

// NewKeyStore returns the store for the key at keyPath with its rotation
// state at statePath.
func NewKeyStore(keyPath, statePath string) *KeyStore {
	return &KeyStore{KeyPath: keyPath, NextPath: keyPath + ".next", StatePath: statePath}
}

// maxRotationStateSize bounds rotation.json, a few hundred bytes.
const maxRotationStateSize = 64 << 10

// ErrCorruptState means the rotation state file exists but cannot be used.
var ErrCorruptState = errors.New("corrupt rotation state")

// Load returns the keys and state. During prepared and switching the next
// key must exist. In switched, the next key may already have replaced the
// current one (a crash after the rename); then next is zero. A missing state
// file is a stable site at epoch 0.
func (ks *KeyStore) Load() (cur, next PrivateKey, st RotationState, err error) {
	st, err = ks.loadState()
	if err != nil {
		return cur, next, st, err
	}
	if cur, err = ReadPrivateKeyFile(ks.KeyPath); err != nil {
		return cur, next, st, err
	}
	switch st.Phase {
	case PhaseStable:
		return cur, next, st, nil
	case PhasePrepared, PhaseSwitching:
		if next, err = ReadPrivateKeyFile(ks.NextPath); err != nil {
			return cur, next, st, fmt.Errorf("rotation state %s says %s but the next key is unusable: %w", ks.StatePath, st.Phase, err)
		}
	case PhaseSwitched:
		if _, serr := os.Lstat(ks.NextPath); serr == nil { // a link there is refused, not skipped
			if next, err = ReadPrivateKeyFile(ks.NextPath); err != nil {
				return cur, next, st, err
			}
		}
	default:
		return cur, next, st, fmt.Errorf("%s: %w: unknown phase %q", ks.StatePath, ErrCorruptState, st.Phase)
	}
	return cur, next, st, nil
}

func (ks *KeyStore) loadState() (RotationState, error) {
	raw, err := ReadStateFile(ks.StatePath, maxRotationStateSize)
	if errors.Is(err, fs.ErrNotExist) {
		st := RotationState{Phase: PhaseStable}
		if fi, err := os.Stat(ks.KeyPath); err == nil {
			st.KeySince = fi.ModTime()
		}
		return st, nil
	}
	if err != nil {
		return RotationState{}, err
	}
	var st RotationState
	err = json.Unmarshal(raw, &st)
	if err == nil && st.Phase == "" {
		err = errors.New("no phase")
	}
	if err != nil {
		return RotationState{}, fmt.Errorf("%s: %w (%v): it records which WireGuard key is in use, so dcmesh will not guess; restore it, or remove it and %s.next to keep the current key", ks.StatePath, ErrCorruptState, err, ks.KeyPath)
	}
	return st, nil
}

func (ks *KeyStore) save(st RotationState) error {
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(ks.StatePath, append(raw, '\n'), 0o600)
}

// Prepare starts a rotation from stable: it writes a new key to NextPath
// (durably, before anything announces it) and persists phase prepared.
func (ks *KeyStore) Prepare(st RotationState, now time.Time, emergency bool) (PrivateKey, RotationState, error) {
	if st.Phase != PhaseStable {
		return PrivateKey{}, st, fmt.Errorf("a rotation is already under way (phase %s)", st.Phase)
	}
	// Commit will rename the next key over KeyPath: refuse now, not after
	// the switch, if that would leave the retired key behind a link.
	if err := checkReplaceable(ks.KeyPath); err != nil {
		return PrivateKey{}, st, fmt.Errorf("private_key_file: %w", err)
	}
	next, err := GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, st, err
	}
	if err := WritePrivateKeyFile(ks.NextPath, next, true); err != nil {
		return PrivateKey{}, st, err
	}
	st.Phase, st.Started, st.Emergency = PhasePrepared, now, emergency
	if err := ks.save(st); err != nil {
		return PrivateKey{}, st, err
	}
	return next, st, nil
}

// BeginSwitch persists phase switching: from here on, a restart uses the
// next key.
func (ks *KeyStore) BeginSwitch(st RotationState) (RotationState, error) {
	return ks.advance(st, PhasePrepared, PhaseSwitching, "switch keys")
}

// MarkSwitched persists that the device now uses the next key.
func (ks *KeyStore) MarkSwitched(st RotationState) (RotationState, error) {
	return ks.advance(st, PhaseSwitching, PhaseSwitched, "mark switched")
}

// advance moves st from one phase to the next on disk. On failure it returns
// st unchanged: what is on disk, so the caller never believes in a phase
// that was not persisted.
func (ks *KeyStore) advance(st RotationState, from, to RotationPhase, what string) (RotationState, error) {
	if st.Phase != from {
		return st, fmt.Errorf("cannot %s in phase %s", what, st.Phase)
	}
	next := st
	next.Phase = to
	if err := ks.save(next); err != nil {
		return st, err
	}
	return next, nil
}

// Commit ends a rotation: the next key replaces the current one (rename, so
// the old private key is gone from disk) and the state returns to stable with
// the epoch incremented.
func (ks *KeyStore) Commit(st RotationState, now time.Time, result string) (RotationState, error) {
	if st.Phase != PhaseSwitched {
		return st, fmt.Errorf("cannot commit a rotation in phase %s", st.Phase)
	}
	if _, err := os.Lstat(ks.NextPath); err == nil {
		if err := checkReplaceable(ks.KeyPath); err != nil {
			// Keep private_key_file: the next key is found next to it.
			return st, fmt.Errorf("replace the WireGuard key: %w (a rotation is under way: put the file in place of the link, keep private_key_file as it is, and restart)", err)
		}
		if err := os.Rename(ks.NextPath, ks.KeyPath); err != nil {
			return st, fmt.Errorf("replace the WireGuard key: %w", err)
		}
		if err := SyncDir(filepath.Dir(ks.KeyPath)); err != nil {
			return st, fmt.Errorf("replace the WireGuard key: %w", err)
		}
	}
	st = RotationState{Epoch: st.Epoch + 1, Phase: PhaseStable, KeySince: now, LastResult: result}
	return st, ks.save(st)
}

// SaveResult persists st (a stable state whose LastResult changed).
func (ks *KeyStore) SaveResult(st RotationState) error { return ks.save(st) }

// SwitchKey gives the device its new private key and, in the same call,
// makes it send a keepalive to every peer that owns allowed IPs, which
// starts a handshake under the new key at once instead of at the next
// packet (or never, on an idle tunnel). Sessions under the old key keep
// receiving until the peers cut over. Peers without allowed IPs (other
// sites' pre-installed next keys) are never made to initiate.
//
// Re-setting an unchanged keepalive does nothing: the kernel and
// wireguard-go send one only when the keepalive turns on (device/uapi.go
// pkaOn, netlink.c set_peer). So each peer is listed twice, keepalive 0
// then its interval; see keepaliveToggle.
//
// psks, if not nil, sets the pre-shared key of every peer in the same call
// (zero for peers without one), so that the first handshake under the new
// key already uses the new pre-shared key on both ends.
func SwitchKey(c Client, name string, key PrivateKey, psks PresharedKeys) error {
	dev, err := c.Device(name)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", name, err)
	}
	k := key.k
	cfg := wgtypes.Config{PrivateKey: &k}
	for _, p := range dev.Peers {
		pc := wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true}
		if psks != nil {
			psk := psks[PublicKey(p.PublicKey)].k
			pc.PresharedKey = &psk
		}
		if len(p.AllowedIPs) == 0 {
			if pc.PresharedKey != nil {
				cfg.Peers = append(cfg.Peers, pc)
			}
			continue
		}
		cfg.Peers = append(cfg.Peers, keepaliveToggle(pc, p.PersistentKeepaliveInterval)...)
	}
	if err := c.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("switch WireGuard key on %s: %w", name, err)
	}
	return nil
}

// keepaliveToggle returns first (a peer's update) followed by the entries
// that turn its keepalive off and on again within one configuration, which
// makes the device send a keepalive now (initiating a handshake if there is
// no session), leaving the keepalive at interval. For a peer without a
// keepalive it turns on a 1-second one and off again.
func keepaliveToggle(first wgtypes.PeerConfig, interval time.Duration) []wgtypes.PeerConfig {
	off, on := time.Duration(0), interval
	first.PersistentKeepaliveInterval = &off
	out := []wgtypes.PeerConfig{first}
	if on == 0 {
		on = time.Second
	}
	out = append(out, wgtypes.PeerConfig{PublicKey: first.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &on})
	if interval == 0 {
		out = append(out, wgtypes.PeerConfig{PublicKey: first.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &off})
	}
	return out
}

// SendKeepalive makes the device send one keepalive to peer now (a
// handshake initiation if it has no session with it), leaving its keepalive
// interval as configured. A peer that is not on the device is not created.
func SendKeepalive(c Client, name string, peer PublicKey) error {
	dev, err := c.Device(name)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", name, err)
	}
	i := slices.IndexFunc(dev.Peers, func(p wgtypes.Peer) bool { return PublicKey(p.PublicKey) == peer })
	if i < 0 {
		return fmt.Errorf("send a keepalive on %s: no peer %s", name, peer.Short())
	}
	pcs := keepaliveToggle(wgtypes.PeerConfig{PublicKey: wgtypes.Key(peer), UpdateOnly: true}, dev.Peers[i].PersistentKeepaliveInterval)
	if err := c.ConfigureDevice(name, wgtypes.Config{Peers: pcs}); err != nil {
		return fmt.Errorf("send a keepalive on %s: %w", name, err)
	}
	return nil
}

// CutOver moves each old key's allowed IPs and keepalive (as last desired in
// cfg) to the new key that replaces it and removes the old key, all in one
// device call: the kernel and wireguard-go move allowed IPs between peers
// atomically, so no packet finds neither. pairs maps new key → old key.
func CutOver(c Client, name string, cfg Config, pairs map[PublicKey]PublicKey) error {
	var pcs []wgtypes.PeerConfig
	for next, old := range pairs {
		i := slices.IndexFunc(cfg.Peers, func(p Peer) bool { return p.PublicKey == old })
		if i < 0 {
			continue
		}
		p := cfg.Peers[i]
		ka := p.PersistentKeepalive
		pcs = append(pcs,
			wgtypes.PeerConfig{PublicKey: wgtypes.Key(next), UpdateOnly: true, ReplaceAllowedIPs: true,
				AllowedIPs: toIPNets(p.AllowedIPs), PersistentKeepaliveInterval: &ka},
			wgtypes.PeerConfig{PublicKey: wgtypes.Key(old), Remove: true})
	}
	if len(pcs) == 0 {
		return nil
	}
	if err := c.ConfigureDevice(name, wgtypes.Config{Peers: pcs}); err != nil {
		return fmt.Errorf("cut over on %s: %w", name, err)
	}
	return nil
}
