package mesh

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

var (
	keyG = mustPub("G+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyH = mustPub("H+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyI = mustPub("I+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
)

// A one-gateway cluster gets exactly what it got before gateways existed:
// the same single device and the same netconfig.Config, field for field,
// whatever the probes say.
func TestDesiredOneGatewayUnchanged(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	ep := netip.MustParseAddrPort("192.0.2.4:51820")
	psk, _ := wg.NewPresharedKey(make([]byte, 32))
	nextPSK, _ := wg.NewPresharedKey(slices.Repeat([]byte{2}, 32))
	inputs := map[string][]records.Site{
		"none": nil,
		"gossip golden": {
			{Name: "lon1", PublicKey: keyD, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16", "fd00:4::/48", "10.255.0.4/32")},
			{Name: "ams1", PublicKey: keyE, Endpoint: ep, Prefixes: prefixes("10.5.0.0/16")},
			{Name: "nyc1", PublicKey: keyC, Endpoint: ep, Prefixes: prefixes("10.7.0.0/16")},
			{Name: "sfo1", PublicKey: keyF, Endpoint: ep, Prefixes: prefixes("10.3.128.0/17", "10.6.0.0/16", "10.2.5.0/24", "10.255.0.6/32")},
			{Name: "fra2", PublicKey: key.Public(), Endpoint: ep, Prefixes: prefixes("10.8.0.0/16")},
		},
		"rotating with pre-shared keys": {
			{Name: "lon1", PublicKey: keyD, Next: keyG, Endpoint: ep, Overlay: netip.MustParseAddr("10.255.0.4"),
				Prefixes: prefixes("10.4.0.0/16", "10.255.0.4/32"), PSK: psk, NextPSK: nextPSK},
			{Name: "sfo1", PublicKey: keyF, Next: keyH, Endpoint: ep, Prefixes: prefixes("10.6.0.0/16")},
			{Name: "nyc1", PublicKey: keyI, Next: keyD, Endpoint: ep, Prefixes: prefixes("10.7.0.0/16")}, // next is lon1's key
		},
	}
	cutover := map[wg.PublicKey]bool{keyH: true}
	healthy := map[string]bool{"lon1": true} // one-gateway sites do not look
	for name, sites := range inputs {
		want := computeDesiredOneGatewayReference(cfg, key, 1380, sites, cutover)
		for _, in := range []gatewayInputs{{}, {Healthy: healthy}} {
			got := computeDesiredGateways(cfg, key, 1380, sites, cutover, in)
			if !reflect.DeepEqual(got.WG, want.WG) || !reflect.DeepEqual(got.Net, want.Net) || !slices.Equal(got.Dropped, want.Dropped) || got.Slots != nil {
				t.Errorf("%s: got\n%+v\nwant\n%+v", name, got, want)
			}
		}
	}
}

// gwSites is a cluster seen from gateway 1 of its site: lon1 has one
// gateway, sfo1 one too but it is gateway 1, par2 has two (weights 1 and
// 3, both healthy), rotating gateway 1's key.
func gwSites() []records.Site {
	return []records.Site{
		{Name: "lon1", PublicKey: keyD, Weight: 1, Endpoint: netip.MustParseAddrPort("192.0.2.4:51820"), Overlay: netip.MustParseAddr("10.255.0.4"),
			Prefixes: prefixes("10.4.0.0/16", "10.255.0.4/32")},
		{Name: "sfo1", Gateway: 1, Weight: 1, PublicKey: keyF, Endpoint: netip.MustParseAddrPort("192.0.2.6:51820"), Overlay: netip.MustParseAddr("10.255.0.6"),
			Prefixes: prefixes("10.6.0.0/16", "10.255.0.6/32")},
		{Name: "par2", Weight: 1, PublicKey: keyG, Endpoint: netip.MustParseAddrPort("192.0.2.7:51820"), Overlay: netip.MustParseAddr("10.255.0.7"),
			Prefixes: prefixes("10.7.0.0/16", "fd00:7::/48", "10.255.0.7/32")},
		{Name: "par2", Gateway: 1, Weight: 3, PublicKey: keyH, Next: keyI, Endpoint: netip.MustParseAddrPort("192.0.2.8:51820"), Overlay: netip.MustParseAddr("10.255.0.8"),
			Prefixes: prefixes("10.7.0.0/16", "fd00:7::/48", "10.255.0.8/32")},
	}
}

// The layout of docs/design/gateways.md: slot 1 holds every site's gateway
// 1 on dcm0g1 (port 51822), endpoints are port + our index (1), par2's
// prefixes go over a group of both its gateways, each overlay address over
// its own slot, sfo1 (one gateway, on slot 1) as a plain route.
func TestDesiredGatewaysGolden(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	in := gatewayInputs{Local: 1, Healthy: map[string]bool{"par2": true, "par2.1": true}}
	d := computeDesiredGateways(cfg, key, 1380, gwSites(), nil, in)
	got := renderDesiredSlots(t, d)
	want := fmt.Sprintf(`[dcm0] public=%[1]s port=51821
  peer B+GAjH2c endpoint=192.0.2.2:51820 allowed=10.2.0.0/16,10.255.0.2/32 keepalive=25s
  peer C+GAjH2c endpoint=- allowed=10.3.0.0/16 keepalive=0s
  peer D+GAjH2c endpoint=192.0.2.4:51821 allowed=10.4.0.0/16,10.255.0.4/32 keepalive=25s
  peer G+GAjH2c endpoint=192.0.2.7:51821 allowed=10.7.0.0/16,10.255.0.7/32,fd00:7::/48 keepalive=25s
[dcm0g1] public=%[1]s port=51822
  peer F+GAjH2c endpoint=192.0.2.6:51821 allowed=10.6.0.0/16,10.255.0.6/32 keepalive=25s
  peer H+GAjH2c endpoint=192.0.2.8:51821 allowed=10.7.0.0/16,10.255.0.8/32,fd00:7::/48 keepalive=25s
  peer I+GAjH2c endpoint=192.0.2.8:51821 allowed= keepalive=0s
link dcm0 mtu 1380 up
  addr 10.255.0.1/32
link dcm0g1 mtu 1380 up
sysctl net/ipv4/conf/dcm0/rp_filter=2
sysctl net/ipv4/conf/dcm0g1/rp_filter=2
nexthop id 414151 group 414235,3/414879 type resilient proto 220
nexthop id 414235 dev dcm0g1 proto 220
nexthop id 414879 dev dcm0 proto 220
nexthop id 16777216 blackhole proto 220
route 10.2.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.2/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.4/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.6/32 dev dcm0g1 proto 220 metric 50 table 100
route 10.255.0.7/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.8/32 dev dcm0g1 proto 220 metric 50 table 100
route 10.3.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.4.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.6.0.0/16 dev dcm0g1 proto 220 metric 50 table 100
route 10.7.0.0/16 nhid 414151 proto 220 metric 50 table 100
route fd00:7::/48 nhid 414151 proto 220 metric 50 table 100
route unreachable 10.2.0.0/16 proto 220 metric 51 table 100
route unreachable 10.255.0.2/32 proto 220 metric 51 table 100
route unreachable 10.255.0.4/32 proto 220 metric 51 table 100
route unreachable 10.255.0.6/32 proto 220 metric 51 table 100
route unreachable 10.255.0.7/32 proto 220 metric 51 table 100
route unreachable 10.255.0.8/32 proto 220 metric 51 table 100
route unreachable 10.3.0.0/16 proto 220 metric 51 table 100
route unreachable 10.4.0.0/16 proto 220 metric 51 table 100
route unreachable 10.6.0.0/16 proto 220 metric 51 table 100
route unreachable 10.7.0.0/16 proto 220 metric 51 table 100
route unreachable fd00:7::/48 proto 220 metric 51 table 100
`, key.Public().Short())
	if got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if len(d.Dropped) != 0 {
		t.Errorf("dropped %q", d.Dropped)
	}
}

// renderDesiredSlots applies d to fresh fake devices, one per slot, and
// renders the WireGuard state and the kernel state as golden text.
func renderDesiredSlots(t *testing.T, d desiredState) string {
	t.Helper()
	links := d.slotLinks()
	wgc := wgtest.NewClient(links...)
	nl := netconfigtest.NewFake()
	for i, c := range d.slotConfigs() {
		if _, err := wg.Apply(wgc, links[i], c); err != nil {
			t.Fatal(err)
		}
		nl.AddLink(links[i], 1420)
	}
	if _, err := netconfig.New(nl, nil).Apply(d.Net); err != nil {
		t.Fatal(err)
	}
	return wgc.String() + nl.String()
}

// par2's group follows health, drain, weight and standby: the healthy
// active gateways; when none, the healthy standbys (weight 1 each); when
// every healthy one drains, those (draining the last gateway in service
// must not drop the site); when none is healthy, no tunnel route, so the
// fail-closed route answers.
func TestDesiredGatewaysGroupMembers(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	both := map[string]bool{"par2": true, "par2.1": true}
	cases := []struct {
		name    string
		edit    func(gw0, gw1 *records.Site)
		healthy map[string]bool
		want    []netconfig.Member
	}{
		{"both healthy", func(_, _ *records.Site) {}, both, []netconfig.Member{{Link: "dcm0", Weight: 1}, {Link: "dcm0g1", Weight: 3}}},
		{"gateway 0 unhealthy", func(_, _ *records.Site) {}, map[string]bool{"par2.1": true}, []netconfig.Member{{Link: "dcm0g1", Weight: 3}}},
		{"none healthy", func(_, _ *records.Site) {}, nil, nil},
		{"gateway 1 drains", func(_, g1 *records.Site) { g1.Drain = true }, both, []netconfig.Member{{Link: "dcm0", Weight: 1}}},
		{"both drain: still carried, not dropped", func(g0, g1 *records.Site) { g0.Drain, g1.Drain = true, true }, both, []netconfig.Member{{Link: "dcm0", Weight: 1}, {Link: "dcm0g1", Weight: 1}}},
		{"the healthy one drains", func(g0, _ *records.Site) { g0.Drain = true }, map[string]bool{"par2": true}, []netconfig.Member{{Link: "dcm0", Weight: 1}}},
		{"drained and unhealthy", func(g0, g1 *records.Site) { g0.Drain, g1.Drain = true, true }, nil, nil},
		{"gateway 1 standby", func(_, g1 *records.Site) { g1.Weight, g1.Standby = 0, true }, both, []netconfig.Member{{Link: "dcm0", Weight: 1}}},
		{"standby alone healthy", func(_, g1 *records.Site) { g1.Weight, g1.Standby = 0, true }, map[string]bool{"par2.1": true}, []netconfig.Member{{Link: "dcm0g1", Weight: 1}}},
		{"standby healthy, active draining", func(g0, g1 *records.Site) { g0.Drain, g1.Weight, g1.Standby = true, 0, true }, both, []netconfig.Member{{Link: "dcm0g1", Weight: 1}}},
		{"two standbys", func(g0, g1 *records.Site) { g0.Weight, g1.Weight = 0, 0 }, both, []netconfig.Member{{Link: "dcm0", Weight: 1}, {Link: "dcm0g1", Weight: 1}}},
		{"weight above 256", func(g0, _ *records.Site) { g0.Weight = 1000 }, both, []netconfig.Member{{Link: "dcm0", Weight: 256}, {Link: "dcm0g1", Weight: 3}}},
	}
	for _, tc := range cases {
		sites := gwSites()
		tc.edit(&sites[2], &sites[3])
		d := computeDesiredGateways(cfg, key, 1380, sites, nil, gatewayInputs{Local: 1, Healthy: tc.healthy})
		i := slices.IndexFunc(d.Net.Groups, func(g netconfig.Group) bool { return g.Name == "par2" })
		if i < 0 {
			t.Fatalf("%s: no group par2 in %+v", tc.name, d.Net.Groups)
		}
		g := d.Net.Groups[i]
		if !slices.Equal(g.Members, tc.want) || !slices.Equal(g.Routes, prefixes("10.7.0.0/16", "fd00:7::/48")) {
			t.Errorf("%s: group %+v, want members %+v", tc.name, g, tc.want)
		}
		if !slices.Contains(d.Net.FailClosed, netip.MustParsePrefix("10.7.0.0/16")) {
			t.Errorf("%s: 10.7.0.0/16 not fail-closed: %v", tc.name, d.Net.FailClosed)
		}
		// sfo1 (one gateway) stays routed whatever its health.
		if j := slices.IndexFunc(d.Net.Groups, func(g netconfig.Group) bool { return g.Name == "sfo1" }); j < 0 || len(d.Net.Groups[j].Members) != 1 {
			t.Errorf("%s: sfo1 not routed over its one gateway: %+v", tc.name, d.Net.Groups)
		}
	}
}

// A prefix that only some of a site's gateways keep goes over a group of
// those, named after them.
func TestDesiredGatewaysPartialPrefix(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	sites := gwSites()
	sites[3].Prefixes = prefixes("10.7.0.0/16", "10.255.0.8/32") // gateway 1 has no fd00:7::/48
	d := computeDesiredGateways(cfg, key, 1380, sites, nil, gatewayInputs{Healthy: map[string]bool{"par2": true, "par2.1": true}})
	var got []string
	for _, g := range d.Net.Groups {
		got = append(got, fmt.Sprintf("%s %v %v", g.Name, g.Routes, g.Members))
	}
	want := []string{
		"sfo1 [10.6.0.0/16 10.255.0.6/32] [{dcm0g1 1}]",
		"par2.1 overlay [10.255.0.8/32] [{dcm0g1 1}]",
		"par2 [10.7.0.0/16] [{dcm0 1} {dcm0g1 3}]",
		"par2 par2 [fd00:7::/48] [{dcm0 1}]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("groups:\n%q\nwant:\n%q", got, want)
	}
	if _, err := netconfig.New(netconfigtest.NewFake(), nil).Apply(d.Net); err != nil && strings.Contains(err.Error(), "twice") {
		t.Errorf("group names collide: %v", err)
	}
}

// A slot's interface name longer than Linux allows leaves that slot's
// gateways out with an error that names interface and the fix; slot 0
// stays as it is.
func TestDesiredGatewaysInterfaceTooLong(t *testing.T) {
	cfg, err := config.Parse([]byte(strings.Replace(validConfig, "interface: dcm0", "interface: dcmesh-fabric0", 1)), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	d := computeDesiredGateways(cfg, key, 1380, gwSites(), nil, gatewayInputs{})
	if d.Slots != nil || d.Net.ExtraLinks != nil {
		t.Errorf("slots %v, extra links %v; want none", d.Slots, d.Net.ExtraLinks)
	}
	want := `sfo1.1: interface "dcmesh-fabric0": a remote site has a gateway 1, which this gateway holds on a WireGuard interface "dcmesh-fabric0g1", longer than Linux's 15 bytes; shorten interface to at most 13 bytes`
	if len(d.Dropped) != 2 || d.Dropped[0] != want || !strings.HasPrefix(d.Dropped[1], "par2.1: ") {
		t.Errorf("dropped:\n%q\nwant first:\n%q", d.Dropped, want)
	}
	if len(d.WG.Peers) != 4 { // the two static peers, lon1, par2
		t.Errorf("slot 0 peers %d, want 4", len(d.WG.Peers))
	}
}
