package mesh

import (
	"net/netip"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
)

func TestRouteLedgerTellsRepairsFromChanges(t *testing.T) {
	pfx := netip.MustParsePrefix("10.2.0.0/16")
	tunnel := netconfig.Route{Dst: pfx, Kind: netconfig.KindTunnel, Link: 7, Table: 254, Metric: 100}
	failClosed := netconfig.Route{Dst: pfx, Kind: netconfig.KindUnreachable, Table: 254, Metric: 101}
	other := netconfig.Route{Dst: netip.MustParsePrefix("10.3.0.0/16"), Kind: netconfig.KindTunnel, Link: 7, Table: 254, Metric: 100}
	var l routeLedger
	l.seed([]netconfig.Route{tunnel, failClosed}) // adopted from a previous run
	for _, c := range []struct {
		what string
		ch   netconfig.Changes
		want int
	}{
		{"nothing changed", netconfig.Changes{}, 0},
		{"a new site's route", netconfig.Changes{Added: []netconfig.Route{other}}, 0},
		{"the adopted tunnel route deleted by hand, put back", netconfig.Changes{Added: []netconfig.Route{tunnel}}, 1},
		{"both deleted, both put back", netconfig.Changes{Added: []netconfig.Route{tunnel, failClosed}}, 2},
		{"replaced by hand with another link, put back", netconfig.Changes{Replaced: []netconfig.Route{other}}, 1},
		{"the agent moves it to another link", netconfig.Changes{Replaced: []netconfig.Route{{Dst: pfx, Kind: netconfig.KindTunnel, Link: 9, Table: 254, Metric: 100}}}, 0},
		{"and back: its own change again", netconfig.Changes{Replaced: []netconfig.Route{tunnel}}, 0},
		{"the site leaves", netconfig.Changes{Gone: []netconfig.Route{other}}, 0},
		{"it returns: new, not a repair", netconfig.Changes{Added: []netconfig.Route{other}}, 0},
	} {
		if got := l.note(c.ch); len(got) != c.want {
			t.Errorf("%s: %d repairs %v, want %d", c.what, len(got), got, c.want)
		}
	}
}
