package mesh

import (
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Before a probe session runs, a remote gateway counts healthy once the
// pair has shaken hands (fail-static for a gateway just learned), by node
// name; probeDriven is set only by a site with several gateways.
func TestGatewayHealthWithoutProbes(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	rt := &siteRuntime{cfg: cfg}
	sites := []records.Site{
		{Name: "par2", PublicKey: keyD},
		{Name: "par2", Gateway: 1, PublicKey: keyE, Next: keyF},
		{Name: "lon1", PublicKey: keyG},
	}
	slot0 := &wgtypes.Device{Name: "dcm0", Peers: []wgtypes.Peer{
		{PublicKey: wgtypes.Key(keyD), LastHandshakeTime: time.Now()},
		{PublicKey: wgtypes.Key(keyG)}, // no handshake yet
	}}
	slot1 := &wgtypes.Device{Name: "dcm0g1", Peers: []wgtypes.Peer{
		{PublicKey: wgtypes.Key(keyE), LastHandshakeTime: time.Now().Add(-time.Hour)}, // long dead
		{PublicKey: wgtypes.Key(keyF), LastHandshakeTime: time.Now()},                 // its next key lives
	}}
	all := mergedDevice(slot0, []*wgtypes.Device{slot1})
	if len(all.Peers) != 4 || len(slot0.Peers) != 2 {
		t.Fatalf("merged %d peers (slot 0 now %d)", len(all.Peers), len(slot0.Peers))
	}
	got := rt.gatewayHealth(sites, all)
	want := map[string]bool{"par2": true, "par2.1": true, "lon1": false}
	for node, w := range want {
		if got[node] != w {
			t.Errorf("%s healthy %v, want %v (all %v)", node, got[node], w, got)
		}
	}
	if !probeDriven(sites) || probeDriven(sites[2:]) || probeDriven([]records.Site{{Name: "sfo1", Gateway: 1}}) {
		t.Error("probeDriven: want true only with a site of two gateways")
	}
}
