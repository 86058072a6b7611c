package trust

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

// Acks name gateways by node name: the longest one (a 63-character site
// name, gateway 3) fits, in rotation acks and gossip-key acks alike; a
// gossip-key ack refuses what is no node name.
func TestAcksCarryNodeNames(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	long := strings.Repeat("a", 63) + ".3"
	for _, node := range []string{"fra1", "fra1.1", long} {
		raw, err := SignAck(Ack{From: node, To: long, Stage: AckPreinstalled, Seq: 1}, priv)
		if err != nil {
			t.Fatal(err)
		}
		a, err := VerifyAck(raw, pub)
		if err != nil || a.From != node || a.To != long {
			t.Errorf("ack from %q: %+v, %v", node, a, err)
		}
		raw, err = SignGossipKeyAck(GossipKeyAck{Site: node, Seq: 1, Held: []string{"0011223344556677"}}, priv)
		if err != nil {
			t.Fatalf("gossip key ack of %q: %v", node, err)
		}
		if g, err := VerifyGossipKeyAck(raw, pub); err != nil || g.Site != node {
			t.Errorf("gossip key ack of %q: %+v, %v", node, g, err)
		}
	}
	for _, bad := range []string{"fra1.0", "fra1.4", "fra1/1", "fra1.", "Fra1"} {
		if _, err := SignGossipKeyAck(GossipKeyAck{Site: bad, Seq: 1, Held: []string{"0011223344556677"}}, priv); err == nil {
			t.Errorf("gossip key ack of %q signed", bad)
		}
	}
}
