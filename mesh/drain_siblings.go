package mesh

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// Draining the last gateway of a site in service moves nothing: peers
// keep sending to a drained gateway when every other one of its site is
// drained or down (groupMembers), so that the drain cannot take the site
// off the backbone. `dcmesh drain` says so (DrainReply.LastInService and
// Siblings), and `drain --wait` there is refused unless forced
// (refuseLastWait): its answer would come at the timeout, not "it can be
// stopped". A site whose agent knows no other gateway at all is a
// one-gateway site as far as it can tell: its wait stays what it always
// was (until the traffic itself stops), with the warning.
//
// Siblings are no peers, so there are no probes to them: their state is
// what this agent holds of them, their signed records (drain, standby,
// goodbye, expiry, certificate) and the gossip membership (a gateway
// whose agent stopped is dead there within memberlist's failure detection,
// seconds).

// siblingView is what the agent holds of one sibling.
type siblingView struct {
	rec *trust.SignedRecord
	// member is its gossip state ("alive", "dead"); "" when gossip does
	// not list it (no gossip address, or not on the roster). Checked only
	// with gossip: an agent without it knows no membership.
	member string
	gossip bool
	// certErr is why its certificate does not verify now; nil if it does.
	certErr error
}

// siblingOf says what a sibling does for the site's traffic now: down if
// anything says it cannot carry (goodbye, certificate, expiry, gossip, no
// endpoint), else drained, standby or in service as its record says.
func siblingOf(v siblingView, now time.Time, expiry time.Duration) control.Sibling {
	sr := v.rec
	s := control.Sibling{Node: sr.ID().String(), Gateway: sr.Cert.Gateway, State: control.SiblingDown}
	age := now.Sub(sr.IssuedAt)
	switch {
	case sr.Leaving:
		s.Reason = "said goodbye (dcmesh leave or down)"
	case v.certErr != nil:
		s.Reason = "certificate not valid: " + v.certErr.Error()
	case age > expiry:
		s.Reason = fmt.Sprintf("record not refreshed for %s (trust.record_expiry %s)", age.Round(time.Second), expiry)
	case v.gossip && v.member != "alive":
		s.Reason = "gossip: " + cmp.Or(v.member, "not a member")
	case len(sr.Endpoints) == 0:
		s.Reason = "announces no endpoint"
	case sr.Drain:
		s.State = control.SiblingDrained
	case sr.Standby:
		s.State = control.SiblingStandby
	default:
		s.State = control.SiblingInService
	}
	return s
}

// lastInService is true when no sibling is in service.
func lastInService(sibs []control.Sibling) bool {
	return !slices.ContainsFunc(sibs, control.Sibling.InService)
}

// refuseLastWait refuses a drain --wait without --force on the last
// gateway of site in service, when the site has other gateways (all
// drained or down); nil otherwise. drained is this gateway's state before
// the request: the refusal changes nothing, and says so.
func refuseLastWait(in control.DrainRequest, site string, sibs []control.Sibling, drained bool) error {
	if !in.Wait || in.Force || len(sibs) == 0 || !lastInService(sibs) {
		return nil
	}
	state := "this gateway stays in service"
	if drained {
		state = "this gateway stays drained"
	}
	return fmt.Errorf("%w; the other gateways of %s: %s. Peers would keep sending to it drained, so the wait could only end at its timeout; nothing changed (%s). "+
		"Return another gateway of %s to service first (dcmesh undrain on it, or start its agent), or run drain --wait --force to drain and wait anyway (until the traffic itself stops)",
		control.ErrLastInService, site, describeSiblings(sibs), state, site)
}

// describeSiblings lists siblings with their states, for a message.
func describeSiblings(sibs []control.Sibling) string {
	parts := make([]string, len(sibs))
	for i, s := range sibs {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// siblings returns the other gateways of this site the agent knows of,
// by index ([] for none, and for a site without gossip records).
func siblings(rt *siteRuntime, now time.Time) []control.Sibling {
	out := []control.Sibling{}
	if rt.store == nil {
		return out
	}
	members := map[string]string{}
	if rt.gossip != nil {
		for _, m := range rt.gossip.Members() {
			members[m.Name] = m.State
		}
	}
	crl, skew := rt.store.Revocations(), rt.cfg.Trust.ClockSkew
	for _, name := range rt.store.Names() {
		sr, ok := rt.store.Record(name)
		if !ok || sr.Cert == nil || sr.Site != rt.cfg.Site || sr.Cert.Gateway == rt.enr.Cert.Gateway {
			continue
		}
		v := siblingView{rec: sr, member: members[name], gossip: rt.gossip != nil, certErr: sr.Cert.Verify(rt.enr.CAs, crl, now, skew)}
		out = append(out, siblingOf(v, now, rt.cfg.Trust.RecordExpiry))
	}
	slices.SortFunc(out, func(a, b control.Sibling) int { return cmp.Compare(a.Gateway, b.Gateway) })
	return out
}
