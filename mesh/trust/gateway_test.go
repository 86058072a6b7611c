package trust_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

func TestGatewayID(t *testing.T) {
	for _, tc := range []struct {
		id   trust.GatewayID
		name string
	}{
		{trust.GatewayID{Site: "fra1"}, "fra1"},
		{trust.GatewayID{Site: "fra1", Gateway: 1}, "fra1.1"},
		{trust.GatewayID{Site: "fra1-1", Gateway: 3}, "fra1-1.3"},
	} {
		if got := tc.id.String(); got != tc.name {
			t.Errorf("%+v.String() = %q, want %q", tc.id, got, tc.name)
		}
		back, err := trust.ParseGatewayID(tc.name)
		if err != nil || back != tc.id {
			t.Errorf("ParseGatewayID(%q) = %+v, %v", tc.name, back, err)
		}
	}
	// Every node name has one reading: gateway 0 is the bare site name, and
	// no name is both a site and a gateway of another site.
	for _, bad := range []string{"", "fra1.", "fra1.0", "fra1.01", "fra1.4", "fra1.-1", "fra1.+1", "fra1.1.1",
		"fra1/1", "Fra1.1", ".1", "fra1. 1", "fra1.256"} {
		if id, err := trust.ParseGatewayID(bad); err == nil {
			t.Errorf("ParseGatewayID(%q) = %+v", bad, id)
		}
	}
	if trust.ValidSiteName("fra1.1") {
		t.Error(`"fra1.1" is a valid site name: gateway names would be ambiguous`)
	}
}

// TestCheckIssue is the CA's rule: gateways of one site may share
// prefixes, other sites may not touch them, and every gateway has its own
// overlay address.
func TestCheckIssue(t *testing.T) {
	req := func(site string, gw uint8, overlay string, prefixes ...string) trust.IssueRequest {
		return trust.IssueRequest{Site: site, Gateway: gw, Overlay: netip.MustParseAddr(overlay), Prefixes: pfxs(prefixes...)}
	}
	issued := []trust.Issued{
		{Site: "fra1", Gateway: 0, Prefixes: pfxs("10.1.0.0/16", "fd00:1::/48"), Overlay: netip.MustParseAddr("10.255.0.1")},
		{Site: "fra1", Gateway: 1, Prefixes: pfxs("10.1.0.0/16", "fd00:1::/48"), Overlay: netip.MustParseAddr("10.255.0.2")},
		{Site: "ams2", Gateway: 0, Prefixes: pfxs("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.3")},
	}
	for _, tc := range []struct {
		name    string
		req     trust.IssueRequest
		index   int // -1: allowed
		sibling bool
	}{
		{"a new gateway of fra1 shares its prefixes", req("fra1", 2, "10.255.0.4", "10.1.0.0/16", "fd00:1::/48"), -1, false},
		{"a gateway may serve part of its site's prefixes", req("fra1", 2, "10.255.0.4", "10.1.128.0/17"), -1, false},
		{"a renewal of fra1 gateway 1 keeps its overlay", req("fra1", 1, "10.255.0.2", "10.1.0.0/16"), -1, false},
		{"a gateway's overlay may lie inside its site's prefixes", req("fra1", 2, "10.1.255.254", "10.1.0.0/16"), -1, false},
		{"a new site elsewhere", req("par3", 0, "10.255.0.9", "10.3.0.0/16"), -1, false},
		{"another site's prefix", req("par3", 0, "10.255.0.9", "10.3.0.0/16", "10.1.7.0/24"), 0, false},
		{"another site's gateway prefix (gateway 1 of a new site)", req("par3", 1, "10.255.0.9", "fd00:1::/64"), 0, false},
		{"a gateway of ams2 taking fra1's prefix", req("ams2", 1, "10.255.0.9", "10.1.0.0/16"), 0, false},
		{"a gateway of fra1 taking ams2's prefix", req("fra1", 2, "10.255.0.9", "10.1.0.0/16", "10.2.5.0/24"), 2, false},
		{"another site's gateway 1 overlay address", req("par3", 0, "10.255.0.2", "10.3.0.0/16"), 1, false},
		{"an overlay address inside another site's prefix", req("par3", 0, "10.2.0.9", "10.3.0.0/16"), 2, false},
		{"a prefix covering another site's overlay address", req("par3", 0, "10.254.0.1", "10.255.0.0/24"), 0, false},
		{"a sibling's overlay address", req("fra1", 2, "10.255.0.2", "10.1.0.0/16"), 1, true},
		{"gateway 0's overlay for gateway 3", req("fra1", 3, "10.255.0.1", "10.1.0.0/16"), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := trust.CheckIssue(tc.req, issued)
			if tc.index < 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ic *trust.IssueConflict
			if !errors.As(err, &ic) {
				t.Fatalf("CheckIssue = %v, want an *IssueConflict", err)
			}
			e := issued[tc.index]
			if ic.Index != tc.index || ic.Site != e.Site || ic.Gateway != e.Gateway || ic.Sibling != tc.sibling ||
				!ic.Mine.Overlaps(ic.Theirs) {
				t.Errorf("conflict %+v, want index %d (%s gateway %d), sibling %v", ic, tc.index, e.Site, e.Gateway, tc.sibling)
			}
			if want := (trust.GatewayID{Site: e.Site, Gateway: e.Gateway}).String(); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		})
	}
	if err := trust.CheckIssue(req("fra1", 0, "10.255.0.1", "10.1.0.0/16"), nil); err != nil {
		t.Errorf("empty inventory: %v", err)
	}
}
