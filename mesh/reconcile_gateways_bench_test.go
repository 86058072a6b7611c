package mesh

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// newGatewayScaleMesh is newScaleMesh (fakes) with, for gateways 2, a
// second gateway for each of the n remote sites (addSecondGateways), and
// every peer with a fresh handshake: both gateways of each site healthy,
// so each site's prefix goes over a nexthop group of both slots (issue
// 12's "16 sites × 2 gateways"). It returns the mesh and the gateways 1.
func newGatewayScaleMesh(tb testing.TB, n, gateways int) (*scaleMesh, []*scaleSite) {
	tb.Helper()
	m := newScaleMesh(tb, n)
	m.rt.openSlot = func(o wg.DeviceOptions) (wg.Device, error) {
		m.nl.AddLink(o.Name, o.MTU)
		return fakeSlotDevice{o.Name}, nil
	}
	var g1s []*scaleSite
	if gateways == 2 {
		g1s = m.addSecondGateways(tb)
	}
	wgc := m.wg.Client.(*wgtest.Client)
	for _, iface := range []string{"dcm0", "dcm0g1"} {
		dev, err := wgc.Device(iface)
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range dev.Peers {
			if err := wgc.SetPeerStats(iface, p.PublicKey, time.Now(), 1, 1); err != nil {
				tb.Fatal(err)
			}
		}
	}
	m.reconcile(tb) // healthy: the groups get both members
	m.reconcile(tb)
	return m, g1s
}

// addSecondGateways certifies a gateway 1 for each remote site of m (the
// site's prefix, overlay 100.65.x.y), offers its record and reconciles
// (which opens slot 1's device), and returns them.
func (m *scaleMesh) addSecondGateways(tb testing.TB) []*scaleSite {
	tb.Helper()
	var g1s []*scaleSite
	for i, s := range m.sites {
		c, k := trusttest.IssueWith(tb, m.ca, s.name, trusttest.CertOptions{Gateway: 1, Overlay: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)})},
			fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&0xff))
		g1 := &scaleSite{testSite: testSite{c, k}, name: s.name + ".1"}
		m.offer(tb, g1, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(i, 1)}})
		g1s = append(g1s, g1)
	}
	// Not m.reconcile: the new slot's device gets its key and port.
	if err := m.a.reconcile(m.rt); err != nil {
		tb.Fatal(err)
	}
	return g1s
}

// freshHandshakes reports every peer of every device with a handshake
// just now. The namespace benchmark's remote gateways are not real, and a
// gateway without a handshake (and without probes) is not healthy: without
// this, no nexthop group would have members.
type freshHandshakes struct{ wg.Client }

func (c freshHandshakes) Device(name string) (*wgtypes.Device, error) {
	d, err := c.Client.Device(name)
	if err == nil {
		for i := range d.Peers {
			d.Peers[i].LastHandshakeTime = time.Now()
		}
	}
	return d, err
}

// The mesh BenchmarkReconcileGateways measures is what it says: 16 sites,
// each one peer on dcm0 and one on dcm0g1, each site's prefix over a
// nexthop group of both, and a steady reconcile writes nothing.
func TestGatewayScaleMeshLayout(t *testing.T) {
	const n = 16
	m, _ := newGatewayScaleMesh(t, n, 2)
	for _, iface := range []string{"dcm0", "dcm0g1"} {
		dev, err := m.wg.Device(iface)
		if err != nil {
			t.Fatal(err)
		}
		want := n
		if iface == "dcm0" {
			want += len(m.rt.cfg.Peers) // validConfig's static peers
		}
		if len(dev.Peers) != want {
			t.Errorf("%s holds %d peers, want %d", iface, len(dev.Peers), want)
		}
	}
	kernel := m.nl.String()
	for i := range n {
		prefix := fmt.Sprintf("route 172.16.%d.0/24 nhid", i)
		if strings.Count(kernel, prefix) != 1 {
			t.Errorf("no group route %q in\n%s", prefix, kernel)
			break
		}
	}
	if peers, net := m.reconcile(t); len(peers)+len(net) != 0 {
		t.Errorf("a steady reconcile wrote peers %v, kernel %v", peers, net)
	}
}

// BenchmarkReconcileGateways is BenchmarkReconcile for remote sites of
// two gateways beside one-gateway meshes of as many sites and as many
// gateways (fakes: dcmesh's own work), every peer with a fresh handshake:
//
//	go test -run '^$' -bench 'ReconcileGateways' -benchmem ./mesh
func BenchmarkReconcileGateways(b *testing.B) {
	for _, c := range []struct{ sites, gateways int }{{16, 1}, {32, 1}, {16, 2}} {
		b.Run(fmt.Sprintf("sites=%d/gateways=%d/steady", c.sites, c.gateways), func(b *testing.B) {
			m, _ := newGatewayScaleMesh(b, c.sites, c.gateways)
			b.ResetTimer()
			for b.Loop() {
				m.reconcile(b)
			}
		})
	}
	b.Run("sites=16/gateways=2/one-change", func(b *testing.B) {
		m, g1s := newGatewayScaleMesh(b, 16, 2)
		s, g := g1s[8], 1
		b.ResetTimer()
		for b.Loop() {
			b.StopTimer()
			g = 3 - g
			m.offer(b, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(8, g)}})
			b.StartTimer()
			if peers, _ := m.reconcile(b); len(peers) != 1 {
				b.Fatalf("one change wrote %d peers", len(peers))
			}
		}
	})
}
