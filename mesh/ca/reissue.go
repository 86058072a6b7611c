package ca

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// Issuing a gateway (a site name and a gateway index) the CA has a live
// certificate for (neither revoked nor expired) is either a renewal — the same or narrower prefixes and
// underlay, the same overlay address: routine, allowed — or a replacement:
// other prefixes or another overlay address. A replacement changes what
// the site may announce, so it is refused unless asked for
// (IssueOptions.Replace): a typo in `ca issue` must not silently move a
// site's prefixes. Either way the old certificate stays valid until it
// expires or is revoked. Another gateway of the site is compared with
// nothing here: it is a new certificate (IssueNew) beside the others.

// IssueKind is what an issue is to the CA's inventory.
type IssueKind string

const (
	IssueNew         IssueKind = "new"         // no live certificate for the gateway
	IssueRenewal     IssueKind = "renewal"     // same or narrower authority
	IssueReplacement IssueKind = "replacement" // other prefixes or overlay: needs Replace
)

// IssuePlan is what Plan found for an IssueOptions.
type IssuePlan struct {
	Kind IssueKind
	// Previous is the gateway's newest live certificate (nil for IssueNew).
	Previous *IssuedEntry
	// Changes lists what makes it a replacement; Narrower what a renewal
	// drops (the site must stop announcing that before it installs it).
	Changes  []string
	Narrower []string
}

// Plan says whether issuing o is a new site, a renewal or a replacement,
// without issuing anything.
func Plan(o IssueOptions) (IssuePlan, error) {
	req, err := o.request()
	if err != nil {
		return IssuePlan{}, err
	}
	_, inv, err := load(o.Dir)
	if err != nil {
		return IssuePlan{}, err
	}
	return planIssue(inv, req, o.Now), nil
}

// planIssue compares req with the newest live certificate of its gateway
// (site and gateway index).
func planIssue(inv *Inventory, req trust.IssueRequest, now time.Time) IssuePlan {
	var prev *IssuedEntry
	for i := range inv.Issued {
		e := &inv.Issued[i]
		if e.ID() == (trust.GatewayID{Site: req.Site, Gateway: req.Gateway}) && e.live(now) && (prev == nil || !e.NotBefore.Before(prev.NotBefore)) {
			prev = e
		}
	}
	if prev == nil {
		return IssuePlan{Kind: IssueNew}
	}
	d := trust.CompareAuthority(prev.authority(), req.Authority())
	p := IssuePlan{Kind: IssueRenewal, Previous: prev, Narrower: d.Narrower}
	if !d.Renewal() {
		p.Kind, p.Changes = IssueReplacement, append(d.Replacement, d.Wider...)
	}
	return p
}

// authority is what the entry's certificate permits, as far as the
// inventory records it (entries written before Underlay and AllowDefault
// were recorded read as "anywhere" and "no default route").
func (e *IssuedEntry) authority() trust.Authority {
	a := trust.Authority{Site: e.Site, AllowDefault: e.AllowDefault}
	a.Overlay, _ = netip.ParseAddr(e.Overlay)
	for _, s := range e.Prefixes {
		if p, err := netip.ParsePrefix(s); err == nil {
			a.Prefixes = append(a.Prefixes, p)
		}
	}
	for _, s := range e.Underlay {
		if p, err := netip.ParsePrefix(s); err == nil {
			a.Underlay = append(a.Underlay, p)
		}
	}
	return a
}

// checkReplacement refuses a replacement that was not asked for.
func checkReplacement(p IssuePlan, o IssueOptions) error {
	if p.Kind != IssueReplacement || o.Replace {
		return nil
	}
	return &config.OptionError{Option: "Site", See: "Replace", Err: fmt.Errorf(
		" %s already holds certificate %s (valid until %s) and this is not a renewal: %s. To renew, give the same or narrower prefixes and underlay, the same overlay address and allow-default; if the site really changes, issue a replacement (the old certificate keeps its prefixes until it is revoked or expires)",
		p.Previous.ID(), p.Previous.Serial, p.Previous.NotAfter.Format(time.DateOnly), strings.Join(p.Changes, "; "))}
}
