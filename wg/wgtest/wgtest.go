// Package wgtest provides an in-memory fake of the wgctrl client that wg.Apply
// drives, for tests that must run without root or a kernel.
//
// The fake applies wgtypes.Config with the kernel's semantics (ReplacePeers,
// Remove, ReplaceAllowedIPs, allowed IPs moving between peers) and keeps a
// session generation per peer: a peer that is removed and added again gets a
// new generation, exactly as it would lose its WireGuard session, so tests can
// assert that untouched peers keep their sessions. String renders the device
// as text for golden comparisons.
package wgtest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Client is a fake wgctrl client holding any number of devices.
type Client struct {
	mu      sync.Mutex
	devices map[string]*wgtypes.Device
	gen     map[string]map[wgtypes.Key]int // device → peer → session generation
	nextGen int
	kaSent  map[string]map[wgtypes.Key]int // device → peer → keepalives turned on
	// Calls counts ConfigureDevice calls; ReplacePeersCalls those that set
	// ReplacePeers.
	Calls             int
	ReplacePeersCalls int
	// ConfigureErr, if set, is returned by ConfigureDevice without applying.
	ConfigureErr error
}

// NewClient returns a fake with empty devices of the given names.
func NewClient(names ...string) *Client {
	c := &Client{devices: map[string]*wgtypes.Device{}, gen: map[string]map[wgtypes.Key]int{}, kaSent: map[string]map[wgtypes.Key]int{}}
	for _, n := range names {
		c.devices[n] = &wgtypes.Device{Name: n, Type: wgtypes.Userspace}
		c.gen[n] = map[wgtypes.Key]int{}
		c.kaSent[n] = map[wgtypes.Key]int{}
	}
	return c
}

// Device returns a deep copy of the named device.
func (c *Client) Device(name string) (*wgtypes.Device, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[name]
	if !ok {
		return nil, os.ErrNotExist
	}
	cp := *d
	cp.Peers = make([]wgtypes.Peer, len(d.Peers))
	for i, p := range d.Peers {
		cp.Peers[i] = p
		cp.Peers[i].AllowedIPs = slices.Clone(p.AllowedIPs)
	}
	return &cp, nil
}

// ConfigureDevice applies cfg with the semantics of the kernel module.
func (c *Client) ConfigureDevice(name string, cfg wgtypes.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[name]
	if !ok {
		return os.ErrNotExist
	}
	c.Calls++
	if c.ConfigureErr != nil {
		return c.ConfigureErr
	}
	if cfg.PrivateKey != nil {
		d.PrivateKey = *cfg.PrivateKey
		d.PublicKey = cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
	}
	if cfg.ReplacePeers {
		c.ReplacePeersCalls++
		d.Peers = nil
		c.gen[name] = map[wgtypes.Key]int{}
		c.kaSent[name] = map[wgtypes.Key]int{}
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
				delete(c.gen[name], pc.PublicKey)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(d.Peers) - 1
			c.nextGen++
			c.gen[name][pc.PublicKey] = c.nextGen
		}
		p := &d.Peers[i]
		if pc.Endpoint != nil {
			e := *pc.Endpoint
			p.Endpoint = &e
		}
		if pc.PersistentKeepaliveInterval != nil {
			// The kernel and wireguard-go send a keepalive at once when it
			// turns on, and only then.
			if p.PersistentKeepaliveInterval == 0 && *pc.PersistentKeepaliveInterval != 0 {
				c.kaSent[name][pc.PublicKey]++
			}
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.PresharedKey != nil {
			p.PresharedKey = *pc.PresharedKey
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		for _, ipn := range pc.AllowedIPs {
			// An allowed IP belongs to one peer per device: adding it here
			// takes it from any other peer, as the kernel does.
			for j := range d.Peers {
				d.Peers[j].AllowedIPs = slices.DeleteFunc(d.Peers[j].AllowedIPs, func(n net.IPNet) bool { return n.String() == ipn.String() })
			}
			p = &d.Peers[i]
			p.AllowedIPs = append(p.AllowedIPs, ipn)
		}
	}
	return nil
}

// Session returns the session generation of a peer: it changes whenever the
// peer is removed and added again. 0 means the peer is absent.
func (c *Client) Session(device string, peer wgtypes.Key) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen[device][peer]
}

// KeepalivesSent counts the keepalives the device sent a peer key because
// its persistent keepalive turned on (from 0 to an interval, a new peer
// included), which is how a configuration makes a device send one now.
func (c *Client) KeepalivesSent(device string, peer wgtypes.Key) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kaSent[device][peer]
}

// SetPeerStats sets what the device reports about a peer's traffic, as if
// it had completed a handshake at hs and counted rx and tx bytes. An absent
// peer is an error.
func (c *Client) SetPeerStats(device string, peer wgtypes.Key, hs time.Time, rx, tx int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[device]
	if !ok {
		return os.ErrNotExist
	}
	i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == peer })
	if i < 0 {
		return fmt.Errorf("no peer %s on %s", short(peer), device)
	}
	d.Peers[i].LastHandshakeTime, d.Peers[i].ReceiveBytes, d.Peers[i].TransmitBytes = hs, rx, tx
	return nil
}

// String renders every device like `wg showconf`, sorted, without private keys.
func (c *Client) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for n := range c.devices {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		d := c.devices[n]
		fmt.Fprintf(&b, "[%s] public=%s port=%d\n", n, short(d.PublicKey), d.ListenPort)
		peers := slices.Clone(d.Peers)
		slices.SortFunc(peers, func(a, b wgtypes.Peer) int { return strings.Compare(a.PublicKey.String(), b.PublicKey.String()) })
		for _, p := range peers {
			var prefixes []netip.Prefix
			for _, n := range p.AllowedIPs {
				prefixes = append(prefixes, canonical(n))
			}
			slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
				if c := a.Addr().Compare(b.Addr()); c != 0 {
					return c
				}
				return a.Bits() - b.Bits()
			})
			var ips []string
			for _, p := range prefixes {
				ips = append(ips, p.String())
			}
			ep := "-"
			if p.Endpoint != nil {
				ep = p.Endpoint.String()
			}
			fmt.Fprintf(&b, "  peer %s endpoint=%s allowed=%s keepalive=%s\n",
				short(p.PublicKey), ep, strings.Join(ips, ","), p.PersistentKeepaliveInterval)
		}
	}
	return b.String()
}

func short(k wgtypes.Key) string {
	if k == (wgtypes.Key{}) {
		return "-"
	}
	return k.String()[:8]
}

func canonical(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
