package probe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

const lat = 5 * time.Millisecond // one-way latency in the simulations

func TestBringUp(t *testing.T) {
	n := newSim(t, lat)
	cfg := DefaultConfig()
	a := n.add(addrA, cfg, 1, addrB)
	b := n.add(addrB, cfg, 2, addrA)
	rawUp := n.runUntil(5*time.Second, "A's session up", func() bool { return n.session(a, addrB) == StateUp })
	if got := n.reported(a, addrB); got != StateUp {
		t.Errorf("a fresh session is reported %v when it comes up; want up at once (no hold before the first up)", got)
	}
	// Slow start: both send Down at once, then Init and Up at the
	// earliest the 1 s interval allows.
	if d := rawUp.Sub(t0); d > 2*time.Second {
		t.Errorf("bring-up took %v, want under 2 s", d)
	}
	n.runFor(2 * time.Second)
	pa, pb := n.peer(a, addrB), n.peer(b, addrA)
	for _, c := range []struct {
		name string
		p    PeerState
		peer *engine
		addr netip.Addr
	}{{"A", pa, b, addrA}, {"B", pb, a, addrB}} {
		other := n.peer(c.peer, c.addr)
		if c.p.RemoteDiscr != other.LocalDiscr || c.p.LocalDiscr == 0 {
			t.Errorf("%s: remote discriminator %d, the peer's is %d", c.name, c.p.RemoteDiscr, other.LocalDiscr)
		}
		if c.p.TxInterval != 200*time.Millisecond || c.p.DetectTime != 600*time.Millisecond {
			t.Errorf("%s: tx interval %v, detect time %v; want 200ms and 600ms", c.name, c.p.TxInterval, c.p.DetectTime)
		}
		if c.p.RTT != 2*lat || c.p.SRTT != 2*lat {
			t.Errorf("%s: RTT %v SRTT %v, want %v", c.name, c.p.RTT, c.p.SRTT, 2*lat)
		}
		if c.p.Loss != 0 || c.p.Missed != 0 || c.p.Downs != 0 {
			t.Errorf("%s: loss %v missed %d downs %d on a clean link", c.name, c.p.Loss, c.p.Missed, c.p.Downs)
		}
	}
}

// TestSlowStartAndPoll: Down packets advertise 1 s (RFC 5880 §6.8.3); the
// first Up packet carries Poll with the fast interval; the peer answers
// Final at once.
func TestSlowStartAndPoll(t *testing.T) {
	n, _, _ := pair(t, DefaultConfig(), lat)
	n.runFor(time.Second)
	var firstUp *sent
	for i, s := range n.log {
		if s.from != addrA {
			continue
		}
		if s.p.State != StateUp {
			if s.p.DesiredMinTxUS != 1000000 {
				t.Errorf("A sent %v with desired TX %d µs, want 1000000 while not up", s.p.State, s.p.DesiredMinTxUS)
			}
			continue
		}
		if firstUp == nil {
			firstUp = &n.log[i]
		}
	}
	if firstUp == nil || !firstUp.p.Poll || firstUp.p.DesiredMinTxUS != 200000 {
		t.Fatalf("A's first Up packet: %+v; want Poll with desired TX 200000 µs", firstUp)
	}
	answered := false
	for _, s := range n.log {
		if s.from == addrB && s.p.Final && s.at == firstUp.at.Add(lat) {
			answered = true
		}
	}
	if !answered {
		t.Errorf("B did not answer A's Poll with Final on arrival")
	}
}

// TestDetectionTime: a peer that falls silent is declared down after the
// detection time counted from its last packet: between detect-interval and
// detect after the cut (plus the latency of the last packet in flight).
func TestDetectionTime(t *testing.T) {
	for _, iv := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		for _, mult := range []uint8{3, 5} {
			t.Run(fmt.Sprintf("%v×%d", iv, mult), func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.Interval, cfg.Multiplier = iv, mult
				n, a, b := pair(t, cfg, lat)
				n.runFor(3 * time.Second)
				cutAt := n.now
				cut(n, addrB, addrA)
				downAt := n.runUntil(5*time.Second, "A declares B down", func() bool { return n.reported(a, addrB) != StateUp })
				detect := time.Duration(mult) * iv
				if d := downAt.Sub(cutAt); d <= detect-iv+lat || d > detect+lat {
					t.Errorf("down %v after the cut; want in (%v, %v]", d, detect-iv+lat, detect+lat)
				}
				pa := n.peer(a, addrB)
				if pa.LocalDiag != DiagDetectExpired || pa.DownDiag != DiagDetectExpired || pa.Downs != 1 || pa.RemoteDiscr != 0 {
					t.Errorf("A after expiry: %+v; want diag detect_expired, one down, remote discriminator cleared", pa)
				}
				// B still hears A, which now says Down: B goes down too.
				n.runUntil(2*time.Second, "B goes down", func() bool { return n.reported(b, addrA) != StateUp })
				if pb := n.peer(b, addrA); pb.LocalDiag != DiagNeighborDown || pb.RemoteDiag != DiagDetectExpired {
					t.Errorf("B: local diag %v remote diag %v; want neighbor_down, detect_expired", pb.LocalDiag, pb.RemoteDiag)
				}
			})
		}
	}
}

// TestRecoveryHold: after a down, the session comes back Up but is reported
// up only Hold later; a path that fails again during the hold is never
// reported up.
func TestRecoveryHold(t *testing.T) {
	cfg := DefaultConfig()
	n, a, b := pair(t, cfg, lat)
	cut(n, addrB, addrA)
	n.runUntil(2*time.Second, "A down", func() bool { return n.reported(a, addrB) == StateDown })
	n.drop = nil
	rawUp := n.runUntil(5*time.Second, "A's session up again", func() bool { return n.session(a, addrB) == StateUp })
	if p := n.peer(a, addrB); p.State == StateUp || !p.HoldUntil.Equal(rawUp.Add(cfg.Hold)) {
		t.Fatalf("at raw up: reported %v, hold until %v; want not up, hold until %v", p.State, p.HoldUntil, rawUp.Add(cfg.Hold))
	}
	repUp := n.runUntil(5*time.Second, "A reports B up", func() bool { return n.reported(a, addrB) == StateUp })
	if d := repUp.Sub(rawUp); d != cfg.Hold {
		t.Errorf("reported up %v after the session came up, want the hold, %v", d, cfg.Hold)
	}
	if p := n.peer(a, addrB); p.Session != StateUp || !p.Since.Equal(repUp) || !p.HoldUntil.IsZero() {
		t.Errorf("after the hold: %+v", p)
	}
	if n.peer(b, addrA).State != StateUp {
		t.Errorf("B does not report A up after the hold")
	}

	// Flap during the hold: never reported up.
	cut(n, addrB, addrA)
	n.runUntil(2*time.Second, "A down again", func() bool { return n.reported(a, addrB) == StateDown })
	n.drop = nil
	n.runUntil(5*time.Second, "A's session up again", func() bool { return n.session(a, addrB) == StateUp })
	n.runFor(cfg.Hold / 2)
	cut(n, addrB, addrA)
	reportedUp := false
	n.runUntil(2*time.Second, "A's session down during the hold", func() bool {
		reportedUp = reportedUp || n.reported(a, addrB) == StateUp
		return n.session(a, addrB) == StateDown
	})
	if reportedUp || n.peer(a, addrB).HoldUntil != (time.Time{}) {
		t.Errorf("a session that failed during its hold was reported up (or kept its hold)")
	}
	n.drop = nil
	rawUp = n.runUntil(5*time.Second, "up once more", func() bool { return n.session(a, addrB) == StateUp })
	repUp = n.runUntil(5*time.Second, "reported up", func() bool { return n.reported(a, addrB) == StateUp })
	if d := repUp.Sub(rawUp); d != cfg.Hold {
		t.Errorf("the hold restarted from the last up: %v, want %v", d, cfg.Hold)
	}
	if p := n.peer(a, addrB); p.Downs != 2 {
		t.Errorf("Downs = %d, want 2 (the flap during the hold was never reported up)", p.Downs)
	}
}

func TestNoHold(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Hold = 0
	n, a, _ := pair(t, cfg, lat)
	cut(n, addrB, addrA)
	n.runUntil(2*time.Second, "A down", func() bool { return n.reported(a, addrB) == StateDown })
	n.drop = nil
	rawUp := n.runUntil(5*time.Second, "up", func() bool { return n.session(a, addrB) == StateUp })
	if n.reported(a, addrB) != StateUp {
		t.Errorf("with Hold 0 the session is reported up at %v only later", rawUp)
	}
}

// TestDropsForeignPackets: garbage, unknown discriminators, a
// discriminator from the wrong address, and a genuine-looking AdminDown
// with TTL 64 are all dropped; the same AdminDown with TTL 255 does bring
// the session down (so the forged packet is otherwise effective).
func TestDropsForeignPackets(t *testing.T) {
	n, a, _ := pair(t, DefaultConfig(), lat)
	pa := n.peer(a, addrB)
	adminDown := Packet{State: StateAdminDown, Diag: DiagAdminDown, DetectMult: 3,
		MyDiscr: pa.RemoteDiscr, YourDiscr: pa.LocalDiscr, DesiredMinTxUS: 1e6, RequiredMinRxUS: 2e5}.Append(nil)
	unknown := Packet{State: StateUp, DetectMult: 3, MyDiscr: 7, YourDiscr: pa.LocalDiscr + 1, RequiredMinRxUS: 2e5}.Append(nil)
	up0 := Packet{State: StateUp, DetectMult: 3, MyDiscr: 7, RequiredMinRxUS: 2e5}.Append(nil)
	down0 := Packet{State: StateDown, DetectMult: 3, MyDiscr: 7, RequiredMinRxUS: 2e5}.Append(nil)
	n.inject(addrB, addrA, 255, []byte("garbage, not BFD at all"))
	n.inject(addrB, addrA, 255, unknown)
	n.inject(addrB, addrA, 255, up0)
	n.inject(addrC, addrA, 255, adminDown) // B's discriminators from C
	n.inject(addrC, addrA, 255, down0)     // a Down from a stranger
	n.inject(addrB, addrA, 64, adminDown)  // forwarded by a router
	n.runFor(time.Second)
	want := Drops{Invalid: 2, TTL: 1, Unknown: 2, Source: 1}
	if a.drops != want {
		t.Errorf("drops = %+v, want %+v", a.drops, want)
	}
	if p := n.peer(a, addrB); p.State != StateUp || p.Downs != 0 {
		t.Fatalf("foreign packets moved the session: %+v", p)
	}
	n.inject(addrB, addrA, 255, adminDown)
	n.runFor(time.Millisecond)
	if p := n.peer(a, addrB); p.State != StateDown || p.LocalDiag != DiagNeighborDown || p.RemoteDiag != DiagAdminDown {
		t.Errorf("a genuine AdminDown: %+v; want down, neighbor_down, remote admin_down", p)
	}
}

// TestCheckTTLOff: with CheckTTL false, TTL is not looked at.
func TestCheckTTLOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CheckTTL = false
	n, a, _ := pair(t, cfg, lat)
	pa := n.peer(a, addrB)
	n.inject(addrB, addrA, 1, Packet{State: StateAdminDown, DetectMult: 3, MyDiscr: pa.RemoteDiscr, YourDiscr: pa.LocalDiscr}.Append(nil))
	n.runFor(time.Millisecond)
	if n.reported(a, addrB) != StateDown || a.drops.TTL != 0 {
		t.Errorf("with CheckTTL off a TTL-1 packet was dropped")
	}
}

// TestRemoteRestart: the peer comes back with a new discriminator; the old
// session goes down at its first packet (it says Down with your
// discriminator 0), then up again after the hold.
func TestRemoteRestart(t *testing.T) {
	cfg := DefaultConfig()
	n, a, b := pair(t, cfg, lat)
	old := n.peer(b, addrA).LocalDiscr
	restart := n.now
	b2 := n.add(addrB, cfg, 99, addrA)
	downAt := n.runUntil(time.Second, "A sees the restart", func() bool { return n.reported(a, addrB) != StateUp })
	if d := downAt.Sub(restart); d > 2*lat {
		t.Errorf("restart noticed after %v; want at the restarted peer's first packet", d)
	}
	if p := n.peer(a, addrB); p.LocalDiag != DiagNeighborDown {
		t.Errorf("diag %v, want neighbor_down", p.LocalDiag)
	}
	n.runUntil(6*time.Second, "up with the new peer", func() bool { return n.reported(a, addrB) == StateUp })
	if p := n.peer(a, addrB); p.RemoteDiscr == old || p.RemoteDiscr != n.peer(b2, addrA).LocalDiscr {
		t.Errorf("remote discriminator %d; the new peer's is %d (old %d)", p.RemoteDiscr, n.peer(b2, addrA).LocalDiscr, old)
	}
}

// TestRemoveTarget: a removed target disappears from the snapshot at once,
// sends AdminDown (the remote goes down within one packet) and then stops.
func TestRemoveTarget(t *testing.T) {
	n, a, b := pair(t, DefaultConfig(), lat)
	n.runFor(time.Second)
	removed := n.now
	b.setTargets(nil, n.now)
	if len(b.snapshot(n.now)) != 0 {
		t.Fatal("a removed target is still in the snapshot")
	}
	downAt := n.runUntil(time.Second, "A down", func() bool { return n.reported(a, addrB) != StateUp })
	if d := downAt.Sub(removed); d > 150*time.Millisecond+lat {
		t.Errorf("A went down %v after the removal; want within three quarters of an interval", d)
	}
	if p := n.peer(a, addrB); p.LocalDiag != DiagNeighborDown || p.RemoteDiag != DiagAdminDown {
		t.Errorf("A: %+v", p)
	}
	n.runFor(5 * time.Second)
	fromB := 0
	for _, s := range n.log {
		if s.from == addrB && !s.at.Before(removed) {
			fromB++
			if s.p.State != StateAdminDown || s.p.Poll {
				t.Errorf("B sent %+v after removing A", s.p)
			}
		}
	}
	if fromB != 3 || len(b.retiring) != 0 {
		t.Errorf("B sent %d packets after the removal (want Multiplier, 3) and retains %d sessions", fromB, len(b.retiring))
	}
	// Re-adding starts a fresh session that comes up.
	b.setTargets([]Target{{Name: "a", Addr: addrA}}, n.now)
	n.runUntil(6*time.Second, "up again", func() bool { return n.reported(b, addrA) == StateUp })
}

// TestShutdown: the engine's last word is AdminDown.
func TestShutdown(t *testing.T) {
	n, a, b := pair(t, DefaultConfig(), lat)
	b.shutdown(n.now)
	n.collect(addrB)
	if p := n.peer(b, addrA); p.State != StateAdminDown || p.Session != StateAdminDown {
		t.Errorf("after shutdown the session is reported %v (session %v), want admin_down", p.State, p.Session)
	}
	n.runFor(2 * lat)
	if p := n.peer(a, addrB); p.State != StateDown || p.RemoteDiag != DiagAdminDown {
		t.Errorf("after the peer's shutdown: %+v", p)
	}
}

// TestNegotiation: each side transmits at the larger of its desired TX and
// the other's required RX; detection uses the remote's multiplier.
func TestNegotiation(t *testing.T) {
	n := newSim(t, lat)
	ca, cb := DefaultConfig(), DefaultConfig()
	ca.Interval, ca.Multiplier = 300*time.Millisecond, 5
	cb.Interval, cb.Multiplier = 100*time.Millisecond, 3
	a := n.add(addrA, ca, 1, addrB)
	b := n.add(addrB, cb, 2, addrA)
	n.runUntil(5*time.Second, "up", func() bool {
		return n.reported(a, addrB) == StateUp && n.reported(b, addrA) == StateUp
	})
	n.runFor(time.Second)
	pa, pb := n.peer(a, addrB), n.peer(b, addrA)
	if pa.TxInterval != 300*time.Millisecond || pb.TxInterval != 300*time.Millisecond {
		t.Errorf("tx intervals A %v B %v, want 300ms both", pa.TxInterval, pb.TxInterval)
	}
	if pa.DetectTime != 900*time.Millisecond || pb.DetectTime != 1500*time.Millisecond {
		t.Errorf("detect times A %v (want 3×300ms) B %v (want 5×300ms)", pa.DetectTime, pb.DetectTime)
	}
}

// TestJitter: periodic packets of an Up session leave every 75-100 % of the
// interval, spread across that range.
func TestJitter(t *testing.T) {
	n, _, _ := pair(t, DefaultConfig(), lat)
	start := n.now.Add(time.Second)
	n.runFor(30 * time.Second)
	var prev time.Time
	lo, hi := time.Hour, time.Duration(0)
	for _, s := range n.log {
		if s.from != addrA || s.p.Final || s.at.Before(start) {
			continue
		}
		if !prev.IsZero() {
			d := s.at.Sub(prev)
			lo, hi = min(lo, d), max(hi, d)
		}
		prev = s.at
	}
	if lo < 150*time.Millisecond || hi > 200*time.Millisecond || lo > 155*time.Millisecond || hi < 195*time.Millisecond {
		t.Errorf("intervals from %v to %v; want spread over [150ms, 200ms]", lo, hi)
	}
}

// TestRoundsMerge: 31 sessions added at different times end up sending in
// one round per interval (one wakeup), each still jittered within 75-100 %.
func TestRoundsMerge(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Local = netip.MustParseAddr("10.255.0.1")
	now := time.Unix(1000, 0)
	e := newEngine(cfg, rand.New(rand.NewPCG(1, 2)), now)
	var ts []Target
	for i := range 31 {
		ts = append(ts, Target{Name: fmt.Sprint(i), Addr: netip.AddrFrom4([4]byte{10, 255, 0, byte(2 + i)})})
		e.setTargets(ts, now)
		now = now.Add(37 * time.Millisecond) // staggered: 31 phases to begin with
	}
	rounds := map[time.Time]int{}
	last := map[netip.Addr]time.Time{}
	end := now.Add(120 * time.Second)
	for now.Before(end) {
		next := e.advance(now)
		out, _ := e.takeOut(nil)
		for _, o := range out {
			if now.After(end.Add(-20 * time.Second)) {
				rounds[now]++
				if l, ok := last[o.dst]; ok {
					// Down sessions send at the slow 1 s interval.
					if d := now.Sub(l); d < 750*time.Millisecond || d > time.Second {
						t.Fatalf("%v: interval %v, want 750ms-1s", o.dst, d)
					}
				}
			}
			last[o.dst] = now
		}
		now = next
	}
	// 20 s at 0.75-1 s per round: 20-27 rounds if all merged.
	if len(rounds) > 27 {
		t.Errorf("%d transmission rounds in the last 20 s, want one per interval (≤ 27): %v", len(rounds), rounds)
	}
}

// TestLoss: every fourth periodic packet B→A lost gives 25 % loss, and
// Missed counts exactly the packets dropped; the loss leaves the window
// once the link is clean.
func TestLoss(t *testing.T) {
	cfg := DefaultConfig()
	n, a, _ := pair(t, cfg, lat)
	n.runFor(time.Second)
	i := 0
	n.drop = func(from, _ netip.Addr, p Packet) bool {
		if from != addrB || p.Final {
			return false
		}
		i++
		return i%4 == 0
	}
	n.runFor(cfg.LossWindow + time.Second)
	p := n.peer(a, addrB)
	if math.Abs(p.Loss-0.25) > 0.02 {
		t.Errorf("loss %.3f, want 0.25", p.Loss)
	}
	if p.Missed != uint64(n.dropped) {
		t.Errorf("Missed = %d, dropped %d", p.Missed, n.dropped)
	}
	if p.State != StateUp {
		t.Errorf("one loss in four brought the session %v", p.State)
	}
	n.drop = nil
	n.runFor(cfg.LossWindow + time.Second)
	if p := n.peer(a, addrB); p.Loss != 0 {
		t.Errorf("loss %.3f a window after the link became clean", p.Loss)
	}
}

// TestLossOpenGap: a peer that just went silent shows loss before the
// detection time ends, and the expiry counts the missing packets.
func TestLossOpenGap(t *testing.T) {
	cfg := DefaultConfig()
	n, a, _ := pair(t, cfg, lat)
	n.runFor(3 * time.Second)
	cut(n, addrB, addrA)
	n.runUntil(time.Second, "open gap", func() bool { return n.peer(a, addrB).Loss > 0 })
	if s := n.session(a, addrB); s != StateUp {
		t.Fatalf("loss showed only once the session was %v", s)
	}
	n.runUntil(time.Second, "down", func() bool { return n.session(a, addrB) == StateDown })
	if p := n.peer(a, addrB); p.Missed != 3 || p.Loss <= 0 {
		t.Errorf("after expiry: missed %d loss %v; want 3 and above 0", p.Missed, p.Loss)
	}
}

func TestMissedIn(t *testing.T) {
	T := 200 * time.Millisecond
	for _, c := range []struct {
		gap  time.Duration
		want int
	}{
		{150 * time.Millisecond, 0}, {200 * time.Millisecond, 0}, {290 * time.Millisecond, 0},
		{300 * time.Millisecond, 1}, {400 * time.Millisecond, 1}, {450 * time.Millisecond, 2},
		{600 * time.Millisecond, 2}, {0, 0},
	} {
		if got := missedIn(c.gap, T); got != c.want {
			t.Errorf("missedIn(%v, %v) = %d, want %d", c.gap, T, got, c.want)
		}
	}
}

// TestRTT: Poll/Final every RTTInterval; a poll whose first P was lost is
// no sample (Karn); RTTInterval 0 sends no Poll after the one at Up.
func TestRTT(t *testing.T) {
	cfg := DefaultConfig()
	n, a, _ := pair(t, cfg, 7*time.Millisecond)
	start := n.now
	n.runFor(10 * time.Second)
	polls := 0
	for _, s := range n.log {
		if s.from == addrA && s.p.Poll && s.at.After(start) {
			polls++
		}
	}
	if want := int(10 * time.Second / cfg.RTTInterval); polls < want-1 || polls > want+1 {
		t.Errorf("%d polls in 10 s, want about %d (RTTInterval %v)", polls, want, cfg.RTTInterval)
	}
	if p := n.peer(a, addrB); p.RTT != 14*time.Millisecond {
		t.Errorf("RTT %v, want 14ms", p.RTT)
	}
	// Lose every first P: each sequence then takes two, and the answer
	// may belong to either, so no new sample is taken.
	n.latency = 20 * time.Millisecond
	lostFirst := false
	n.drop = func(from, _ netip.Addr, p Packet) bool {
		if from != addrA || !p.Poll {
			lostFirst = false
			return false
		}
		lostFirst = !lostFirst
		return lostFirst
	}
	n.runFor(5 * time.Second)
	if p := n.peer(a, addrB); p.RTT != 14*time.Millisecond {
		t.Errorf("RTT %v after ambiguous polls, want the last clean sample, 14ms", p.RTT)
	}

	cfg.RTTInterval = 0
	n, _, _ = pair(t, cfg, lat)
	start = n.now
	n.runFor(5 * time.Second)
	for _, s := range n.log {
		if s.from == addrA && s.p.Poll && s.at.After(start.Add(time.Second)) {
			t.Fatalf("RTTInterval 0 still polls: %+v", s)
		}
	}
}

// TestRemoteDemandAndZeroRx: periodic transmission stops when the remote
// asks for Demand mode (both Up) or sets Required Min RX 0 (RFC 5880
// §6.8.7); Final answers still go out.
func TestRemoteDemandAndZeroRx(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(p *Packet)
	}{
		{"demand", func(p *Packet) { p.Demand = true }},
		{"zero rx", func(p *Packet) { p.RequiredMinRxUS = 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, _, _ := pair(t, DefaultConfig(), lat)
			n.mutate = func(from, _ netip.Addr, p *Packet) {
				if from == addrB {
					c.edit(p)
				}
			}
			n.runFor(300 * time.Millisecond) // the edited packets arrive
			start := n.now
			n.runFor(400 * time.Millisecond)
			for _, s := range n.log {
				if s.from == addrA && s.at.After(start) && !s.p.Final && s.p.State == StateUp {
					t.Fatalf("A sent a periodic packet at %v: %+v", s.at.Sub(start), s.p)
				}
			}
		})
	}
}

// TestManySessions: one engine with several targets keeps them apart.
func TestManySessions(t *testing.T) {
	n := newSim(t, lat)
	cfg := DefaultConfig()
	var peers []netip.Addr
	for i := 2; i <= 9; i++ {
		peers = append(peers, netip.AddrFrom4([4]byte{10, 255, 0, byte(i)}))
	}
	hub := n.add(addrA, cfg, 1, peers...)
	for i, p := range peers {
		n.add(p, cfg, uint64(10+i), addrA)
	}
	n.runUntil(5*time.Second, "all up", func() bool {
		for _, s := range hub.snapshot(n.now) {
			if s.State != StateUp {
				return false
			}
		}
		return true
	})
	n.runFor(time.Second)
	// Coalescing: periodic packets due within a tenth of an interval leave
	// together, so the hub wakes for far fewer instants than it sends.
	instants, packets := map[time.Time]bool{}, 0
	for _, s := range n.log {
		if s.from == addrA && s.p.State == StateUp && !s.p.Final {
			instants[s.at] = true
			packets++
		}
	}
	if len(instants)*10 > packets*8 {
		t.Errorf("%d periodic packets left at %d distinct instants; want under 80 %%", packets, len(instants))
	}
	victim := peers[3]
	cut(n, victim, addrA)
	n.runFor(2 * time.Second)
	for _, s := range hub.snapshot(n.now) {
		if (s.Addr == victim) != (s.State != StateUp) {
			t.Errorf("%s is %v after cutting only %s", s.Addr, s.State, victim)
		}
	}
}

// TestStallGrace: the host pauses (every process, so no packet is sent or
// read) for longer than the detection time. Waking, each side's timers are
// all overdue; declaring the other down would be a false down, which the
// soak on a loaded 2-core machine saw. With graceStall (what the timer loop
// does when it wakes more than half an interval late) both stay up; without
// it, the same pause is a down. A peer that really died is still declared
// down, one interval after the wake, and a second stall before its next
// packet gets no second grace.
func TestStallGrace(t *testing.T) {
	cfg := DefaultConfig()
	// pause stops the clock-driven world for longer than the detection
	// time (600 ms), then wakes the engines in graced as the timer loop
	// does after such a late wakeup.
	pause := func(n *simNet, graced ...*engine) {
		n.now = n.now.Add(700 * time.Millisecond)
		for _, e := range graced {
			if got := e.graceStall(n.now, cfg.Interval); got != 1 {
				t.Fatalf("graceStall graced %d sessions, want 1", got)
			}
		}
	}
	t.Run("paused host", func(t *testing.T) {
		n, a, b := pair(t, cfg, lat)
		pause(n, a, b)
		n.runFor(3 * time.Second)
		for _, p := range []PeerState{n.peer(a, addrB), n.peer(b, addrA)} {
			if p.State != StateUp || p.Downs != 0 {
				t.Errorf("after a host pause: %+v; want up, no down", p)
			}
		}
	})
	t.Run("paused host, no grace", func(t *testing.T) {
		n, a, b := pair(t, cfg, lat)
		pause(n)
		n.runFor(3 * time.Second)
		if n.peer(a, addrB).Downs+n.peer(b, addrA).Downs == 0 {
			t.Errorf("a pause longer than the detection time gave no down without the grace: the test above proves nothing")
		}
	})
	t.Run("dead peer", func(t *testing.T) {
		n, a, _ := pair(t, cfg, lat)
		cut(n, addrB, addrA)
		pause(n, a)
		woke := n.now
		downAt := n.runUntil(2*time.Second, "A declares B down", func() bool { return n.reported(a, addrB) != StateUp })
		if d := downAt.Sub(woke); d != cfg.Interval {
			t.Errorf("dead peer declared down %v after the wake, want one interval (%v)", d, cfg.Interval)
		}
	})
	t.Run("one grace per silence", func(t *testing.T) {
		n, a, _ := pair(t, cfg, lat)
		cut(n, addrB, addrA)
		pause(n, a)
		n.now = n.now.Add(cfg.Interval) // stalled again before it ran
		if got := a.graceStall(n.now, cfg.Interval); got != 0 {
			t.Errorf("a second stall in one silence was graced (%d sessions)", got)
		}
	})
}

// TestStalePacket: a packet older than one already handled (read from the
// other socket later) moves no timer and no state, but a Poll in it is
// still answered.
func TestStalePacket(t *testing.T) {
	_, a, _ := pair(t, DefaultConfig(), lat)
	s := a.byAddr[addrB]
	lastRx, detectAt, rx := s.lastRx, s.detectAt, s.rxPackets
	old := lastRx.Add(-100 * time.Millisecond)
	down := Packet{State: StateDown, DetectMult: 3, MyDiscr: s.remoteDiscr, YourDiscr: s.localDiscr,
		DesiredMinTxUS: 200000, RequiredMinRxUS: 200000}
	a.receive(down.Append(nil), addrB, 255, old)
	if s.state != StateUp || !s.lastRx.Equal(lastRx) || !s.detectAt.Equal(detectAt) || s.rxPackets != rx+1 {
		t.Errorf("after a stale Down: state %v, lastRx moved %v, detectAt moved %v, rx %d (want up, 0, 0, %d)",
			s.state, s.lastRx.Sub(lastRx), s.detectAt.Sub(detectAt), s.rxPackets, rx+1)
	}
	poll := down
	poll.State, poll.Poll = StateUp, true
	a.receive(poll.Append(nil), addrB, 255, old)
	out, _ := a.takeOut(nil)
	if len(out) != 1 {
		t.Fatalf("a stale Poll got %d answers, want 1 Final", len(out))
	}
	if p, err := ParsePacket(out[0].b[:]); err != nil || !p.Final {
		t.Errorf("answer to a stale Poll: %+v, %v; want a Final", p, err)
	}
}
