package wg

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config is the desired state of one WireGuard device.
type Config struct {
	PrivateKey PrivateKey
	ListenPort int
	Peers      []Peer
}

// Peer is the desired state of one peer.
type Peer struct {
	PublicKey PublicKey
	// Endpoint is where to send handshakes; the zero value means none (the
	// peer must initiate). An endpoint the device learned by roaming is not
	// overwritten unless the configured one changes.
	Endpoint netip.AddrPort
	// AllowedIPs are the prefixes routed to this peer and accepted from it.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive keeps the session established; 0 disables it.
	PersistentKeepalive time.Duration
	// PresharedKey of the pair; zero means none.
	PresharedKey PresharedKey
}

// Client is the part of *wgctrl.Client that Apply uses; wgtest.Client fakes it.
type Client interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
}

// Changes summarises what Apply changed, for logs.
type Changes struct {
	PrivateKey bool
	ListenPort bool
	Added      []PublicKey
	Updated    []PublicKey
	Removed    []PublicKey
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return !c.PrivateKey && !c.ListenPort && len(c.Added)+len(c.Updated)+len(c.Removed) == 0
}

// Apply moves device name to want with the smallest configuration that gets
// there. It never sets ReplacePeers: peers whose configuration is unchanged are
// not mentioned, so their sessions survive.
func Apply(c Client, name string, want Config) (Changes, error) {
	dev, err := c.Device(name)
	if err != nil {
		return Changes{}, fmt.Errorf("read WireGuard device %s: %w", name, err)
	}
	return ApplyTo(c, dev, want)
}

// ApplyTo is Apply from cur, the device as the caller just read it: a
// caller that needs the device for more than the diff reads it once (a
// read lists every peer, the larger part of a reconcile's cost).
func ApplyTo(c Client, cur *wgtypes.Device, want Config) (Changes, error) {
	cfg, ch, err := Plan(cur, want)
	if err != nil {
		return Changes{}, err
	}
	if ch.Empty() {
		return ch, nil
	}
	if err := c.ConfigureDevice(cur.Name, cfg); err != nil {
		return Changes{}, fmt.Errorf("configure WireGuard device %s: %w", cur.Name, err)
	}
	return ch, nil
}

// Plan computes the minimal wgtypes.Config that turns cur into want. It is a
// pure function.
func Plan(cur *wgtypes.Device, want Config) (wgtypes.Config, Changes, error) {
	var cfg wgtypes.Config
	var ch Changes
	if err := want.validate(); err != nil {
		return cfg, ch, err
	}
	if cur.PrivateKey != want.PrivateKey.k {
		k := want.PrivateKey.k
		cfg.PrivateKey = &k
		ch.PrivateKey = true
	}
	if cur.ListenPort != want.ListenPort {
		p := want.ListenPort
		cfg.ListenPort = &p
		ch.ListenPort = true
	}

	have := make(map[PublicKey]*wgtypes.Peer, len(cur.Peers))
	for i := range cur.Peers {
		have[PublicKey(cur.Peers[i].PublicKey)] = &cur.Peers[i]
	}
	for _, w := range want.Peers {
		h, ok := have[w.PublicKey]
		delete(have, w.PublicKey)
		if !ok {
			cfg.Peers = append(cfg.Peers, newPeerConfig(w))
			ch.Added = append(ch.Added, w.PublicKey)
			continue
		}
		if pc, changed := updatePeerConfig(h, w); changed {
			cfg.Peers = append(cfg.Peers, pc)
			ch.Updated = append(ch.Updated, w.PublicKey)
		}
	}
	// Removals come last and in key order so the plan is deterministic.
	var gone []PublicKey
	for k := range have {
		gone = append(gone, k)
	}
	slices.SortFunc(gone, func(a, b PublicKey) int { return slices.Compare(a[:], b[:]) })
	for _, k := range gone {
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: wgtypes.Key(k), Remove: true})
		ch.Removed = append(ch.Removed, k)
	}
	return cfg, ch, nil
}

func (c Config) validate() error {
	if c.PrivateKey.IsZero() {
		return errors.New("WireGuard config: no private key")
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("WireGuard config: listen port %d out of range", c.ListenPort)
	}
	self := c.PrivateKey.Public()
	seen := make(map[PublicKey]bool, len(c.Peers))
	for _, p := range c.Peers {
		switch {
		case p.PublicKey.IsZero():
			return errors.New("WireGuard config: a peer has no public key")
		case p.PublicKey == self:
			return fmt.Errorf("WireGuard config: peer %s is this device's own public key", p.PublicKey)
		case seen[p.PublicKey]:
			return fmt.Errorf("WireGuard config: peer %s appears twice", p.PublicKey)
		}
		seen[p.PublicKey] = true
	}
	return nil
}

func newPeerConfig(w Peer) wgtypes.PeerConfig {
	pc := wgtypes.PeerConfig{
		PublicKey:         wgtypes.Key(w.PublicKey),
		ReplaceAllowedIPs: true,
		AllowedIPs:        toIPNets(w.AllowedIPs),
	}
	if w.Endpoint.IsValid() {
		pc.Endpoint = net.UDPAddrFromAddrPort(w.Endpoint)
	}
	// Always sent, 0 included: wireguard-go keeps its "keepalive just
	// turned on, send one now" flag from one peer to the next within a
	// request (device/uapi.go ipcSetPeer.pkaOn), so a peer created without
	// the line after one with a keepalive would initiate a handshake at
	// once — the crossing handshakes firstHandshakeDelay exists to avoid
	// (5 s lost), and a pre-installed next key must never initiate.
	ka := w.PersistentKeepalive
	pc.PersistentKeepaliveInterval = &ka
	if !w.PresharedKey.IsZero() {
		psk := w.PresharedKey.k
		pc.PresharedKey = &psk
	}
	return pc
}

// updatePeerConfig returns a PeerConfig carrying only the fields that differ.
func updatePeerConfig(h *wgtypes.Peer, w Peer) (wgtypes.PeerConfig, bool) {
	pc := wgtypes.PeerConfig{PublicKey: wgtypes.Key(w.PublicKey)}
	changed := false
	if w.Endpoint.IsValid() && (h.Endpoint == nil || unmapAddrPort(h.Endpoint.AddrPort()) != unmapAddrPort(w.Endpoint)) {
		pc.Endpoint = net.UDPAddrFromAddrPort(w.Endpoint)
		changed = true
	}
	if !samePrefixSet(fromIPNets(h.AllowedIPs), w.AllowedIPs) {
		pc.ReplaceAllowedIPs = true
		pc.AllowedIPs = toIPNets(w.AllowedIPs)
		changed = true
	}
	if h.PersistentKeepaliveInterval != w.PersistentKeepalive {
		changed = true
	}
	ka := w.PersistentKeepalive // always: see newPeerConfig
	pc.PersistentKeepaliveInterval = &ka
	if subtle.ConstantTimeCompare(h.PresharedKey[:], w.PresharedKey.k[:]) != 1 {
		psk := w.PresharedKey.k // zero clears it
		pc.PresharedKey = &psk
		changed = true
	}
	return pc, changed
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func samePrefixSet(a, b []netip.Prefix) bool {
	norm := func(ps []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(ps))
		for _, p := range ps {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
		slices.SortFunc(out, comparePrefix)
		return slices.Compact(out)
	}
	return slices.Equal(norm(a), norm(b))
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func toIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		out = append(out, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

func fromIPNets(ns []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ns))
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out
}
