package rotation

import (
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// newSlotRotator is newTestRotator's fra1 as a gateway with two slots:
// site0000 (one gateway) on dcm0, gateway 1 of site0001 on dcm0g1, which
// rotates: its next key is pre-installed there.
func newSlotRotator(t *testing.T) (r *Rotator, fake *wgtest.Client, gw1 records.Site) {
	t.Helper()
	sites := testSites(2)
	gw1 = sites[1]
	gw1.Gateway, gw1.Next = 1, trusttest.WGKey(gw1.Name+"-next")
	r, _, _ = newTestRotator(t, sites[0])
	fake = wgtest.NewClient("dcm0", "dcm0g1")
	slot0 := r.wgcfg
	slot1 := wg.Config{PrivateKey: r.key, ListenPort: 51821, Peers: []wg.Peer{
		{PublicKey: gw1.Next, Endpoint: gw1.Endpoint},
		{PublicKey: gw1.PublicKey, Endpoint: gw1.Endpoint, AllowedIPs: gw1.Prefixes},
	}}
	for name, c := range map[string]wg.Config{"dcm0": slot0, "dcm0g1": slot1} {
		if _, err := wg.Apply(fake, name, c); err != nil {
			t.Fatal(err)
		}
	}
	r.SetDevice(fake)
	r.SetSlots([]string{"dcm0", "dcm0g1"}, []wg.Config{slot0, slot1})
	r.sites = []records.Site{sites[0], gw1}
	return r, fake, gw1
}

// The key switch is made on every slot's device: each holds remote
// gateways that must see this gateway's new key.
func TestSwitchKeyOnEverySlot(t *testing.T) {
	r, fake, _ := newSlotRotator(t)
	next, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.switchKeyEverywhere(next, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dcm0", "dcm0g1"} {
		dev, err := fake.Device(name)
		if err != nil {
			t.Fatal(err)
		}
		if wg.PublicKey(dev.PublicKey) != next.Public() {
			t.Errorf("%s still has the old key", name)
		}
	}
	// Reads for confirmations see both slots' peers.
	dev, err := r.readDevices()
	if err != nil || len(dev.Peers) != 3 {
		t.Fatalf("readDevices: %v, %d peers, want 3", err, len(dev.Peers))
	}
}

// The watcher cuts a rotating gateway over on the interface where it lives
// (slot 1), with that slot's allowed IPs.
func TestWatcherCutsOverOnTheGatewaysSlot(t *testing.T) {
	r, fake, gw1 := newSlotRotator(t)
	w := NewWatcher(fake, "dcm0")
	r.UseWatcher(w)
	if err := fake.SetPeerStats("dcm0g1", wgtypes.Key(gw1.Next), time.Now(), 180, 92); err != nil {
		t.Fatal(err)
	}
	w.Poll(t.Logf)
	dev, err := fake.Device("dcm0g1")
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Peers) != 1 || wg.PublicKey(dev.Peers[0].PublicKey) != gw1.Next || len(dev.Peers[0].AllowedIPs) != len(gw1.Prefixes) {
		t.Fatalf("dcm0g1 after the handshake on the next key: %+v", dev.Peers)
	}
	if got := w.take(); len(got) != 1 || got[0] != gw1.Next {
		t.Errorf("take: %v", got)
	}
	if got := r.interfaceOf(gw1); got != "dcm0g1" {
		t.Errorf("interfaceOf gateway 1: %s", got)
	}
}
