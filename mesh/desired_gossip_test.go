package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
)

var (
	keyD = mustPub("D+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyE = mustPub("E+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyF = mustPub("F+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// validConfig's static peers plus gossip sites, applied to fake devices.
func TestDesiredStateGossipGolden(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	sites := []records.Site{
		{Name: "lon1", PublicKey: keyD, Endpoint: netip.MustParseAddrPort("192.0.2.4:51820"),
			Prefixes: prefixes("10.4.0.0/16", "fd00:4::/48", "10.255.0.4/32")},
		{Name: "ams1", PublicKey: keyE, Endpoint: netip.MustParseAddrPort("192.0.2.5:51820"), // static peer's name
			Prefixes: prefixes("10.5.0.0/16")},
		{Name: "nyc1", PublicKey: keyC, Endpoint: netip.MustParseAddrPort("192.0.2.7:51820"), // par1's key
			Prefixes: prefixes("10.7.0.0/16")},
		{Name: "sfo1", PublicKey: keyF, Endpoint: netip.MustParseAddrPort("192.0.2.6:51820"),
			Prefixes: prefixes("10.3.128.0/17", "10.6.0.0/16", "10.2.5.0/24", "10.255.0.6/32")},
		{Name: "fra2", PublicKey: key.Public(), Endpoint: netip.MustParseAddrPort("192.0.2.8:51820"), // this site's own key
			Prefixes: prefixes("10.8.0.0/16")},
	}
	d := computeDesired(cfg, key, 1380, sites, nil)

	got := renderDesired(t, d)
	want := fmt.Sprintf(`[dcm0] public=%s port=51821
  peer B+GAjH2c endpoint=192.0.2.2:51820 allowed=10.2.0.0/16,10.255.0.2/32 keepalive=25s
  peer C+GAjH2c endpoint=- allowed=10.3.0.0/16 keepalive=0s
  peer D+GAjH2c endpoint=192.0.2.4:51820 allowed=10.4.0.0/16,10.255.0.4/32,fd00:4::/48 keepalive=25s
  peer F+GAjH2c endpoint=192.0.2.6:51820 allowed=10.6.0.0/16,10.255.0.6/32 keepalive=25s
link dcm0 mtu 1380 up
  addr 10.255.0.1/32
route 10.2.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.2/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.4/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.6/32 dev dcm0 proto 220 metric 50 table 100
route 10.3.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.4.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.6.0.0/16 dev dcm0 proto 220 metric 50 table 100
route fd00:4::/48 dev dcm0 proto 220 metric 50 table 100
route unreachable 10.2.0.0/16 proto 220 metric 51 table 100
route unreachable 10.255.0.2/32 proto 220 metric 51 table 100
route unreachable 10.255.0.4/32 proto 220 metric 51 table 100
route unreachable 10.255.0.6/32 proto 220 metric 51 table 100
route unreachable 10.3.0.0/16 proto 220 metric 51 table 100
route unreachable 10.4.0.0/16 proto 220 metric 51 table 100
route unreachable 10.6.0.0/16 proto 220 metric 51 table 100
route unreachable fd00:4::/48 proto 220 metric 51 table 100
`, key.Public().Short())
	if got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	wantDropped := []string{
		"ams1: name or WireGuard key of a static peer",
		"nyc1: name or WireGuard key of a static peer",
		"sfo1 10.3.128.0/17: overlaps a static peer",
		"sfo1 10.2.5.0/24: overlaps a static peer",
		"fra2: name or WireGuard key of a static peer",
	}
	if !slices.Equal(d.Dropped, wantDropped) {
		t.Errorf("dropped:\n%q\nwant:\n%q", d.Dropped, wantDropped)
	}
}

func TestDesiredStateGossipConflicts(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	ep := netip.MustParseAddrPort("192.0.2.9:51820")
	static := map[wg.PublicKey][]netip.Prefix{
		keyB: prefixes("10.2.0.0/16", "10.255.0.2/32"),
		keyC: prefixes("10.3.0.0/16"),
	}
	staticRoutes := prefixes("10.2.0.0/16", "10.255.0.2/32", "10.3.0.0/16")
	cases := []struct {
		name        string
		sites       []records.Site
		wantPeers   map[wg.PublicKey][]netip.Prefix // gossip peers only
		wantRoutes  []netip.Prefix                  // after the static ones
		wantDropped []string
	}{
		{
			name:      "no conflict",
			sites:     []records.Site{{Name: "lon1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")}},
			wantPeers: map[wg.PublicKey][]netip.Prefix{keyD: prefixes("10.4.0.0/16")}, wantRoutes: prefixes("10.4.0.0/16"),
		},
		{
			name:        "name of a static peer",
			sites:       []records.Site{{Name: "par1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")}},
			wantDropped: []string{"par1: name or WireGuard key of a static peer"},
		},
		{
			name:        "key of a static peer",
			sites:       []records.Site{{Name: "lon1", PublicKey: keyB, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")}},
			wantDropped: []string{"lon1: name or WireGuard key of a static peer"},
		},
		{
			name:        "this site's own key",
			sites:       []records.Site{{Name: "lon1", PublicKey: key.Public(), Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")}},
			wantDropped: []string{"lon1: name or WireGuard key of a static peer"},
		},
		{
			name: "prefix inside a static peer's: dropped from that site only",
			sites: []records.Site{
				{Name: "lon1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16", "10.3.1.0/24", "10.255.0.4/32")},
				{Name: "sfo1", PublicKey: keyF, Endpoint: ep, Prefixes: prefixes("10.6.0.0/16")},
			},
			wantPeers: map[wg.PublicKey][]netip.Prefix{
				keyD: prefixes("10.4.0.0/16", "10.255.0.4/32"),
				keyF: prefixes("10.6.0.0/16"),
			},
			wantRoutes:  prefixes("10.4.0.0/16", "10.255.0.4/32", "10.6.0.0/16"),
			wantDropped: []string{"lon1 10.3.1.0/24: overlaps a static peer"},
		},
		{
			name:        "prefix covering a static peer's",
			sites:       []records.Site{{Name: "lon1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.0.0.0/8", "fd00:4::/48")}},
			wantPeers:   map[wg.PublicKey][]netip.Prefix{keyD: prefixes("fd00:4::/48")},
			wantRoutes:  prefixes("fd00:4::/48"),
			wantDropped: []string{"lon1 10.0.0.0/8: overlaps a static peer"},
		},
		{
			name:        "every prefix lost: still a peer",
			sites:       []records.Site{{Name: "lon1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.255.0.2/32")}},
			wantPeers:   map[wg.PublicKey][]netip.Prefix{keyD: nil},
			wantDropped: []string{"lon1 10.255.0.2/32: overlaps a static peer"},
		},
		{
			name: "dropped site does not shadow a later one",
			sites: []records.Site{
				{Name: "ams1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")},
				{Name: "lon1", PublicKey: keyE, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")},
			},
			wantPeers:   map[wg.PublicKey][]netip.Prefix{keyE: prefixes("10.4.0.0/16")},
			wantRoutes:  prefixes("10.4.0.0/16"),
			wantDropped: []string{"ams1: name or WireGuard key of a static peer"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := computeDesired(cfg, key, 1400, c.sites, nil)
			if d.WG.PrivateKey.Public() != key.Public() || d.WG.ListenPort != 51821 {
				t.Errorf("device %v port %d", d.WG.PrivateKey.Public(), d.WG.ListenPort)
			}
			want := map[wg.PublicKey][]netip.Prefix{}
			for k, v := range static {
				want[k] = v
			}
			for k, v := range c.wantPeers {
				want[k] = v
			}
			if len(d.WG.Peers) != len(want) {
				t.Errorf("%d peers, want %d", len(d.WG.Peers), len(want))
			}
			for _, p := range d.WG.Peers {
				w, ok := want[p.PublicKey]
				if !ok {
					t.Errorf("unexpected peer %s", p.PublicKey.Short())
					continue
				}
				if !slices.Equal(p.AllowedIPs, w) {
					t.Errorf("peer %s allowed %v, want %v", p.PublicKey.Short(), p.AllowedIPs, w)
				}
				if _, isStatic := static[p.PublicKey]; !isStatic {
					if p.Endpoint != ep || p.PersistentKeepalive != cfg.PersistentKeepalive {
						t.Errorf("peer %s endpoint %v keepalive %v", p.PublicKey.Short(), p.Endpoint, p.PersistentKeepalive)
					}
				}
			}
			wantRoutes := append(slices.Clone(staticRoutes), c.wantRoutes...)
			if !slices.Equal(d.Net.Routes, wantRoutes) || !slices.Equal(d.Net.FailClosed, wantRoutes) {
				t.Errorf("routes %v fail-closed %v, want %v", d.Net.Routes, d.Net.FailClosed, wantRoutes)
			}
			if !slices.Equal(d.Dropped, c.wantDropped) {
				t.Errorf("dropped %q, want %q", d.Dropped, c.wantDropped)
			}
			if d.Net.MTU != 1400 || d.Net.Link != "dcm0" || d.Net.Table != 100 || d.Net.Metric != 50 ||
				!slices.Equal(d.Net.Addresses, prefixes("10.255.0.1/32")) {
				t.Errorf("net %+v", d.Net)
			}
		})
	}
}
