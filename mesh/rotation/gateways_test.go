package rotation

import (
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

// twoGateways are gateways 0 and 1 of ams1, each with its own key.
func twoGateways() []records.Site {
	sites := testSites(2)
	sites[0].Name, sites[1].Name, sites[1].Gateway = "ams1", "ams1", 1
	sites[0].PublicKey, sites[1].PublicKey = trusttest.WGKey("ams1"), trusttest.WGKey("ams1.1")
	return sites
}

// A rotation waits for each gateway of a remote site by its node name, and
// an ack of one gateway does not stand for the other.
func TestRotationExpectsEveryGatewayByNodeName(t *testing.T) {
	sites := twoGateways()
	r, _, _ := newTestRotator(t, sites...)
	next, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	r.next, r.state.Phase = next, wg.PhasePrepared
	r.beginWaiting()
	if want := []string{"ams1", "ams1.1"}; !slices.Equal(r.run.expected, want) {
		t.Fatalf("expected %v, want %v", r.run.expected, want)
	}
	r.OnAck(&trust.Ack{From: "ams1.1", To: "fra1", Key: next.Public(), Stage: trust.AckPreinstalled, Seq: 1}, sites[1].PublicKey)
	if !r.run.pre["ams1.1"] || r.run.pre["ams1"] {
		t.Errorf("after gateway 1's ack: pre %v", r.run.pre)
	}
	if r.state.Phase != wg.PhasePrepared {
		t.Errorf("switched (%s) with gateway 0's pre-install missing", r.state.Phase)
	}
}

// A gateway-1 agent's acks come from its node name and go to the rotating
// gateway's node name; the pre-shared keys it holds are listed by node
// name.
func TestAcksAndPSKSitesByNodeName(t *testing.T) {
	sites := twoGateways()
	r, _, env := newTestRotator(t, sites...)
	_, identity, err := trust.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	r.SetNode("fra1.1")
	r.online, r.identity = true, identity
	sites[1].Next, sites[1].Seq = trusttest.WGKey("ams1.1-next"), 7
	r.afterApply(sites)
	var raw []byte
	for deadline := time.Now().Add(10 * time.Second); raw == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		env.mu.Lock()
		if len(env.msgs) > 0 {
			raw = env.msgs[0]
			if env.sent[0] != "ams1.1: ack" || len(env.sent) != 1 {
				t.Errorf("sent %v, want one ack to ams1.1", env.sent)
			}
		}
		env.mu.Unlock()
	}
	if raw == nil {
		t.Fatal("no ack sent in 10 s")
	}
	_, payload, _ := records.Decode(raw)
	ack, err := trust.VerifyAck(payload, identity.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if ack.From != "fra1.1" || ack.To != "ams1.1" || ack.Key != sites[1].Next || ack.Seq != 7 {
		t.Errorf("ack %+v", ack)
	}

	r.sites = sites
	r.psks[sites[0].PublicKey], r.psks[sites[1].PublicKey] = wg.PresharedKey{}, wg.PresharedKey{}
	if got, want := r.pskSites(), []string{"ams1", "ams1.1"}; !slices.Equal(got, want) {
		t.Errorf("pskSites %v, want %v", got, want)
	}
}
