package main

import (
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

func TestStatusTableShowsUplinksAndShadows(t *testing.T) {
	st := control.Status{Site: "fra1", Peers: []control.PeerStatus{
		{Site: "ams1", State: control.PeerUp, PublicKey: "K1xxxxxxxxx",
			Uplinks:  &control.UplinkStatus{Endpoints: []string{"192.0.2.1:51820", "198.51.100.1:51820"}, InUse: "198.51.100.1:51820", Failovers: 1, Phase: "settled"},
			Shadowed: []control.ShadowedRoute{{Prefix: "10.2.0.0/24", Route: "10.2.0.0/25 via 192.0.2.254 dev eth0 proto bgp metric 20 table 254"}}},
		{Site: "par1", State: control.PeerUp, PublicKey: "K2xxxxxxxxx",
			Uplinks: &control.UplinkStatus{Endpoints: []string{"203.0.113.1:51820"}, InUse: "203.0.113.1:51820", Phase: "settled"}},
	}}
	var b strings.Builder
	if err := writeStatusTable(&b, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"uplinks of ams1: on 198.51.100.1:51820 (FALLBACK, settled), 1 failovers; endpoints 192.0.2.1:51820, 198.51.100.1:51820\n",
		"SHADOWED 10.2.0.0/24 of ams1 by 10.2.0.0/25 via 192.0.2.254 dev eth0 proto bgp metric 20 table 254\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "uplinks of par1") {
		t.Errorf("a one-uplink peer without failovers got an uplinks line:\n%s", out)
	}
}
