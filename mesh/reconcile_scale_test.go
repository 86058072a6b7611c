package mesh

// Reconcile cost at scale: with 200 gossip sites on the device, one site's
// change must cost WireGuard and netlink writes for that site only, never a
// rewrite of the mesh (the wesher failure: ReplacePeers on every change).

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/rotation"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// scaleSite is one synthetic remote site: certificate, identity, the
// sequence number of its last record.
type scaleSite struct {
	testSite
	name string
	seq  uint64
}

// scaleMesh is a local agent runtime plus n certified remote sites.
type scaleMesh struct {
	a     *Agent
	rt    *siteRuntime
	ca    *trust.CA
	wg    *cfgRecorder
	nl    *netconfigtest.Fake // nil on a real kernel
	sites []*scaleSite
}

// scaleEnv is where the mesh is programmed: fakes by default, or a real
// device and netlink.
type scaleEnv struct {
	iface string
	dev   wg.Device // nil with fakes
	wgc   wg.Client
	nl    netconfig.Netlink
}

// scaleEndpoint is site i's WireGuard endpoint, varied by generation g.
func scaleEndpoint(i, g int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(2 + g), byte(i%250 + 1)}), uint16(51820+i))
}

// newScaleMesh builds the local site fra1 (the static peers of validConfig
// plus gossip) and n remote sites, each with one /24 and its overlay
// address, on fakes; offers every record and reconciles.
func newScaleMesh(tb testing.TB, n int) *scaleMesh {
	nl := netconfigtest.NewFake()
	nl.AddLink("dcm0", 1420)
	m := newScaleMeshIn(tb, n, scaleEnv{iface: "dcm0", wgc: wgtest.NewClient("dcm0", "dcm0g1"), nl: nl})
	m.nl = nl
	return m
}

func newScaleMeshIn(tb testing.TB, n int, env scaleEnv) *scaleMesh {
	tb.Helper()
	cfg, err := config.Parse([]byte(validConfig), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Interface = env.iface
	cfg.Trust.RecordExpiry, cfg.Trust.ClockSkew = 24*time.Hour, time.Minute
	key, err := wg.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	ca := trusttest.NewCA(tb)
	own, ownKey := trusttest.IssueWith(tb, ca, "fra1", trusttest.CertOptions{Overlay: netip.MustParseAddr("10.255.0.1")}, "10.1.0.0/16")
	rec := &cfgRecorder{Client: env.wgc}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := NewAgent(Options{Logger: log})
	rt := &siteRuntime{cfg: cfg, mtu: 1380, dev: env.dev, wgc: rec, net: netconfig.New(env.nl, log),
		enr:   &enroll.Enrollment{CAs: []*x509.Certificate{ca.Cert}, Cert: own, Identity: ownKey},
		store: records.NewStore(cfg.StateDir.File("sites.json"), log)}
	rt.rot = rotation.New(cfg, rotation.KeySet{Key: key, State: wg.RotationState{Phase: wg.PhaseStable}}, wg.PresharedKeys{}, agentEnv{a, rt}, log)
	rt.rot.SetDevice(rec)
	rt.in = records.NewIngest(rt.store, rt.enr.CAs, func() *trust.Policy { return a.policy(rt) }, log)
	m := &scaleMesh{a: a, rt: rt, ca: ca, wg: rec}
	for i := range n {
		m.addSite(tb, i)
	}
	if env.dev != nil {
		if err := a.firstReconcile(rt); err != nil {
			tb.Fatal(err)
		}
	} else {
		m.reconcile(tb) // first=false: with fakes there is no device to bring up
	}
	// The first handshakes of new peers are staggered (half the keepalives
	// held back for firstHandshakeDelay); age them so the measured
	// reconciles see a settled mesh.
	for k := range rt.firstWanted {
		rt.firstWanted[k] = time.Time{}
	}
	m.reconcile(tb)
	return m
}

// addSite certifies remote site i (172.16.0.0/12 space: 4,096 sites) and
// offers its first record.
func (m *scaleMesh) addSite(tb testing.TB, i int) *scaleSite {
	tb.Helper()
	name := fmt.Sprintf("site%04d", i)
	overlay := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
	c, k := trusttest.IssueWith(tb, m.ca, name, trusttest.CertOptions{Overlay: overlay},
		fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&0xff))
	s := &scaleSite{testSite: testSite{c, k}, name: name}
	m.sites = append(m.sites, s)
	m.offer(tb, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(i, 0)}})
	return s
}

// offer signs s's next record with o and hands it to the store as gossip
// would.
func (m *scaleMesh) offer(tb testing.TB, s *scaleSite, o trusttest.RecordOptions) {
	tb.Helper()
	s.seq++
	o.Seq = s.seq
	if ok, err := m.rt.store.Consider(trusttest.SignedRecord(tb, s.cert, s.key, o), m.a.policy(m.rt)); !ok {
		tb.Fatalf("record %s seq %d refused: %v", s.name, s.seq, err)
	}
}

// reconcile runs one reconcile and returns the device and kernel writes it
// made.
func (m *scaleMesh) reconcile(tb testing.TB) (peerWrites []string, netWrites []string) {
	tb.Helper()
	nCfg, nOps := len(m.wg.cfgs), 0
	if m.nl != nil {
		nOps = len(m.nl.Ops)
	}
	before := map[wgtypes.Key]bool{}
	if dev, err := m.wg.Device(m.rt.cfg.Interface); err == nil {
		for _, p := range dev.Peers {
			before[p.PublicKey] = true
		}
	}
	if err := m.a.reconcile(m.rt); err != nil {
		tb.Fatal(err)
	}
	for _, c := range m.wg.cfgs[nCfg:] {
		if c.ReplacePeers {
			tb.Errorf("a reconcile replaced every peer")
		}
		if nCfg > 0 && (c.PrivateKey != nil || c.ListenPort != nil) {
			tb.Errorf("a reconcile rewrote the device's key or port")
		}
		for _, p := range c.Peers {
			what := "update"
			switch {
			case p.Remove:
				what = "remove"
			case !before[p.PublicKey]:
				what = "add"
			}
			peerWrites = append(peerWrites, what+" "+wg.PublicKey(p.PublicKey).Short())
		}
	}
	if m.nl != nil {
		netWrites = slices.Clone(m.nl.Ops[nOps:])
	}
	return peerWrites, netWrites
}

func TestReconcileCostIsProportionalToTheChange(t *testing.T) {
	const n = 200
	m := newScaleMesh(t, n)
	if got := len(m.rt.lastWG.Peers); got != n+2 {
		t.Fatalf("device holds %d peers, want %d (200 sites + 2 static)", got, n+2)
	}

	check := func(what string, wantPeers []string, wantNet []string) {
		t.Helper()
		peers, ops := m.reconcile(t)
		if strings.Join(peers, "\n") != strings.Join(wantPeers, "\n") {
			t.Errorf("%s: WireGuard writes\n got %q\nwant %q", what, peers, wantPeers)
		}
		if strings.Join(ops, "\n") != strings.Join(wantNet, "\n") {
			t.Errorf("%s: netlink writes\n got %q\nwant %q", what, ops, wantNet)
		}
	}
	short := func(s *scaleSite) string { return trusttest.WGKey(s.name).Short() }

	check("nothing changed", nil, nil)

	s := m.sites[17]
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(17, 1)}})
	check("one site moved its endpoint", []string{"update " + short(s)}, nil)

	s = m.sites[42]
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(42, 0)},
		Prefixes: trusttest.Prefixes(t, "172.16.42.0/25")})
	check("one site announced fewer prefixes", []string{"update " + short(s)}, []string{
		"route add 172.16.42.0/25 dev dcm0 proto 220 metric 50 table 100",
		"route add unreachable 172.16.42.0/25 proto 220 metric 51 table 100",
		"route del 172.16.42.0/24 dev dcm0 proto 220 metric 50 table 100",
		"route del unreachable 172.16.42.0/24 proto 220 metric 51 table 100",
	})

	s = m.sites[7]
	next := trusttest.WGKey("site0007-next")
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(7, 0)}, WGNext: next})
	check("one site prepared a rotation", []string{"add " + next.Short()}, nil)

	s = m.sites[99]
	m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(99, 0)}, Leaving: true})
	check("one site left", []string{"remove " + short(s)}, []string{
		"route del 100.64.0.99/32 dev dcm0 proto 220 metric 50 table 100",
		"route del unreachable 100.64.0.99/32 proto 220 metric 51 table 100",
		"route del 172.16.99.0/24 dev dcm0 proto 220 metric 50 table 100",
		"route del unreachable 172.16.99.0/24 proto 220 metric 51 table 100",
	})

	s = m.addSite(t, n)
	check("one site joined", []string{"add " + short(s)}, []string{
		"route add 100.64.0.200/32 dev dcm0 proto 220 metric 50 table 100",
		"route add unreachable 100.64.0.200/32 proto 220 metric 51 table 100",
		"route add 172.16.200.0/24 dev dcm0 proto 220 metric 50 table 100",
		"route add unreachable 172.16.200.0/24 proto 220 metric 51 table 100",
	})
	check("nothing changed again", nil, nil)
}

// BenchmarkReconcile measures one reconcile of a site with n remote sites on
// fakes (the cost of dcmesh's own work: record checks, desired state, the
// diff; not the kernel's): "steady" is the periodic resync with nothing
// changed, "one-change" a reconcile after one site moved its endpoint.
//
//	go test -run '^$' -bench Reconcile -benchmem ./mesh
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{10, 50, 200, 1000} {
		b.Run(fmt.Sprintf("sites=%d/steady", n), func(b *testing.B) {
			m := newScaleMesh(b, n)
			b.ResetTimer()
			for b.Loop() {
				m.reconcile(b)
			}
		})
		b.Run(fmt.Sprintf("sites=%d/one-change", n), func(b *testing.B) {
			m := newScaleMesh(b, n)
			s := m.sites[n/2]
			g := 0
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				g = 1 - g
				m.offer(b, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(n/2, g)}})
				b.StartTimer()
				if peers, _ := m.reconcile(b); len(peers) != 1 {
					b.Fatalf("one change wrote %d peers", len(peers))
				}
			}
		})
	}
}
