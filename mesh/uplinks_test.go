package mesh

import (
	"net/netip"
	"testing"
	"time"
)

var (
	upA = netip.MustParseAddrPort("192.0.2.1:51820")
	upB = netip.MustParseAddrPort("198.51.100.1:51820")
	upC = netip.MustParseAddrPort("203.0.113.1:51820")
)

// uplinkClock drives a chooser on a fake clock.
type uplinkClock struct {
	t   *testing.T
	c   *uplinkChooser
	now time.Time
}

func newUplinkClock(t *testing.T, eps ...netip.AddrPort) *uplinkClock {
	timers := uplinkTimers{Trial: 1600 * time.Millisecond, ReturnTrial: 600 * time.Millisecond, Hold: 10 * time.Second}
	return &uplinkClock{t: t, c: newUplinkChooser(timers, eps), now: time.Unix(1_700_000_000, 0)}
}

// step advances the clock by d and steps with s (the device sends to the
// chooser's current endpoint); it checks whether a switch happened and
// where the chooser is.
func (u *uplinkClock) step(d time.Duration, s uplinkSession, wantSwitch bool, want netip.AddrPort) {
	u.t.Helper()
	u.stepDevice(d, s, u.c.Current(), wantSwitch, want)
}

func (u *uplinkClock) stepDevice(d time.Duration, s uplinkSession, device netip.AddrPort, wantSwitch bool, want netip.AddrPort) {
	u.t.Helper()
	u.now = u.now.Add(d)
	if got := u.c.Step(u.now, s, device); got != wantSwitch {
		u.t.Fatalf("at +%v with %v: switched %v, want %v (now on %v, %v)", d, s, got, wantSwitch, u.c.Current(), u.c.phase)
	}
	if u.c.Current() != want {
		u.t.Fatalf("at +%v with %v: on %v, want %v (%v)", d, s, u.c.Current(), want, u.c.phase)
	}
}

func TestUplinkOneEndpointNeverSwitches(t *testing.T) {
	u := newUplinkClock(t, upA)
	u.step(0, sessionDown, false, upA)
	u.step(time.Hour, sessionDown, false, upA)
	if !u.c.Due().IsZero() || u.c.failovers != 0 {
		t.Errorf("due %v failovers %d", u.c.Due(), u.c.failovers)
	}
}

func TestUplinkStaysWhileUpOrUnknown(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionUnknown, false, upA)
	u.step(time.Minute, sessionUp, false, upA)
	u.step(time.Hour, sessionUnknown, false, upA)
	if !u.c.Due().IsZero() {
		t.Errorf("due %v on the preferred endpoint", u.c.Due())
	}
}

func TestUplinkFailsOverAndSettles(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionUp, false, upA)
	u.step(time.Second, sessionDown, true, upB)
	if !u.c.Trialling() || u.c.failovers != 1 || !u.c.Due().Equal(u.now.Add(1600*time.Millisecond)) {
		t.Fatalf("after the failover: trialling %v failovers %d due %v", u.c.Trialling(), u.c.failovers, u.c.Due())
	}
	u.step(500*time.Millisecond, sessionDown, false, upB) // still within the trial
	u.step(500*time.Millisecond, sessionUp, false, upB)   // up on the fallback: settled
	if u.c.Trialling() || !u.c.Due().Equal(u.now.Add(10*time.Second)) {
		t.Fatalf("settled on the fallback: trialling %v due %v", u.c.Trialling(), u.c.Due())
	}
}

func TestUplinkCyclesThroughAllAndWraps(t *testing.T) {
	u := newUplinkClock(t, upA, upB, upC)
	u.step(0, sessionDown, true, upB)
	u.step(1599*time.Millisecond, sessionDown, false, upB)
	u.step(time.Millisecond, sessionDown, true, upC)
	u.step(1600*time.Millisecond, sessionDown, true, upA) // round the list
	u.step(1600*time.Millisecond, sessionDown, true, upB)
	if u.c.failovers != 4 {
		t.Errorf("failovers %d, want 4", u.c.failovers)
	}
	u.step(time.Millisecond, sessionUp, false, upB)
}

func TestUplinkSettlesOnPreferredAfterCycling(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	u.step(1600*time.Millisecond, sessionDown, true, upA)
	u.step(100*time.Millisecond, sessionUp, false, upA)
	if u.c.Trialling() || !u.c.Due().IsZero() {
		t.Errorf("settled on the preferred: trialling %v due %v", u.c.Trialling(), u.c.Due())
	}
}

func TestUplinkReturnsAfterHoldWhenThePreferredAnswers(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	u.step(time.Second, sessionUp, false, upB)
	u.step(9999*time.Millisecond, sessionUp, false, upB) // the hold is not over
	u.step(time.Millisecond, sessionUp, true, upA)       // return trial
	if !u.c.NeedsDevice(u.now.Add(600 * time.Millisecond)) {
		t.Fatal("the end of the return trial does not read the device")
	}
	u.step(599*time.Millisecond, sessionUp, false, upA)
	u.step(time.Millisecond, sessionUp, false, upA) // the device still sends to A: settled
	if u.c.Trialling() || !u.c.Due().IsZero() || u.c.failovers != 1 {
		t.Errorf("back on the preferred: trialling %v due %v failovers %d", u.c.Trialling(), u.c.Due(), u.c.failovers)
	}
}

func TestUplinkReturnRoamedBackFailsAndHoldDoubles(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	u.step(time.Second, sessionUp, false, upB)
	u.step(10*time.Second, sessionUp, true, upA)
	// The preferred path is still broken: the remote's packets come from B
	// and the device roamed back to it; the session never went down.
	u.stepDevice(600*time.Millisecond, sessionUp, upB, true, upB)
	if !u.c.Due().Equal(u.now.Add(20 * time.Second)) {
		t.Fatalf("the hold did not double: due in %v", u.c.Due().Sub(u.now))
	}
	u.step(20*time.Second, sessionUp, true, upA)
	u.stepDevice(600*time.Millisecond, sessionUp, upB, true, upB)
	if !u.c.Due().Equal(u.now.Add(40 * time.Second)) {
		t.Fatalf("the hold did not double again: due in %v", u.c.Due().Sub(u.now))
	}
	for range 10 { // capped at 16 holds
		u.step(u.c.Due().Sub(u.now), sessionUp, true, upA)
		u.stepDevice(600*time.Millisecond, sessionUp, upB, true, upB)
	}
	if got := u.c.Due().Sub(u.now); got != 160*time.Second {
		t.Fatalf("hold after many failed returns %v, want the cap 160s", got)
	}
	// A successful return resets the hold.
	u.step(u.c.Due().Sub(u.now), sessionUp, true, upA)
	u.step(600*time.Millisecond, sessionUp, false, upA)
	u.step(time.Second, sessionDown, true, upB)
	u.step(time.Second, sessionUp, false, upB)
	if got := u.c.Due().Sub(u.now); got != 10*time.Second {
		t.Errorf("hold after a successful return %v, want 10s", got)
	}
}

func TestUplinkReturnSessionDownGoesBack(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	u.step(time.Second, sessionUp, false, upB)
	u.step(10*time.Second, sessionUp, true, upA)
	u.step(300*time.Millisecond, sessionDown, true, upB)
	if !u.c.Trialling() || u.c.failovers != 2 {
		t.Fatalf("after a failed return: trialling %v failovers %d", u.c.Trialling(), u.c.failovers)
	}
	u.step(500*time.Millisecond, sessionUp, false, upB)
	if got := u.c.Due().Sub(u.now); got != 20*time.Second {
		t.Errorf("hold %v, want 20s", got)
	}
}

func TestUplinkNewEndpointList(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	u.step(time.Second, sessionUp, false, upB)
	// The site reorders its list: B is still in use.
	if u.c.SetEndpoints(u.now, []netip.AddrPort{upC, upB}) || u.c.Current() != upB {
		t.Fatalf("reordered list moved to %v", u.c.Current())
	}
	// A new list during a trial ends it where the device sends.
	u.step(time.Second, sessionDown, true, upC)
	if u.c.SetEndpoints(u.now, []netip.AddrPort{upB, upC}) || u.c.Current() != upC || u.c.Trialling() {
		t.Fatalf("new list during a trial: on %v, trialling %v", u.c.Current(), u.c.Trialling())
	}
	// C is gone: start over on the preferred.
	if !u.c.SetEndpoints(u.now, []netip.AddrPort{upA, upB}) || u.c.Current() != upA || u.c.Trialling() {
		t.Fatalf("list without C: on %v, trialling %v", u.c.Current(), u.c.Trialling())
	}
	if u.c.SetEndpoints(u.now, []netip.AddrPort{upA, upB}) {
		t.Error("the same list reported a change")
	}
	u.c.SetEndpoints(u.now, nil)
	if u.c.Current().IsValid() || u.c.Step(u.now, sessionDown, netip.AddrPort{}) {
		t.Error("an empty list has an endpoint or switches")
	}
}

func TestUplinkTimersFromProbeTimers(t *testing.T) {
	got := uplinkTimersFor(100*time.Millisecond, 3, 30*time.Second)
	want := uplinkTimers{Trial: 1600 * time.Millisecond, ReturnTrial: 600 * time.Millisecond, Hold: 30 * time.Second}
	if got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
}

func TestUplinkAdoptsWhereTheDeviceRoamed(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionUp, false, upA)
	if u.c.Adopt(u.now, upA) || u.c.Adopt(u.now, upC) {
		t.Fatal("adopted the current endpoint or one the site does not list")
	}
	// The remote's packets come from B now: follow, and return after the hold.
	if !u.c.Adopt(u.now, upB) || u.c.Current() != upB || u.c.failovers != 1 {
		t.Fatalf("did not adopt B: on %v, failovers %d", u.c.Current(), u.c.failovers)
	}
	u.step(10*time.Second, sessionUp, true, upA)
	// During a trial the chooser's own pick stands.
	if u.c.Adopt(u.now, upB) || u.c.Current() != upA {
		t.Fatal("adopted during a return trial")
	}
	u.step(600*time.Millisecond, sessionUp, false, upA)
	// Roaming back to the preferred one resets the hold.
	u.c.Adopt(u.now, upB)
	if !u.c.Adopt(u.now, upA) || u.c.Current() != upA || !u.c.Due().IsZero() || u.c.failovers != 2 {
		t.Fatalf("roamed back to A: on %v due %v failovers %d", u.c.Current(), u.c.Due(), u.c.failovers)
	}
}

// A site that is down altogether: after a round of trials, each round's
// trials last twice as long, up to 16 times; a session up resets them.
func TestUplinkTrialsSlowDownWhenAllFail(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	u.step(0, sessionDown, true, upB)
	var got []time.Duration
	for range 12 {
		d := u.c.Due().Sub(u.now)
		got = append(got, d)
		want := upA
		if u.c.Current() == upA {
			want = upB
		}
		u.step(d, sessionDown, true, want)
	}
	const tr = 1600 * time.Millisecond
	want := []time.Duration{tr, tr, 2 * tr, 2 * tr, 4 * tr, 4 * tr, 8 * tr, 8 * tr, 16 * tr, 16 * tr, 16 * tr, 16 * tr}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("trial lengths %v, want %v", got, want)
		}
	}
	u.step(time.Millisecond, sessionUp, false, u.c.Current())
	if u.c.Current() == upA {
		u.step(time.Second, sessionDown, true, upB)
	} else {
		u.step(time.Second, sessionDown, true, upA)
	}
	if d := u.c.Due().Sub(u.now); d != tr {
		t.Errorf("first trial after a recovery lasts %v, want %v", d, tr)
	}
}

// A chooser that is due but cannot act (the hold is over, the session not
// up) is looked at again a probe interval later, never in a busy loop; a
// trial is polled every interval; a chooser on the preferred endpoint is
// never due.
func TestUplinkTimerNeverSpins(t *testing.T) {
	u := newUplinkClock(t, upA, upB)
	idle := newUplinkChooser(u.c.timers, []netip.AddrPort{upA, upB})
	choosers := map[string]*uplinkChooser{"ams1": u.c, "par1": idle}
	if due := nextUplinkDue(u.now, 100*time.Millisecond, choosers); !due.IsZero() {
		t.Fatalf("due %v with both on the preferred endpoint", due)
	}
	u.step(0, sessionDown, true, upB)
	if due := nextUplinkDue(u.now, 100*time.Millisecond, choosers); !due.Equal(u.now.Add(100 * time.Millisecond)) {
		t.Fatalf("trial polled at %v, want in 100ms", due.Sub(u.now))
	}
	u.step(time.Second, sessionUp, false, upB)
	if due := nextUplinkDue(u.now, 100*time.Millisecond, choosers); !due.Equal(u.now.Add(10 * time.Second)) {
		t.Fatalf("settled on the fallback: due in %v, want the hold (10s)", due.Sub(u.now))
	}
	// Long past the hold, and the session unknown: Step does nothing.
	now := u.now.Add(time.Hour)
	if u.c.Step(now, sessionUnknown, netip.AddrPort{}) {
		t.Fatal("switched without a session")
	}
	if due := nextUplinkDue(now, 100*time.Millisecond, choosers); !due.Equal(now.Add(100 * time.Millisecond)) {
		t.Fatalf("overdue chooser: due in %v, want 100ms (not at once)", due.Sub(now))
	}
}
