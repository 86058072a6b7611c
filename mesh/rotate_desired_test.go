package mesh

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keyN is lon1's next key (renders as Iu1Vja+L, after every other peer).
var keyN = trusttest.WGKey("lon1-next")

// rotSites returns lon1 (rotating to next unless zero) and sfo1.
func rotSites(cur, next wg.PublicKey) []records.Site {
	return []records.Site{
		{Name: "lon1", PublicKey: cur, Next: next, Seq: 7, Endpoint: netip.MustParseAddrPort("192.0.2.4:51820"),
			Prefixes: prefixes("10.4.0.0/16", "10.255.0.4/32")},
		{Name: "sfo1", PublicKey: keyF, Seq: 3, Endpoint: netip.MustParseAddrPort("192.0.2.6:51820"),
			Prefixes: prefixes("10.6.0.0/16", "10.255.0.6/32")},
	}
}

// cfgRecorder records every configuration sent to a device.
type cfgRecorder struct {
	wg.Client
	cfgs []wgtypes.Config
}

func (r *cfgRecorder) ConfigureDevice(name string, cfg wgtypes.Config) error {
	r.cfgs = append(r.cfgs, cfg)
	return r.Client.ConfigureDevice(name, cfg)
}

// rotFakes is one site's fake device and kernel.
type rotFakes struct {
	wg   *cfgRecorder
	fake *wgtest.Client // behind wg
	nl   *netconfigtest.Fake
}

func newRotFakes() *rotFakes {
	nl := netconfigtest.NewFake()
	nl.AddLink("dcm0", 1420)
	fake := wgtest.NewClient("dcm0")
	return &rotFakes{wg: &cfgRecorder{Client: fake}, fake: fake, nl: nl}
}

// apply programs d and returns the WireGuard and route changes.
func (f *rotFakes) apply(t *testing.T, d desiredState) (wg.Changes, netconfig.Changes) {
	t.Helper()
	wch, err := wg.Apply(f.wg, "dcm0", d.WG)
	if err != nil {
		t.Fatalf("wg.Apply: %v", err)
	}
	nch, err := netconfig.New(f.nl, nil).Apply(d.Net)
	if err != nil {
		t.Fatalf("netconfig Apply: %v", err)
	}
	return wch, nch
}

func (f *rotFakes) String() string { return f.fake.String() + f.nl.String() }

func (f *rotFakes) sessions(keys ...wg.PublicKey) map[wg.PublicKey]int {
	out := map[wg.PublicKey]int{}
	for _, k := range keys {
		out[k] = f.fake.Session("dcm0", wgtypes.Key(k))
	}
	return out
}

func rotConfig(t *testing.T) (*config.Config, wg.PrivateKey) {
	t.Helper()
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return cfg, key
}

const rotRoutes = `link dcm0 mtu 1380 up
  addr 10.255.0.1/32
route 10.2.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.2/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.4/32 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.6/32 dev dcm0 proto 220 metric 50 table 100
route 10.3.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.4.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.6.0.0/16 dev dcm0 proto 220 metric 50 table 100
route unreachable 10.2.0.0/16 proto 220 metric 51 table 100
route unreachable 10.255.0.2/32 proto 220 metric 51 table 100
route unreachable 10.255.0.4/32 proto 220 metric 51 table 100
route unreachable 10.255.0.6/32 proto 220 metric 51 table 100
route unreachable 10.3.0.0/16 proto 220 metric 51 table 100
route unreachable 10.4.0.0/16 proto 220 metric 51 table 100
route unreachable 10.6.0.0/16 proto 220 metric 51 table 100
`

const rotStaticPeers = `  peer B+GAjH2c endpoint=192.0.2.2:51820 allowed=10.2.0.0/16,10.255.0.2/32 keepalive=25s
  peer C+GAjH2c endpoint=- allowed=10.3.0.0/16 keepalive=0s
`

// A rotating site not yet cut over: its next key is a second peer with the
// endpoint, no allowed IPs and no keepalive; routes are those of the same
// site without a next key.
func TestDesiredRotationPreinstall(t *testing.T) {
	cfg, key := rotConfig(t)
	stable := newRotFakes()
	stable.apply(t, computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil))

	d := computeDesired(cfg, key, 1380, rotSites(keyD, keyN), nil)
	if len(d.Dropped) != 0 {
		t.Errorf("dropped %q", d.Dropped)
	}
	var next, cur *wg.Peer
	for i := range d.WG.Peers {
		switch d.WG.Peers[i].PublicKey {
		case keyN:
			next = &d.WG.Peers[i]
		case keyD:
			cur = &d.WG.Peers[i]
		}
	}
	if next == nil || cur == nil {
		t.Fatalf("peers: next present %v, current present %v", next != nil, cur != nil)
	}
	if len(next.AllowedIPs) != 0 || next.PersistentKeepalive != 0 || next.Endpoint != netip.MustParseAddrPort("192.0.2.4:51820") {
		t.Errorf("next peer %+v: want the endpoint, no allowed IPs, keepalive 0", *next)
	}
	if !slices.Equal(cur.AllowedIPs, prefixes("10.4.0.0/16", "10.255.0.4/32")) || cur.PersistentKeepalive != cfg.PersistentKeepalive {
		t.Errorf("current peer %+v", *cur)
	}

	f := newRotFakes()
	f.apply(t, d)
	want := fmt.Sprintf(`[dcm0] public=%s port=51821
`+rotStaticPeers+`  peer D+GAjH2c endpoint=192.0.2.4:51820 allowed=10.4.0.0/16,10.255.0.4/32 keepalive=25s
  peer F+GAjH2c endpoint=192.0.2.6:51820 allowed=10.6.0.0/16,10.255.0.6/32 keepalive=25s
  peer %s endpoint=192.0.2.4:51820 allowed= keepalive=0s
`+rotRoutes, key.Public().Short(), keyN.Short())
	if got := f.String(); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if f.nl.String() != stable.nl.String() {
		t.Errorf("routes differ from the same site without a next key:\n%s\nwithout:\n%s", f.nl.String(), stable.nl.String())
	}
	if !slices.Equal(d.Net.Routes, computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil).Net.Routes) {
		t.Error("desired routes differ from the stable site's")
	}

	// From the stable device, pre-installing is one call that adds the next
	// key and touches nothing else.
	base := len(stable.wg.cfgs)
	before := stable.sessions(keyB, keyC, keyD, keyF)
	wch, nch := stable.apply(t, d)
	if len(stable.wg.cfgs) != base+1 || len(wch.Added) != 1 || wch.Added[0] != keyN || len(wch.Updated)+len(wch.Removed) != 0 {
		t.Errorf("pre-install: %d calls, changes %+v", len(stable.wg.cfgs)-base, wch)
	}
	if !nch.Empty() {
		t.Errorf("pre-install changed routes: %v", nch)
	}
	if after := stable.sessions(keyB, keyC, keyD, keyF); !maps.Equal(after, before) {
		t.Errorf("sessions %v → %v", before, after)
	}
	if stable.String() != want {
		t.Errorf("stable + pre-install:\n%s\nwant:\n%s", stable.String(), want)
	}
}

// Once a handshake on the next key was seen, the next key alone carries the
// site, and getting there is one device call.
func TestDesiredRotationCutover(t *testing.T) {
	cfg, key := rotConfig(t)
	d := computeDesired(cfg, key, 1380, rotSites(keyD, keyN), map[wg.PublicKey]bool{keyN: true})
	if len(d.Dropped) != 0 {
		t.Errorf("dropped %q", d.Dropped)
	}
	var keys []wg.PublicKey
	for _, p := range d.WG.Peers {
		keys = append(keys, p.PublicKey)
		if p.PublicKey == keyN && (!slices.Equal(p.AllowedIPs, prefixes("10.4.0.0/16", "10.255.0.4/32")) ||
			p.PersistentKeepalive != cfg.PersistentKeepalive || p.Endpoint != netip.MustParseAddrPort("192.0.2.4:51820")) {
			t.Errorf("next peer %+v", p)
		}
	}
	if !slices.Equal(keys, []wg.PublicKey{keyB, keyC, keyN, keyF}) {
		t.Errorf("peers %v", keys)
	}
	wantState := fmt.Sprintf(`[dcm0] public=%s port=51821
`+rotStaticPeers+`  peer F+GAjH2c endpoint=192.0.2.6:51820 allowed=10.6.0.0/16,10.255.0.6/32 keepalive=25s
  peer %s endpoint=192.0.2.4:51820 allowed=10.4.0.0/16,10.255.0.4/32 keepalive=25s
`+rotRoutes, key.Public().Short(), keyN.Short())

	// Fresh device: the golden state directly.
	fresh := newRotFakes()
	fresh.apply(t, d)
	if got := fresh.String(); got != wantState {
		t.Errorf("state:\n%s\nwant:\n%s", got, wantState)
	}

	// Pre-install, then cut over, on the same device.
	f := newRotFakes()
	f.apply(t, computeDesired(cfg, key, 1380, rotSites(keyD, keyN), nil))
	before := f.sessions(keyB, keyC, keyF, keyN)
	base := len(f.wg.cfgs)
	wch, nch := f.apply(t, d)
	if len(f.wg.cfgs) != base+1 {
		t.Fatalf("cut-over took %d ConfigureDevice calls, want 1", len(f.wg.cfgs)-base)
	}
	if f.fake.ReplacePeersCalls != 0 {
		t.Error("ReplacePeers used")
	}
	if !slices.Equal(wch.Updated, []wg.PublicKey{keyN}) || !slices.Equal(wch.Removed, []wg.PublicKey{keyD}) || len(wch.Added) != 0 || wch.PrivateKey {
		t.Errorf("cut-over changes %+v", wch)
	}
	cut := f.wg.cfgs[base]
	var removedD, gaveN bool
	for _, pc := range cut.Peers {
		switch wg.PublicKey(pc.PublicKey) {
		case keyD:
			removedD = pc.Remove
		case keyN:
			var got []string
			for _, n := range pc.AllowedIPs {
				got = append(got, n.String())
			}
			gaveN = !pc.Remove && pc.ReplaceAllowedIPs && strings.Join(got, ",") == "10.4.0.0/16,10.255.0.4/32"
		default:
			t.Errorf("cut-over mentions peer %s", pc.PublicKey.String()[:8])
		}
	}
	if !removedD || !gaveN || cut.PrivateKey != nil || cut.ReplacePeers {
		t.Errorf("cut-over call: removes old %v, gives the next key the prefixes %v, config %+v", removedD, gaveN, cut)
	}
	if !nch.Empty() {
		t.Errorf("cut-over changed routes: %v", nch)
	}
	if after := f.sessions(keyB, keyC, keyF, keyN); !maps.Equal(after, before) {
		t.Errorf("sessions %v → %v (the other sites and the pre-installed key must keep theirs)", before, after)
	}
	if got := f.String(); got != wantState {
		t.Errorf("after cut-over:\n%s\nwant:\n%s", got, wantState)
	}
}

// A next key that collides with a key already in use drops the site (for
// two gossip sites: one of them), so the device config stays valid.
func TestDesiredRotationNextKeyConflicts(t *testing.T) {
	cfg, key := rotConfig(t)
	ep := netip.MustParseAddrPort("192.0.2.4:51820")
	lon1 := func(next wg.PublicKey) records.Site {
		return records.Site{Name: "lon1", PublicKey: keyD, Next: next, Endpoint: ep, Prefixes: prefixes("10.4.0.0/16")}
	}
	sfo1 := records.Site{Name: "sfo1", PublicKey: keyF, Endpoint: ep, Prefixes: prefixes("10.6.0.0/16")}
	const lon1Dropped, sfo1Dropped = "lon1: name or WireGuard key of a static peer", "sfo1: name or WireGuard key of a static peer"
	cases := []struct {
		name   string
		sites  []records.Site
		accept [][]string // acceptable Dropped lists
		gossip bool
	}{
		{"next is a static peer's key", []records.Site{lon1(keyB), sfo1}, [][]string{{lon1Dropped}}, false},
		{"next is the other static peer's key", []records.Site{lon1(keyC), sfo1}, [][]string{{lon1Dropped}}, false},
		{"next is our own key", []records.Site{lon1(key.Public()), sfo1}, [][]string{{lon1Dropped}}, false},
		{"next is another site's key, listed before", []records.Site{sfo1, lon1(keyF)}, [][]string{{lon1Dropped}}, true},
		{"next is another site's key, listed after", []records.Site{lon1(keyF), sfo1}, [][]string{{lon1Dropped}, {sfo1Dropped}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, cut := range []map[wg.PublicKey]bool{nil, {keyF: true, keyB: true, keyC: true, key.Public(): true}} {
				d := computeDesired(cfg, key, 1380, c.sites, cut)
				ok := slices.ContainsFunc(c.accept, func(w []string) bool { return slices.Equal(d.Dropped, w) })
				if !ok {
					t.Fatalf("cutover %v: dropped %q, want one of %q", cut != nil, d.Dropped, c.accept)
				}
				f := newRotFakes()
				f.apply(t, d) // a valid config: no key twice, not our own
				got := f.String()
				if slices.Equal(d.Dropped, []string{lon1Dropped}) {
					if strings.Contains(got, "10.4.0.0/16") || strings.Contains(got, keyD.Short()) {
						t.Errorf("lon1 still programmed:\n%s", got)
					}
					if !strings.Contains(got, keyF.Short()) || !strings.Contains(got, "route 10.6.0.0/16 dev dcm0") {
						t.Errorf("sfo1 lost:\n%s", got)
					}
				}
			}
		})
	}
}

// The handshake-driven cut-over and the record-driven one (the site now
// announces current=next, no next) end in the same device state, each in
// one call from the pre-installed state, keeping the pre-installed session.
func TestDesiredRotationCutoverByRecord(t *testing.T) {
	cfg, key := rotConfig(t)
	paths := []struct {
		name  string
		steps []desiredState
	}{
		{"handshake", []desiredState{
			computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil),
			computeDesired(cfg, key, 1380, rotSites(keyD, keyN), nil),
			computeDesired(cfg, key, 1380, rotSites(keyD, keyN), map[wg.PublicKey]bool{keyN: true}),
		}},
		{"record", []desiredState{
			computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil),
			computeDesired(cfg, key, 1380, rotSites(keyD, keyN), nil),
			computeDesired(cfg, key, 1380, rotSites(keyN, wg.PublicKey{}), nil),
		}},
		{"record with a stale cutover entry", []desiredState{
			computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil),
			computeDesired(cfg, key, 1380, rotSites(keyD, keyN), nil),
			computeDesired(cfg, key, 1380, rotSites(keyN, wg.PublicKey{}), map[wg.PublicKey]bool{keyN: true}),
		}},
		{"record without pre-install (emergency)", []desiredState{
			computeDesired(cfg, key, 1380, rotSites(keyD, wg.PublicKey{}), nil),
			computeDesired(cfg, key, 1380, rotSites(keyN, wg.PublicKey{}), nil),
		}},
	}
	var final string
	for i, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			f := newRotFakes()
			for _, d := range p.steps[:len(p.steps)-1] {
				f.apply(t, d)
			}
			before := f.sessions(keyB, keyC, keyF, keyN)
			base := len(f.wg.cfgs)
			f.apply(t, p.steps[len(p.steps)-1])
			if len(f.wg.cfgs) != base+1 {
				t.Errorf("final step took %d calls, want 1", len(f.wg.cfgs)-base)
			}
			after := f.sessions(keyB, keyC, keyF, keyN)
			for _, k := range []wg.PublicKey{keyB, keyC, keyF} {
				if after[k] != before[k] {
					t.Errorf("peer %s session %d → %d", k.Short(), before[k], after[k])
				}
			}
			if before[keyN] != 0 && after[keyN] != before[keyN] {
				t.Errorf("pre-installed key re-added: session %d → %d", before[keyN], after[keyN])
			}
			if f.Session("dcm0", wgtypes.Key(keyD)) != 0 {
				t.Error("old key still a peer")
			}
			if i == 0 {
				final = f.String()
			} else if got := f.String(); got != final {
				t.Errorf("final state:\n%s\nhandshake path:\n%s", got, final)
			}
		})
	}
}

func (f *rotFakes) Session(dev string, k wgtypes.Key) int { return f.fake.Session(dev, k) }
