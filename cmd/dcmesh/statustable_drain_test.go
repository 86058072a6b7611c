package main

import (
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// The text status says this gateway is drained, since when and how to end
// it, and marks a peer whose record says it is draining.
func TestStatusTableShowsDrain(t *testing.T) {
	now := time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)
	since := now.Add(-10 * time.Minute)
	st := control.Status{Site: "fra1", Drain: control.DrainStatus{Drained: true, Since: &since},
		Peers: []control.PeerStatus{{Site: "ams1", Role: control.RoleCurrent, State: control.PeerUp, Draining: true}, {Site: "par1", Role: control.RoleCurrent, State: control.PeerUp}}}
	var b strings.Builder
	if err := writeStatusTable(&b, st, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"drained for maintenance since 2026-12-01T16:50:00Z (10m0s)", "dcmesh undrain", "\nams1 (draining) ", "\npar1 "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	st.Drain, st.Peers[0].Draining = control.DrainStatus{}, false
	b.Reset()
	if err := writeStatusTable(&b, st, now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "drain") {
		t.Errorf("in service, status mentions drain:\n%s", b.String())
	}
}

// A gateway of a multi-gateway site outside its site's nexthop group is
// marked; one in the group, and a one-gateway site's peer, are not.
func TestStatusTableShowsGroupMembership(t *testing.T) {
	in, out := true, false
	st := control.Status{Site: "fra1", Peers: []control.PeerStatus{
		{Site: "ams1", Node: "ams1", Role: control.RoleCurrent, State: control.PeerUp, InGroup: &in},
		{Site: "ams1", Gateway: 1, Node: "ams1.1", Role: control.RoleCurrent, State: control.PeerUp, InGroup: &out},
		{Site: "par1", Node: "par1", Role: control.RoleCurrent, State: control.PeerUp}}}
	var b strings.Builder
	if err := writeStatusTable(&b, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	if !strings.Contains(got, "\nams1.1 (not in group) ") || strings.Count(got, "not in group") != 1 {
		t.Errorf("want only ams1.1 marked not in group:\n%s", got)
	}
}
