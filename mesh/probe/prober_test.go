package probe

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	lo1 = netip.MustParseAddr("127.0.0.1")
	lo2 = netip.MustParseAddr("127.0.0.2")
	lo3 = netip.MustParseAddr("127.0.0.3")
)

// freePort returns a UDP port free on every address given; other tests on
// this shared machine use other random ports.
func freePort(t testing.TB, addrs ...netip.Addr) uint16 {
	t.Helper()
	for range 50 {
		port := uint16(20000 + rand.IntN(10000))
		var open []net.PacketConn
		ok := true
		for _, a := range addrs {
			c, err := net.ListenPacket("udp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				ok = false
				break
			}
			open = append(open, c)
		}
		for _, c := range open {
			c.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free UDP port found in 50 tries")
	return 0
}

// startProber runs a Prober until the test ends (or stop is called).
func startProber(t testing.TB, cfg Config, targets ...Target) (p *Prober, stop func()) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTargets(targets); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return p, stop
}

// waitFor waits until cond holds for p's snapshot, woken by Changes and
// re-checked every 10 ms (for RTT, counters), and fails after max.
func waitFor(t testing.TB, p *Prober, max time.Duration, what string, cond func([]PeerState) bool) []PeerState {
	t.Helper()
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s := p.Snapshot(); cond(s) {
			return s
		}
		select {
		case <-p.Changes():
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("after %v: %s never happened; snapshot %+v", max, what, p.Snapshot())
		}
	}
}

func allUp(s []PeerState) bool {
	return len(s) > 0 && !slices.ContainsFunc(s, func(p PeerState) bool { return p.State != StateUp })
}

func loopbackConfig(local netip.Addr, port uint16, iv time.Duration) Config {
	cfg := DefaultConfig()
	cfg.Local, cfg.Port, cfg.Interval = local, port, iv
	return cfg
}

// TestProberLoopback runs two Probers over real UDP on 127.0.0.1 and
// 127.0.0.2: they come up, measure RTT, drop a forged packet by its TTL
// (which without the check takes the session down), and a graceful stop
// takes the peer down at once.
func TestProberLoopback(t *testing.T) {
	port := freePort(t, lo1, lo2)
	p1, _ := startProber(t, loopbackConfig(lo1, port, 100*time.Millisecond), Target{"two", lo2})
	p2, stop2 := startProber(t, loopbackConfig(lo2, port, 100*time.Millisecond), Target{"one", lo1})
	waitFor(t, p1, 10*time.Second, "p1 up", allUp)
	waitFor(t, p2, 10*time.Second, "p2 up", allUp)
	s := waitFor(t, p1, 10*time.Second, "an RTT sample", func(s []PeerState) bool { return s[0].RTT > 0 })
	t.Logf("loopback RTT %v", s[0].RTT)
	if d := p1.Stats().Drops; d != (Drops{}) {
		t.Errorf("drops on a clean loopback: %+v", d)
	}

	// A genuine AdminDown for p1's session, from p2's address but another
	// socket, with the kernel's default TTL (64): dropped.
	forger, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo2, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	forged := Packet{State: StateAdminDown, Diag: DiagAdminDown, DetectMult: 3,
		MyDiscr: s[0].RemoteDiscr, YourDiscr: s[0].LocalDiscr, DesiredMinTxUS: 1e6, RequiredMinRxUS: 1e5}.Append(nil)
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo1, port))
	if _, err := forger.WriteToUDP(forged, to); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p1, 5*time.Second, "the TTL drop", func([]PeerState) bool { return p1.Stats().TTL == 1 })
	if s := p1.Snapshot(); s[0].State != StateUp {
		t.Fatalf("the TTL-64 packet took the session %v", s[0].State)
	}
	// The same packet with TTL 255 is taken: the check is what stopped it.
	raw, err := forger.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, 255)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := forger.WriteToUDP(forged, to); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p1, 5*time.Second, "the forged AdminDown with TTL 255 taken", func(s []PeerState) bool {
		return s[0].Downs == 1
	})
	// Back up (after the hold), then a graceful stop of p2.
	waitFor(t, p1, 10*time.Second, "p1 up again", allUp)
	stopAt := time.Now()
	stop2()
	s = waitFor(t, p1, 5*time.Second, "p1 sees p2's AdminDown", func(s []PeerState) bool { return s[0].State != StateUp })
	if s := p2.Snapshot(); s[0].State != StateAdminDown {
		t.Errorf("a stopped Prober reports %v, want admin_down", s[0].State)
	}
	// Its AdminDown, not the detection time: the diags say which.
	t.Logf("graceful stop seen after %v", s[0].Since.Sub(stopAt))
	if s[0].RemoteDiag != DiagAdminDown || s[0].LocalDiag != DiagNeighborDown {
		t.Errorf("after the peer's stop: %+v; want neighbor_down from its admin_down", s[0])
	}
}

// TestRunErrors: a second Run and a busy port are errors, not hangs.
func TestRunErrors(t *testing.T) {
	p, port := startProberOnAFreePort(t, lo1)
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v", err)
	}
	q, err := New(loopbackConfig(lo1, port, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Run(context.Background()); err == nil || !strings.Contains(err.Error(), netip.AddrPortFrom(lo1, port).String()) {
		t.Errorf("Run on a busy port: %v, want an error naming %s", err, netip.AddrPortFrom(lo1, port))
	}
}

// startProberOnAFreePort runs a Prober on a port freePort found, until the
// test ends. Such a port can be taken by another process (the packages'
// tests run in parallel) between the check and the Prober's bind: then it
// tries another, at most 5 times.
func startProberOnAFreePort(t *testing.T, addr netip.Addr) (*Prober, uint16) {
	t.Helper()
	for range 5 {
		port := freePort(t, addr)
		p, err := New(loopbackConfig(addr, port, 100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		bound := func() bool { // bound when the port is no longer free
			c, err := net.ListenPacket("udp4", netip.AddrPortFrom(addr, port).String())
			if err == nil {
				c.Close()
			}
			return err != nil
		}
		deadline := time.Now().Add(5 * time.Second)
		for !bound() && time.Now().Before(deadline) {
			select {
			case err := <-done:
				cancel()
				if err != nil && strings.Contains(err.Error(), "address already in use") {
					goto next
				}
				t.Fatalf("Run on a free port: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		return p, port
	next:
	}
	t.Fatal("5 free ports were taken before the Prober could bind them")
	return nil, 0
}

// helperEnv makes the test binary a bare Prober (TestHelperProber) so the
// detection tests can kill a peer with SIGKILL: no AdminDown, no goodbye.
const helperEnv = "DCMESH_PROBE_HELPER"

// TestHelperProber is not a test: run with helperEnv set to one or more
// "LOCAL PORT INTERVAL MULT TARGET..." specs separated by ";", it runs
// those Probers until killed.
func TestHelperProber(t *testing.T) {
	specs := os.Getenv(helperEnv)
	if specs == "" {
		t.Skip("helper process for the detection and soak tests")
	}
	done := make(chan error)
	n := 0
	for spec := range strings.SplitSeq(specs, ";") {
		p, err := helperProber(strings.Fields(spec))
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		n++
		go func() { done <- p.Run(context.Background()) }()
	}
	for range n {
		if err := <-done; err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
	}
}

func helperProber(f []string) (*Prober, error) {
	if len(f) < 5 {
		return nil, fmt.Errorf("helper spec %q: want LOCAL PORT INTERVAL MULT TARGET", f)
	}
	cfg := loopbackConfig(netip.MustParseAddr(f[0]), 0, 0)
	var port, mult int
	fmt.Sscan(f[1], &port)
	fmt.Sscan(f[3], &mult)
	iv, err := time.ParseDuration(f[2])
	if err != nil {
		return nil, err
	}
	cfg.Port, cfg.Interval, cfg.Multiplier = uint16(port), iv, uint8(mult)
	p, err := New(cfg)
	if err != nil {
		return nil, err
	}
	var ts []Target
	for _, a := range f[4:] {
		ts = append(ts, Target{Name: a, Addr: netip.MustParseAddr(a)})
	}
	return p, p.SetTargets(ts)
}

// helperSpec is one helper Prober's spec.
func helperSpec(local netip.Addr, port uint16, iv time.Duration, mult uint8, targets ...netip.Addr) string {
	spec := fmt.Sprintf("%s %d %v %d", local, port, iv, mult)
	for _, a := range targets {
		spec += " " + a.String()
	}
	return spec
}

// startHelper starts Probers in a child process.
func startHelper(t testing.TB, specs ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProber$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(specs, ";"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// TestDetectionOnKill measures, over real UDP, the time from SIGKILL of the
// peer's process to the down report, three times each at 200 ms × 3 (issue
// 12: ≤ 1 s) and 100 ms × 3 (≤ 0.5 s). Two figures per trial:
//
//   - decided: the deadline the protocol set, the kernel's receive time of
//     the peer's last packet plus the detection time, minus the kill time.
//     Host load cannot move it (the kernel stamps arrivals), so every trial
//     must meet the bound; its worst case is the detection time itself,
//     600 and 300 ms.
//   - observed: when the down was reported. It adds how late this process
//     ran its timer, which on an overloaded shared host can be hundreds of
//     milliseconds (Stats.MaxTimerDelay shows it). It must meet the bound
//     whenever that lateness stayed under 100 ms; otherwise it is logged.
//
// The kill follows a packet's arrival within waitFor's 10 ms poll: close to
// the worst case, a full detection time of silence.
func TestDetectionOnKill(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: takes about 15 s")
	}
	for _, c := range []struct {
		iv    time.Duration
		bound time.Duration
	}{{200 * time.Millisecond, time.Second}, {100 * time.Millisecond, 500 * time.Millisecond}} {
		t.Run(fmt.Sprintf("%v×3", c.iv), func(t *testing.T) {
			port := freePort(t, lo1, lo2)
			cfg := loopbackConfig(lo1, port, c.iv)
			cfg.Hold = 0 // the hold is not what is measured here
			p, _ := startProber(t, cfg, Target{"peer", lo2})
			var decided, observed []time.Duration
			for trial := range 3 {
				s := killTrial(t, p, port, c.iv)
				dec, obs := s.LastRx.Add(s.DetectTime).Sub(s.killAt), s.Since.Sub(s.killAt)
				decided, observed = append(decided, dec), append(observed, obs)
				if s.LocalDiag != DiagDetectExpired {
					t.Errorf("trial %d: diag %v, want detect_expired", trial, s.LocalDiag)
				}
				if dec > c.bound {
					t.Errorf("trial %d: the protocol decided down %v after the kill, over %v", trial, dec, c.bound)
				}
				if late := obs - dec; obs > c.bound && late < 100*time.Millisecond {
					t.Errorf("trial %d: down reported %v after the kill, over %v, with the timer only %v late", trial, obs, c.bound, late)
				}
			}
			t.Logf("%v×3 after SIGKILL: decided %v, observed %v (bound %v; timer delay max %v)",
				c.iv, decided, observed, c.bound, p.Stats().MaxTimerDelay)
		})
	}
}

type killed struct {
	PeerState
	killAt time.Time
}

// killTrial starts a peer in a child process, waits until the session runs
// at the fast interval, kills the child and returns the session once down.
func killTrial(t *testing.T, p *Prober, port uint16, iv time.Duration) killed {
	t.Helper()
	child := startHelper(t, helperSpec(lo2, port, iv, 3, lo1))
	waitFor(t, p, 10*time.Second, "up at the fast interval", func(s []PeerState) bool {
		return s[0].State == StateUp && s[0].DetectTime == 3*iv
	})
	rx := p.Snapshot()[0].RxPackets
	waitFor(t, p, 5*time.Second, "steady", func(s []PeerState) bool { return s[0].RxPackets >= rx+3 })
	killAt := time.Now()
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, p, 5*time.Second, "down after the kill", func(s []PeerState) bool { return s[0].State != StateUp })
	_ = child.Wait()
	return killed{s[0], killAt}
}

func TestNewValidates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Local = lo1
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Local = netip.Addr{} }, "Local is required"},
		{func(c *Config) { c.Local = netip.MustParseAddr("224.0.0.1") }, "Local 224.0.0.1 is not a unicast"},
		{func(c *Config) { c.Port = 0 }, "Port is 0: use DefaultPort (3786)"},
		{func(c *Config) { c.Interval = 10 * time.Millisecond }, "Interval 10ms is out of range: use 50ms to 10s"},
		{func(c *Config) { c.Interval = 0 }, "Interval 0s is out of range"},
		{func(c *Config) { c.Interval = 100*time.Millisecond + 1 }, "finer than the protocol's microseconds"},
		{func(c *Config) { c.Multiplier = 1 }, "Multiplier 1: use 2 to 255"},
		{func(c *Config) { c.Hold = -time.Second }, "Hold -1s is negative"},
		{func(c *Config) { c.RTTInterval = 100 * time.Millisecond }, "RTTInterval 100ms: use 0 (no RTT) or at least Interval (200ms)"},
		{func(c *Config) { c.LossWindow = time.Second }, "LossWindow 1s is under 10 intervals (2s)"},
	} {
		bad := cfg
		c.edit(&bad)
		_, err := New(bad)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", err, c.want)
		}
	}
	if _, err := New(cfg); err != nil {
		t.Errorf("DefaultConfig with Local: %v", err)
	}
	zero := cfg
	zero.Hold, zero.RTTInterval = 0, 0
	if _, err := New(zero); err != nil {
		t.Errorf("Hold 0 and RTTInterval 0 are allowed: %v", err)
	}
}

func TestSetTargetsValidates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Local = lo1
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	good := []Target{{"b", lo2}, {"c", lo3}}
	if err := p.SetTargets(good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ts   []Target
		want string
	}{
		{[]Target{{"x", netip.Addr{}}}, "probe target 0 (x): Addr is required"},
		{[]Target{{"b", lo2}, {"b2", lo2}}, "probe target 1 (b2): Addr 127.0.0.2 is also target 0"},
		{[]Target{{"me", lo1}}, "is this Prober's own Local address"},
		{[]Target{{"v6", netip.MustParseAddr("fd00::1")}}, "different address families"},
		{[]Target{{"m", netip.MustParseAddr("::ffff:127.0.0.2")}}, "without a v4-in-v6 form"},
		{[]Target{{"bc", netip.MustParseAddr("255.255.255.255")}}, "not a unicast address"},
	} {
		if err := p.SetTargets(c.ts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetTargets(%v) = %v, want %q", c.ts, err, c.want)
		}
	}
	var names []string
	for _, s := range p.Snapshot() {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"b", "c"}) {
		t.Errorf("a refused list changed the targets: %v", names)
	}
	select {
	case <-p.Changes():
	default:
		t.Error("adding targets did not signal Changes")
	}
}
