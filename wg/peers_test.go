package wg

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t *testing.T) PrivateKey {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestApplyIsMinimal(t *testing.T) {
	self := mustKey(t)
	b, c, d := mustKey(t).Public(), mustKey(t).Public(), mustKey(t).Public()
	fake := wgtest.NewClient("dcm0")
	peerB := Peer{PublicKey: b, Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: pfx("10.2.0.0/16"), PersistentKeepalive: 25 * time.Second}
	peerC := Peer{PublicKey: c, Endpoint: netip.MustParseAddrPort("192.0.2.3:51820"), AllowedIPs: pfx("10.3.0.0/16", "10.255.0.3/32"), PersistentKeepalive: 25 * time.Second}
	want := Config{PrivateKey: self, ListenPort: 51820, Peers: []Peer{peerB, peerC}}

	ch, err := Apply(fake, "dcm0", want)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.PrivateKey || !ch.ListenPort || len(ch.Added) != 2 {
		t.Fatalf("first apply changes = %+v", ch)
	}
	sessB := fake.Session("dcm0", wgtypes.Key(b))

	// Same config again: nothing is sent at all.
	calls := fake.Calls
	if ch, err := Apply(fake, "dcm0", want); err != nil || !ch.Empty() || fake.Calls != calls {
		t.Fatalf("idempotent apply: changes=%+v err=%v calls %d→%d", ch, err, calls, fake.Calls)
	}

	// Change C's prefixes and add D: B is not mentioned, keeps its session.
	peerC.AllowedIPs = pfx("10.3.0.0/16", "10.30.0.0/16", "10.255.0.3/32")
	want.Peers = []Peer{peerB, peerC, {PublicKey: d, AllowedIPs: pfx("10.4.0.0/16")}}
	cfg, ch, err := Plan(mustDevice(t, fake), want)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplacePeers || cfg.PrivateKey != nil || cfg.ListenPort != nil {
		t.Errorf("plan touches device-wide settings: %+v", cfg)
	}
	if len(cfg.Peers) != 2 || len(ch.Updated) != 1 || ch.Updated[0] != c || len(ch.Added) != 1 || ch.Added[0] != d {
		t.Fatalf("plan = %+v, changes = %+v", cfg.Peers, ch)
	}
	// The keepalive always goes along, at its current value: see the next
	// test.
	if up := cfg.Peers[0]; up.Endpoint != nil || !up.ReplaceAllowedIPs || up.PersistentKeepaliveInterval == nil || *up.PersistentKeepaliveInterval != peerC.PersistentKeepalive {
		t.Errorf("update of C carries unchanged fields: %+v", up)
	}
	// D has no keepalive, and says so: wireguard-go would otherwise carry
	// "keepalive just turned on" over from the peer before it in the same
	// request and initiate a handshake for D at once.
	if add := cfg.Peers[1]; add.PersistentKeepaliveInterval == nil || *add.PersistentKeepaliveInterval != 0 {
		t.Errorf("new peer D without keepalive: interval %v, want an explicit 0", add.PersistentKeepaliveInterval)
	}
	if _, err := Apply(fake, "dcm0", want); err != nil {
		t.Fatal(err)
	}
	if got := fake.Session("dcm0", wgtypes.Key(b)); got != sessB {
		t.Errorf("peer B lost its session: generation %d → %d", sessB, got)
	}

	// Drop B: exactly one removal.
	want.Peers = want.Peers[1:]
	ch, err = Apply(fake, "dcm0", want)
	if err != nil || len(ch.Removed) != 1 || ch.Removed[0] != b || len(ch.Updated)+len(ch.Added) != 0 {
		t.Fatalf("remove: %+v %v", ch, err)
	}
	if fake.ReplacePeersCalls != 0 {
		t.Errorf("ReplacePeers used %d times", fake.ReplacePeersCalls)
	}
	golden := strings.Join([]string{
		"[dcm0] public=" + self.Public().Short() + " port=51820",
	}, "\n")
	if got := fake.String(); !strings.HasPrefix(got, golden) || strings.Contains(got, b.Short()) || !strings.Contains(got, "allowed=10.3.0.0/16,10.30.0.0/16,10.255.0.3/32 keepalive=25s") {
		t.Errorf("device state:\n%s", got)
	}
}

func TestPlanEndpointAndKeepalive(t *testing.T) {
	self := mustKey(t)
	b := mustKey(t).Public()
	cur := &wgtypes.Device{PrivateKey: wgtypes.Key(self.k), ListenPort: 51820, Peers: []wgtypes.Peer{{
		PublicKey:                   wgtypes.Key(b),
		Endpoint:                    mustUDP("[::ffff:192.0.2.2]:51820"),
		AllowedIPs:                  toIPNets(pfx("10.2.0.0/16")),
		PersistentKeepaliveInterval: 25 * time.Second,
	}}}
	same := Peer{PublicKey: b, Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: pfx("10.2.0.0/16"), PersistentKeepalive: 25 * time.Second}
	cases := []struct {
		name   string
		mutate func(*Peer)
		check  func(wgtypes.PeerConfig) bool
	}{
		{"v4-mapped endpoint equals v4", func(*Peer) {}, nil},
		{"no endpoint keeps learned one", func(p *Peer) { p.Endpoint = netip.AddrPort{} }, nil},
		{"allowed IPs in another order", func(p *Peer) { p.AllowedIPs = pfx("10.2.0.0/16", "10.2.0.0/16") }, nil},
		{"endpoint moves", func(p *Peer) { p.Endpoint = netip.MustParseAddrPort("192.0.2.9:51820") },
			func(pc wgtypes.PeerConfig) bool {
				return pc.Endpoint.String() == "192.0.2.9:51820" && !pc.ReplaceAllowedIPs
			}},
		{"keepalive off", func(p *Peer) { p.PersistentKeepalive = 0 },
			func(pc wgtypes.PeerConfig) bool { return *pc.PersistentKeepaliveInterval == 0 && pc.Endpoint == nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := same
			c.mutate(&p)
			cfg, ch, err := Plan(cur, Config{PrivateKey: self, ListenPort: 51820, Peers: []Peer{p}})
			if err != nil {
				t.Fatal(err)
			}
			if c.check == nil {
				if !ch.Empty() {
					t.Fatalf("expected no change, got %+v", cfg)
				}
				return
			}
			if len(cfg.Peers) != 1 || !c.check(cfg.Peers[0]) {
				t.Fatalf("plan = %+v", cfg.Peers)
			}
		})
	}
}

func TestPlanRejectsBadConfig(t *testing.T) {
	self := mustKey(t)
	b := mustKey(t).Public()
	cases := map[string]Config{
		"no private key":    {ListenPort: 1},
		"own key as peer":   {PrivateKey: self, Peers: []Peer{{PublicKey: self.Public()}}},
		"duplicate peer":    {PrivateKey: self, Peers: []Peer{{PublicKey: b}, {PublicKey: b}}},
		"zero peer key":     {PrivateKey: self, Peers: []Peer{{}}},
		"port out of range": {PrivateKey: self, ListenPort: 70000},
	}
	for name, cfg := range cases {
		if _, _, err := Plan(&wgtypes.Device{}, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustDevice(t *testing.T, c Client) *wgtypes.Device {
	t.Helper()
	d, err := c.Device("dcm0")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustUDP(s string) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
}
