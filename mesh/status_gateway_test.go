package mesh

import (
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Status names a gossip peer by its gateway's node name, with its site and
// gateway index beside it, and finds its gossip member under that name.
func TestStatusPeerOfGatewayOne(t *testing.T) {
	rt := &siteRuntime{cfg: &config.Config{}, lastSites: []records.Site{
		{Name: "ams1", PublicKey: trusttest.WGKey("ams1")},
		{Name: "ams1", Gateway: 1, PublicKey: trusttest.WGKey("ams1.1")},
	}}
	v := peerView{ids: peerIdentities(rt), members: map[string]control.MemberState{"ams1": control.MemberDead, "ams1.1": control.MemberAlive},
		now: time.Now()}
	for _, c := range []struct {
		key     string
		gateway uint8
		node    string
		member  control.MemberState
	}{{"ams1", 0, "ams1", control.MemberDead}, {"ams1.1", 1, "ams1.1", control.MemberAlive}} {
		ps := v.peer(wgtypes.Peer{PublicKey: wgtypes.Key(trusttest.WGKey(c.key))})
		if ps.Site != "ams1" || ps.Gateway != c.gateway || ps.Node != c.node || ps.Name() != c.node || ps.GossipState != c.member {
			t.Errorf("peer %s: site %q gateway %d node %q name %q gossip %s", c.key, ps.Site, ps.Gateway, ps.Node, ps.Name(), ps.GossipState)
		}
	}
}
