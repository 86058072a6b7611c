package probe

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// soakEnv gates TestSoak, which is not for CI: DCMESH_PROBE_SOAK=10m runs
// it for ten minutes.
const soakEnv = "DCMESH_PROBE_SOAK"

// TestSoak is the issue 12 stability and cost measurement: one Prober at
// default timers with 31 sessions (16 sites × 2 gateways, all but itself)
// against 31 single-session Probers in a child process, over loopback, for
// the duration given. It fails on any spurious down and reports the CPU
// time of this process (the 31-session Prober) per session and per agent.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv(soakEnv))
	if err != nil {
		t.Skipf("skipping: set %s to a duration (e.g. 10m) to run the soak", soakEnv)
	}
	const peers = 31
	var addrs []netip.Addr
	for i := range peers {
		addrs = append(addrs, netip.AddrFrom4([4]byte{127, 0, 1, byte(2 + i)}))
	}
	hubAddr := netip.MustParseAddr("127.0.1.1")
	port := freePort(t, append(slices.Clone(addrs), hubAddr)...)
	cfg := DefaultConfig()
	cfg.Local, cfg.Port = hubAddr, port
	var ts []Target
	var specs []string
	for _, a := range addrs {
		ts = append(ts, Target{Name: a.String(), Addr: a})
		specs = append(specs, helperSpec(a, port, cfg.Interval, cfg.Multiplier, hubAddr))
	}
	hub, _ := startProber(t, cfg, ts...)
	child := startHelper(t, specs...)
	waitFor(t, hub, 30*time.Second, "all up", func(s []PeerState) bool {
		return allUp(s) && !slices.ContainsFunc(s, func(p PeerState) bool { return p.DetectTime != 600*time.Millisecond })
	})
	before := hub.Snapshot()
	ru0, start := rusage(t), time.Now()

	var maxLoss float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
			for _, s := range hub.Snapshot() {
				maxLoss = max(maxLoss, s.Loss)
			}
		case <-end.C:
			done = true
		}
	}
	ru1, wall := rusage(t), time.Since(start)
	after := hub.Snapshot()
	_ = child.Process.Kill()
	_ = child.Wait()

	var downs, rx, tx, missed uint64
	var rtts []time.Duration
	for i, s := range after {
		downs += s.Downs - before[i].Downs
		rx += s.RxPackets - before[i].RxPackets
		tx += s.TxPackets - before[i].TxPackets
		missed += s.Missed - before[i].Missed
		rtts = append(rtts, s.SRTT)
		if s.State != StateUp {
			t.Errorf("%s ended %v", s.Name, s.State)
		}
	}
	slices.Sort(rtts)
	cpu := ru1 - ru0
	childCPU := childRusage(child)
	pct := func(c time.Duration) float64 { return 100 * c.Seconds() / wall.Seconds() }
	t.Logf("soak %v at %v×%d, %d sessions: spurious downs %d, rx %d tx %d, estimated lost %d, max loss %.3f, SRTT median %v max %v",
		wall.Round(time.Second), cfg.Interval, cfg.Multiplier, peers, downs, rx, tx, missed, maxLoss, rtts[len(rtts)/2], rtts[len(rtts)-1])
	t.Logf("CPU, 31-session Prober: %v = %.3f %% of a core (%.4f %% per session)", cpu, pct(cpu), pct(cpu)/peers)
	t.Logf("CPU, 31 one-session Probers (child): %v = %.3f %% of a core (%.4f %% per Prober)", childCPU, pct(childCPU), pct(childCPU)/peers)
	diags := map[Diag]int{}
	for _, s := range after {
		if s.Downs > 0 {
			diags[s.DownDiag]++
		}
	}
	st := hub.Stats()
	t.Logf("down diags %v; timer loop: %d wakeups later than a quarter interval, the worst %v; %d sessions graced after a stall", diags, st.LateTimers, st.MaxTimerDelay, st.StallGraces)
	t.Logf("load average at the end: %s", loadavg())
	if downs != 0 {
		t.Errorf("%d spurious downs in %v", downs, wall)
	}
}

func rusage(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childRusage is the CPU time of a child that has been waited for.
func childRusage(c *exec.Cmd) time.Duration {
	ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return fmt.Sprint(err)
	}
	return string(b[:len(b)-1])
}
