package mesh

import (
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

const (
	oldID = "1111111111111111"
	newID = "2222222222222222"
)

func acks(held map[string][]string) map[string]*trust.GossipKeyAck {
	out := map[string]*trust.GossipKeyAck{}
	for s, h := range held {
		out[s] = &trust.GossipKeyAck{Site: s, Held: h}
	}
	return out
}

func TestDecideGossipKey(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rec := map[string]bool{"a": true, "b": true, "c": true}
	cases := []struct {
		name    string
		in      gkInput
		step    gkStep
		pending string // "site: substring", or ""
		since   time.Time
	}{
		{"installed, every live site holds it: use",
			gkInput{Phase: gkInstalled, Live: []string{"b"}, Acks: acks(map[string][]string{"b": {oldID, newID}})}, gkUse, "", time.Time{}},
		{"installed, a live site has not installed it: wait",
			gkInput{Phase: gkInstalled, Live: []string{"b", "c"}, Acks: acks(map[string][]string{"b": {oldID, newID}, "c": {oldID}})}, gkWait, "c: does not hold", time.Time{}},
		{"installed, a live site never said: wait",
			gkInput{Phase: gkInstalled, Live: []string{"b"}, Acks: acks(nil)}, gkWait, "b: has not said", time.Time{}},
		{"installed, a dead site without the key is not waited for",
			gkInput{Phase: gkInstalled, Live: []string{"b"}, Acks: acks(map[string][]string{"b": {oldID, newID}, "c": {oldID}})}, gkUse, "", time.Time{}},
		{"installed, no live site at all (the site that was down): use",
			gkInput{Phase: gkInstalled}, gkUse, "", time.Time{}},
		{"installed, a live site not among the recipients: wait, naming the fix",
			gkInput{Phase: gkInstalled, Live: []string{"d"}, Acks: acks(map[string][]string{"d": {oldID}})}, gkWait, "d: not a recipient", time.Time{}},
		{"switched, a live site still sends with the old key: wait",
			gkInput{Phase: gkSwitched, Live: []string{"b"}, Acks: acks(map[string][]string{"b": {oldID, newID}}), Since: t0}, gkWait, "b: does not send", time.Time{}},
		{"switched, all use it, first seen now: the grace starts",
			gkInput{Phase: gkSwitched, Live: []string{"b"}, Acks: acks(map[string][]string{"b": {newID, oldID}})}, gkWait, "", t0},
		{"switched, all use it, within the grace: wait",
			gkInput{Phase: gkSwitched, Live: []string{"b"}, Acks: acks(map[string][]string{"b": {newID, oldID}}), Since: t0.Add(-time.Second)}, gkWait, "", t0.Add(-time.Second)},
		{"switched, all use it, grace over: remove",
			gkInput{Phase: gkSwitched, Live: []string{"b", "c"}, Acks: acks(map[string][]string{"b": {newID, oldID}, "c": {newID}}), Since: t0.Add(-3 * time.Second)}, gkRemove, "", t0.Add(-3 * time.Second)},
		{"stable: nothing",
			gkInput{Phase: gkStable, Live: []string{"b"}, Acks: acks(nil)}, gkWait, "", time.Time{}},
	}
	for _, c := range cases {
		c.in.KeyID, c.in.Epoch, c.in.Now, c.in.Grace = newID, 7, t0, 3*time.Second
		if c.in.Recipients == nil {
			c.in.Recipients = rec
		}
		d := decideGossipKey(c.in)
		if d.Step != c.step {
			t.Errorf("%s: step %d, want %d (pending %v)", c.name, d.Step, c.step, d.Pending)
		}
		if !d.Since.Equal(c.since) {
			t.Errorf("%s: since %v, want %v", c.name, d.Since, c.since)
		}
		if c.pending == "" {
			if len(d.Pending) != 0 {
				t.Errorf("%s: pending %v, want none", c.name, d.Pending)
			}
			continue
		}
		site, want, _ := strings.Cut(c.pending, ": ")
		if got := d.Pending[site]; !strings.Contains(got, want) || len(d.Pending) != 1 {
			t.Errorf("%s: pending %v, want only %s: …%s…", c.name, d.Pending, site, want)
		}
	}
}

// A site falling behind again after the grace started restarts it.
func TestDecideGossipKeyGraceRestarts(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	in := gkInput{Phase: gkSwitched, KeyID: newID, Live: []string{"b"}, Recipients: map[string]bool{"b": true},
		Acks: acks(map[string][]string{"b": {oldID, newID}}), Since: t0.Add(-time.Minute), Now: t0, Grace: time.Second}
	if d := decideGossipKey(in); d.Step != gkWait || !d.Since.IsZero() {
		t.Fatalf("step %d since %v, want a wait with the grace reset", d.Step, d.Since)
	}
}
