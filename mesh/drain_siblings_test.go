package mesh

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// A sibling is down when anything says it cannot carry (goodbye,
// certificate, expiry, gossip, no endpoint), before what its record asks
// (drain, standby); gossip is consulted only by an agent that runs it.
func TestSiblingOf(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, key := trusttest.IssueWith(t, ca, "fra1", trusttest.CertOptions{Gateway: 1}, "10.1.0.0/16")
	now := time.Now()
	ep := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.2:51820")}
	rec := func(o trusttest.RecordOptions) *trust.SignedRecord {
		if o.IssuedAt.IsZero() {
			o.IssuedAt = now.Add(-time.Minute)
		}
		if o.Endpoints == nil && !o.Leaving {
			o.Endpoints = ep
		}
		return trusttest.SignedRecord(t, cert, key, o)
	}
	for _, tc := range []struct {
		name    string
		v       siblingView
		state   control.SiblingState
		because string
	}{
		{"alive", siblingView{rec: rec(trusttest.RecordOptions{}), member: "alive", gossip: true}, control.SiblingInService, ""},
		{"standby", siblingView{rec: rec(trusttest.RecordOptions{Standby: true}), member: "alive", gossip: true}, control.SiblingStandby, ""},
		{"drained", siblingView{rec: rec(trusttest.RecordOptions{Drain: true}), member: "alive", gossip: true}, control.SiblingDrained, ""},
		{"dead and drained", siblingView{rec: rec(trusttest.RecordOptions{Drain: true}), member: "dead", gossip: true}, control.SiblingDown, "gossip: dead"},
		{"no member", siblingView{rec: rec(trusttest.RecordOptions{}), gossip: true}, control.SiblingDown, "gossip: not a member"},
		{"without gossip", siblingView{rec: rec(trusttest.RecordOptions{})}, control.SiblingInService, ""},
		{"goodbye", siblingView{rec: rec(trusttest.RecordOptions{Leaving: true}), member: "alive", gossip: true}, control.SiblingDown, "said goodbye"},
		{"expired", siblingView{rec: rec(trusttest.RecordOptions{IssuedAt: now.Add(-25 * time.Hour)}), member: "alive", gossip: true}, control.SiblingDown, "record not refreshed for 25h0m0s (trust.record_expiry 24h0m0s)"},
		{"revoked", siblingView{rec: rec(trusttest.RecordOptions{}), member: "alive", gossip: true, certErr: errors.New("revoked")}, control.SiblingDown, "certificate not valid: revoked"},
		{"no endpoint", siblingView{rec: rec(trusttest.RecordOptions{Endpoints: []netip.AddrPort{}}), member: "alive", gossip: true}, control.SiblingDown, "announces no endpoint"},
	} {
		s := siblingOf(tc.v, now, 24*time.Hour)
		if s.Node != "fra1.1" || s.Gateway != 1 || s.State != tc.state || !strings.Contains(s.Reason, tc.because) || (tc.because == "") != (s.Reason == "") {
			t.Errorf("%s: %+v, want %s %q", tc.name, s, tc.state, tc.because)
		}
	}
}

// drain --wait is refused, changing nothing, only on the last gateway in
// service of a site that has other gateways; --force, no --wait, a
// sibling in service or on standby, or no sibling known let it through.
func TestRefuseLastWait(t *testing.T) {
	drained := control.Sibling{Node: "fra1.1", Gateway: 1, State: control.SiblingDrained}
	down := control.Sibling{Node: "fra1.2", Gateway: 2, State: control.SiblingDown, Reason: "gossip: dead"}
	wait := control.DrainRequest{Wait: true}
	for _, tc := range []struct {
		name   string
		in     control.DrainRequest
		sibs   []control.Sibling
		refuse bool
	}{
		{"drained and down", wait, []control.Sibling{drained, down}, true},
		{"no wait", control.DrainRequest{}, []control.Sibling{drained, down}, false},
		{"forced", control.DrainRequest{Wait: true, Force: true}, []control.Sibling{drained, down}, false},
		{"one-gateway site", wait, []control.Sibling{}, false},
		{"one in service", wait, []control.Sibling{drained, {Node: "fra1.3", Gateway: 3, State: control.SiblingInService}}, false},
		{"a standby", wait, []control.Sibling{{Node: "fra1.1", Gateway: 1, State: control.SiblingStandby}}, false},
	} {
		if last := lastInService(tc.sibs); !last && tc.refuse {
			t.Errorf("%s: not last in service", tc.name)
		}
		err := refuseLastWait(tc.in, "fra1", tc.sibs, false)
		if (err != nil) != tc.refuse {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.refuse)
		}
	}
	err := refuseLastWait(wait, "fra1", []control.Sibling{drained, down}, false)
	for _, want := range []string{"the other gateways of fra1: fra1.1 drained, fra1.2 down (gossip: dead)", "nothing changed (this gateway stays in service)", "--force"} {
		if !errors.Is(err, control.ErrLastInService) || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q: want ErrLastInService saying %q", err, want)
		}
	}
	if err := refuseLastWait(wait, "fra1", []control.Sibling{drained}, true); err == nil || !strings.Contains(err.Error(), "this gateway stays drained") {
		t.Errorf("refusal of an already drained gateway: %v", err)
	}
	if lastInService([]control.Sibling{{State: control.SiblingStandby}}) || !lastInService(nil) {
		t.Error("a standby sibling is in service; no sibling is none")
	}
}

// The agent's siblings are the records of its own site's other gateways
// in the store, by index, never a remote site's gateway; a drained one is
// drained and a goodbye down.
func TestSiblingsFromTheStore(t *testing.T) {
	m := newScaleMesh(t, 1)
	if got := siblings(m.rt, time.Now()); got == nil || len(got) != 0 {
		t.Errorf("a one-gateway site: %v, want [] (none known)", got)
	}
	remote, rkey := trusttest.IssueWith(t, m.ca, m.sites[0].name, trusttest.CertOptions{Gateway: 1, Overlay: netip.MustParseAddr("100.64.9.1")}, "172.16.0.0/24")
	m.offer(t, &scaleSite{testSite: testSite{remote, rkey}, name: m.sites[0].name + ".1"}, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(0, 1)}})
	var sib [3]*scaleSite
	for g := uint8(1); g <= 2; g++ {
		c, k := trusttest.IssueWith(t, m.ca, "fra1", trusttest.CertOptions{Gateway: g, Overlay: netip.AddrFrom4([4]byte{10, 255, 0, 8 + g})}, "10.1.0.0/16")
		sib[g] = &scaleSite{testSite: testSite{c, k}, name: "fra1." + string('0'+rune(g))}
	}
	m.offer(t, sib[2], trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(9, 2)}})
	m.offer(t, sib[1], trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(9, 1)}, Drain: true})
	got := siblings(m.rt, time.Now())
	if len(got) != 2 || got[0].Node != "fra1.1" || got[0].State != control.SiblingDrained || got[1].Node != "fra1.2" || got[1].State != control.SiblingInService {
		t.Fatalf("siblings %+v, want fra1.1 drained and fra1.2 in service", got)
	}
	if lastInService(got) {
		t.Error("fra1.2 is in service")
	}
	m.offer(t, sib[2], trusttest.RecordOptions{Leaving: true})
	got = siblings(m.rt, time.Now())
	if len(got) != 2 || got[1].State != control.SiblingDown || !lastInService(got) {
		t.Errorf("after fra1.2's goodbye: %+v, want it down and this gateway last in service", got)
	}
}
