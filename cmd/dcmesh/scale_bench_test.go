package main

// Scale benchmarks: convergence time and idle cost of real agents in network
// namespaces, bootstrapped with the CLI like the gossip end-to-end tests.
//
// One experiment (scaleExperiment) with N existing sites:
//
//  1. cold start: all N agents are started at once (no waiting between
//     starts); measured until every ordered pair has a handshake;
//  2. join, repeated J times: a new site N+1 (then N+2, …, each a fresh site
//     with its own certificate and key) starts its agent; measured until every
//     existing site has a handshake with it. Every joiner but the last then
//     leaves (`dcmesh leave`) and the test waits until every existing site has
//     dropped it, so the next join starts from the same N-site mesh;
//  3. idle (optional): the N+1 agents (each with N peers) are left alone for a
//     settle time, then each agent's CPU time and memory are read from /proc
//     over a window.
//
// So "sites=N" counts the existing sites; the joining site is the (N+1)th.
//
// Handshakes are read straight from each embedded device's UAPI socket
// (/var/run/wireguard/IFACE.sock, the protocol `wg` speaks), every
// scalePollInterval: "poll" times are when the test saw the condition (an
// upper bound, resolution = the measured poll period), "device" times are
// the handshake timestamps the devices themselves recorded (the last pair's).
// At the end `wg show` (wireguard-tools) cross-checks the full mesh.
//
// TestConvergenceSmoke runs the experiment at a small size in CI. The
// benchmarks re-run this test binary with -test.run=^TestScaleExperiment$ (a
// helper, like TestHelperGossipInjector) because the mesh helpers need a
// *testing.T; the child writes its results as JSON and the benchmark reports
// them as metrics. By hand:
//
//	sudo go test -run '^$' -bench 'Convergence|IdleCost' -benchtime 1x -timeout 30m ./cmd/dcmesh
//
// DCMESH_SCALE_PROFILE=wan runs the agents with the production gossip profile,
// resync and rejoin intervals (wan, 10 s, 30 s) instead of the test timings
// (lan, 2 s, 1 s). DCMESH_SCALE_IDLE sets BenchmarkIdleCost's window (60 s).

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

const (
	scalePollInterval = 20 * time.Millisecond
	scaleClockTick    = 100 // USER_HZ: /proc/PID/stat times are in 1/100 s
)

type scaleConfig struct {
	Sites  int           // existing sites
	Joins  int           // join repetitions
	Settle time.Duration // quiet time before the idle window
	Idle   time.Duration // idle window; 0 skips the idle measurement
	WAN    bool          // production gossip profile and resync interval
}

type scaleJoin struct {
	Poll       float64 // s from the joiner's start until the test saw every existing site handshaken with it
	Device     float64 // s from the joiner's start to the last existing site's handshake timestamp
	JoinerPoll float64 // s until the joiner had handshakes with every existing site
	Running    float64 // s until the joiner printed "agent running"
	Seed       string
}

type scaleIdle struct {
	Site       string
	Peers      int
	CPUPercent float64 // (utime+stime) from /proc/PID/stat over the window, % of one core
	SchedCPU   float64 // the same from the threads' schedstat run time (ns resolution)
	RSSKB      int64
	HWMKB      int64
}

type scaleResult struct {
	Sites        int
	Profile      string
	ColdPoll     float64 // s from the first start until the test saw every pair handshaken
	ColdDevice   float64 // s from the first start to the last pair's first handshake timestamp
	ColdRunning  float64 // s until every agent printed "agent running"
	PollPeriodMS float64 // measured mean poll period (the poll times' resolution)
	Joins        []scaleJoin
	IdleWindow   float64
	Idle         []scaleIdle
}

// TestConvergenceSmoke runs the benchmark's experiment at a small size and
// checks behaviour only: the full mesh forms, the joiner handshakes with
// every site, the idle numbers are sane. No timing assertions.
func TestConvergenceSmoke(t *testing.T) {
	r := scaleExperiment(t, scaleConfig{Sites: 2, Joins: 2, Settle: time.Second, Idle: 3 * time.Second})
	t.Logf("%s", r.summary())
	if len(r.Joins) != 2 {
		t.Errorf("%d joins measured, want 2", len(r.Joins))
	}
	if r.ColdPoll <= 0 || r.ColdDevice <= 0 {
		t.Errorf("cold start not measured: %+v", r)
	}
	if len(r.Idle) != 3 {
		t.Fatalf("idle numbers for %d agents, want 3", len(r.Idle))
	}
	for _, a := range r.Idle {
		if a.Peers != 2 || a.RSSKB <= 0 || a.HWMKB < a.RSSKB || a.CPUPercent < 0 || a.SchedCPU <= 0 || a.CPUPercent > 200 || a.SchedCPU > 200 {
			t.Errorf("idle numbers not sane: %+v", a)
		}
	}
}

// TestScaleExperiment is not a test: it runs one experiment for the
// benchmarks, in a child process, with its parameters and result file in the
// environment.
func TestScaleExperiment(t *testing.T) {
	out := os.Getenv("DCMESH_SCALE_OUT")
	if out == "" {
		t.Skip("helper process for BenchmarkConvergence and BenchmarkIdleCost")
	}
	var cfg scaleConfig
	if err := json.Unmarshal([]byte(os.Getenv("DCMESH_SCALE_CONFIG")), &cfg); err != nil {
		t.Fatal(err)
	}
	r := scaleExperiment(t, cfg)
	t.Logf("%s", r.summary())
	b, _ := json.Marshal(r)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{2, 4, 8, 16} {
		b.Run(fmt.Sprintf("sites=%d", n), func(b *testing.B) {
			var rs []scaleResult
			for i := 0; i < b.N; i++ {
				rs = append(rs, scaleRunChild(b, scaleConfig{Sites: n, Joins: 3, WAN: os.Getenv("DCMESH_SCALE_PROFILE") == "wan"}))
			}
			var cold, coldDev, joins, joinsDev []float64
			for _, r := range rs {
				b.Logf("%s", r.summary())
				cold = append(cold, r.ColdPoll)
				coldDev = append(coldDev, r.ColdDevice)
				for _, j := range r.Joins {
					joins = append(joins, j.Poll)
					joinsDev = append(joinsDev, j.Device)
				}
			}
			b.ReportMetric(sitetest.Median(cold), "cold-s")
			b.ReportMetric(sitetest.Median(coldDev), "cold-dev-s")
			b.ReportMetric(slices.Min(joins), "join-min-s")
			b.ReportMetric(sitetest.Median(joins), "join-med-s")
			b.ReportMetric(slices.Max(joins), "join-max-s")
			b.ReportMetric(sitetest.Median(joinsDev), "join-dev-med-s")
			b.ReportMetric(rs[0].PollPeriodMS, "poll-ms")
		})
	}
}

// BenchmarkIdleCost: 16 sites and one joiner (17 agents with 16 peers each)
// left alone; CPU and memory of every agent.
func BenchmarkIdleCost(b *testing.B) {
	idle := 60 * time.Second
	if v := os.Getenv("DCMESH_SCALE_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		idle = d
	}
	var cpu, sched, rss, hwm []float64
	for i := 0; i < b.N; i++ {
		r := scaleRunChild(b, scaleConfig{Sites: 16, Joins: 1, Settle: 15 * time.Second, Idle: idle, WAN: os.Getenv("DCMESH_SCALE_PROFILE") == "wan"})
		b.Logf("%s", r.summary())
		for _, a := range r.Idle {
			cpu = append(cpu, a.CPUPercent)
			sched = append(sched, a.SchedCPU)
			rss = append(rss, float64(a.RSSKB)/1024)
			hwm = append(hwm, float64(a.HWMKB)/1024)
		}
	}
	b.ReportMetric(sitetest.Median(cpu), "cpu-med-%")
	b.ReportMetric(slices.Max(cpu), "cpu-max-%")
	b.ReportMetric(sitetest.Median(sched), "sched-cpu-med-%")
	b.ReportMetric(slices.Max(sched), "sched-cpu-max-%")
	b.ReportMetric(sitetest.Median(rss), "rss-med-MB")
	b.ReportMetric(slices.Max(rss), "rss-max-MB")
	b.ReportMetric(sitetest.Median(hwm), "hwm-med-MB")
	b.ReportMetric(slices.Max(hwm), "hwm-max-MB")
}

// scaleRunChild runs one experiment in a child test process and returns its
// result.
func scaleRunChild(b *testing.B, cfg scaleConfig) scaleResult {
	b.Helper()
	netconfigtest.RequireRoot(b)
	requireTool(b, "ip", "nsenter", "wg", "ping")
	bin := dcmeshBinary(b)
	dir := shortTempDir(b)
	out := filepath.Join(dir, "result.json")
	cb, _ := json.Marshal(cfg)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestScaleExperiment$", "-test.v", "-test.count=1", "-test.timeout=20m")
	cmd.Env = append(os.Environ(), "DCMESH_BIN="+bin, "DCMESH_SCALE_OUT="+out, "DCMESH_SCALE_CONFIG="+string(cb))
	logs, err := cmd.CombinedOutput()
	if os.Getenv("DCMESH_SCALE_KEEP_LOG") != "" {
		p := filepath.Join(os.TempDir(), fmt.Sprintf("dcmesh-scale-%d-%s.log", cfg.Sites, time.Now().Format("150405")))
		_ = os.WriteFile(p, logs, 0o600)
		b.Logf("child output in %s", p)
	}
	if err != nil {
		b.Fatalf("experiment with %d sites: %v\n%s", cfg.Sites, err, sitetest.Tail(string(logs), 200))
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		b.Fatalf("experiment with %d sites wrote no result: %v\n%s", cfg.Sites, err, sitetest.Tail(string(logs), 200))
	}
	var r scaleResult
	if err := json.Unmarshal(raw, &r); err != nil {
		b.Fatal(err)
	}
	return r
}

// scaleExperiment runs the experiment described at the top of this file.
func scaleExperiment(t *testing.T, cfg scaleConfig) scaleResult {
	t.Helper()
	m := newMesh(t, cfg.Sites)
	caDir := m.newCA("ca")
	for i, s := range m.sites {
		var seeds []string
		if i > 0 {
			seeds = []string{m.sites[0].seed()}
		}
		scaleEnroll(s, caDir, seeds, cfg.WAN)
	}
	r := scaleResult{Sites: cfg.Sites, Profile: "lan, resync 2s (test timings)"}
	if cfg.WAN {
		r.Profile = "wan, resync 10s, rejoin 30s (production defaults)"
	}
	var polls int
	var pollTime time.Duration

	// --- cold start
	start := time.Now()
	for _, s := range m.sites {
		scaleStart(s)
	}
	all := m.sites
	first := map[[2]int]time.Time{} // (observer, peer) → first handshake timestamp seen
	pairs := cfg.Sites * (cfg.Sites - 1)
	scalePoll(t, 60*time.Second, fmt.Sprintf("cold start of %d sites: every pair handshaken", cfg.Sites), &polls, &pollTime, func() error {
		for _, s := range all {
			hs, err := scaleHandshakes(s.iface)
			if err != nil {
				continue // the device may not exist yet
			}
			for _, o := range all {
				if ts := hs[o.pub]; o != s && !ts.IsZero() {
					if _, ok := first[[2]int{s.idx, o.idx}]; !ok {
						first[[2]int{s.idx, o.idx}] = ts
					}
				}
			}
		}
		if len(first) < pairs {
			return fmt.Errorf("%d of %d ordered pairs handshaken", len(first), pairs)
		}
		return nil
	})
	r.ColdPoll = time.Since(start).Seconds()
	r.ColdDevice = scaleLatest(first).Sub(start).Seconds()
	for _, s := range all {
		s.agent.WaitOutput(t, "agent running", 10*time.Second)
	}
	r.ColdRunning = scaleRunningAfter(all, start)
	t.Logf("cold start of %d sites: every pair handshaken after %.3f s (poll), %.3f s (device timestamps); all agents running after %.3f s",
		cfg.Sites, r.ColdPoll, r.ColdDevice, r.ColdRunning)
	if r.ColdDevice > 2 {
		scaleLogSlowPairs(t, first, start, all)
	}

	// --- joins
	var joiner *site
	started := slices.Clone(all) // for DCMESH_DEBUG_LOGS
	for j := 0; j < cfg.Joins; j++ {
		joiner = m.addSite(cfg.Sites + 1 + j)
		seed := m.sites[j%cfg.Sites]
		if cfg.Sites > 2 {
			seed = m.sites[cfg.Sites/2] // not the first site: the one everybody joined
		}
		scaleEnroll(joiner, caDir, []string{seed.seed()}, cfg.WAN)
		jr := scaleJoin{Seed: seed.name}
		seen := map[int]time.Time{}
		start := time.Now()
		scaleStart(joiner)
		started = append(started, joiner)
		scalePoll(t, 60*time.Second, fmt.Sprintf("%s: every existing site handshaken with it", joiner.name), &polls, &pollTime, func() error {
			for _, s := range all {
				if _, ok := seen[s.idx]; ok {
					continue
				}
				hs, err := scaleHandshakes(s.iface)
				if err != nil {
					return err
				}
				if ts := hs[joiner.pub]; !ts.IsZero() {
					seen[s.idx] = ts
				}
			}
			if len(seen) < len(all) {
				return fmt.Errorf("%d of %d existing sites have a handshake with %s", len(seen), len(all), joiner.name)
			}
			return nil
		})
		jr.Poll = time.Since(start).Seconds()
		var last time.Time
		for _, ts := range seen {
			if ts.After(last) {
				last = ts
			}
		}
		jr.Device = last.Sub(start).Seconds()
		if jr.Device > 2 {
			var lines []string
			for _, s := range all {
				lines = append(lines, fmt.Sprintf("%s %.3f s", s.name, seen[s.idx].Sub(start).Seconds()))
			}
			t.Logf("slow join of %s: handshakes at %s", joiner.name, strings.Join(lines, ", "))
		}
		scalePoll(t, 30*time.Second, fmt.Sprintf("%s has handshakes with every existing site", joiner.name), &polls, &pollTime, func() error {
			hs, err := scaleHandshakes(joiner.iface)
			if err != nil {
				return err
			}
			for _, s := range all {
				if hs[s.pub].IsZero() {
					return fmt.Errorf("no handshake with %s", s.name)
				}
			}
			return nil
		})
		jr.JoinerPoll = time.Since(start).Seconds()
		joiner.agent.WaitOutput(t, "agent running", 10*time.Second)
		jr.Running = scaleRunningAfter([]*site{joiner}, start)
		r.Joins = append(r.Joins, jr)
		t.Logf("join %d (%s via %s): every existing site handshaken with it after %.3f s (poll), %.3f s (device); it with all after %.3f s; its agent running after %.3f s",
			j+1, joiner.name, seed.name, jr.Poll, jr.Device, jr.JoinerPoll, jr.Running)
		if j == cfg.Joins-1 {
			break
		}
		// Back to N sites: the joiner leaves and everybody drops it.
		m.cli("leave", "--config", joiner.cfgPath)
		scalePoll(t, 30*time.Second, fmt.Sprintf("%s has left and every site dropped it", joiner.name), &polls, &pollTime, func() error {
			if !joiner.agent.Exited() {
				return fmt.Errorf("%s's agent still running", joiner.name)
			}
			for _, s := range all {
				hs, err := scaleHandshakes(s.iface)
				if err != nil {
					return err
				}
				if _, ok := hs[joiner.pub]; ok {
					return fmt.Errorf("%s still has %s as a peer", s.name, joiner.name)
				}
			}
			return nil
		})
	}
	if polls > 0 {
		r.PollPeriodMS = float64(pollTime.Microseconds()) / float64(polls) / 1000
	}
	if joiner != nil {
		all = append(slices.Clone(all), joiner)
	}
	// Independent cross-check with wireguard-tools.
	m.waitFullMesh(all...)

	// --- idle
	if cfg.Idle > 0 {
		time.Sleep(cfg.Settle)
		r.Idle, r.IdleWindow = scaleMeasureIdle(t, all, cfg.Idle)
		t.Logf("idle over %.1f s, per agent:", r.IdleWindow)
		for _, a := range r.Idle {
			t.Logf("  %-7s peers=%d cpu=%.3f%% (schedstat %.3f%%) rss=%.1f MB hwm=%.1f MB", a.Site, a.Peers, a.CPUPercent, a.SchedCPU, float64(a.RSSKB)/1024, float64(a.HWMKB)/1024)
		}
	}
	if os.Getenv("DCMESH_DEBUG_LOGS") != "" {
		for _, s := range started {
			t.Logf("--- %s ---\n%s", s.name, s.agent.Output())
		}
	}
	return r
}

// scaleEnroll enrolls s like site.enroll, under an interface name of its own
// (dcs…, so no other test's /var/run/wireguard socket is touched), with the
// production gossip timings if wan.
func scaleEnroll(s *site, caDir string, seeds []string, wan bool) {
	s.iface = fmt.Sprintf("dcs%s%d", s.m.id, s.idx)
	s.enroll(caDir, seeds)
	if !wan {
		return
	}
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		s.m.t.Fatal(err)
	}
	c := strings.Replace(string(b), "  profile: lan\n", "  profile: wan\n", 1)
	c = strings.Replace(c, "\nresync_interval: 2s\n", "\nresync_interval: 10s\n", 1)
	c = strings.Replace(c, "  rejoin_interval: 1s\n", "", 1) // default 30 s
	if err := os.WriteFile(s.cfgPath, []byte(c), 0o600); err != nil {
		s.m.t.Fatal(err)
	}
}

// scaleStart starts s's agent like site.start but does not wait for it to
// report running, so that a cold start starts every agent at once.
func scaleStart(s *site) {
	t := s.m.t
	t.Helper()
	args := append([]string{"agent", "--config", s.cfgPath, "--log-level", "debug"}, s.agentArgs...)
	s.agent = s.ns.StartEnv(t, s.name+" agent", nil, dcmeshBinary(t), args...)
}

// scalePoll is netconfigtest.Eventually at scalePollInterval that also
// counts the polls and their period.
func scalePoll(t *testing.T, timeout time.Duration, what string, polls *int, total *time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		begin := time.Now()
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(scalePollInterval - time.Since(begin))
		*polls++
		*total += time.Since(begin)
	}
}

// scaleHandshakes reads the device's peers and their latest handshake
// timestamps (zero: none) from its UAPI socket, keyed by base64 public key.
func scaleHandshakes(iface string) (map[string]time.Time, error) {
	c, err := net.DialTimeout("unix", "/var/run/wireguard/"+iface+".sock", time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return nil, err
	}
	res := map[string]time.Time{}
	var peer string
	var sec, nsec int64
	flush := func() {
		if peer != "" {
			if sec != 0 || nsec != 0 {
				res[peer] = time.Unix(sec, nsec)
			} else {
				res[peer] = time.Time{}
			}
		}
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "":
			flush()
			return res, nil
		case "errno":
			if v != "0" {
				return nil, fmt.Errorf("uapi get on %s: errno %s", iface, v)
			}
		case "public_key":
			flush()
			raw, err := hex.DecodeString(v)
			if err != nil {
				return nil, err
			}
			peer, sec, nsec = base64.StdEncoding.EncodeToString(raw), 0, 0
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("uapi get on %s: truncated answer", iface)
}

func scaleLatest(ts map[[2]int]time.Time) time.Time {
	var last time.Time
	for _, v := range ts {
		if v.After(last) {
			last = v
		}
	}
	return last
}

// scaleLogSlowPairs logs the pairs whose first handshake came late, to see
// whether the delay is gossip or WireGuard (a crossed initiation costs 5 s).
func scaleLogSlowPairs(t *testing.T, first map[[2]int]time.Time, start time.Time, sites []*site) {
	type pair struct {
		k [2]int
		d time.Duration
	}
	var ps []pair
	for k, v := range first {
		ps = append(ps, pair{k, v.Sub(start)})
	}
	slices.SortFunc(ps, func(a, b pair) int { return int(b.d - a.d) })
	var lines []string
	for _, p := range ps[:min(len(ps), 10)] {
		lines = append(lines, fmt.Sprintf("site%d sees site%d at %.3f s", p.k[0], p.k[1], p.d.Seconds()))
	}
	t.Logf("slowest first handshakes: %s", strings.Join(lines, "; "))
}

// scaleRunningAfter returns when the last of sites printed "agent running",
// in seconds after start, from the agents' log timestamps (0 if unknown).
func scaleRunningAfter(sites []*site, start time.Time) float64 {
	var last float64
	for _, s := range sites {
		for _, l := range strings.Split(s.agent.Output(), "\n") {
			if !strings.Contains(l, "agent running") {
				continue
			}
			if ts, ok := scaleLogTime(l); ok {
				last = max(last, ts.Sub(start).Seconds())
			}
			break
		}
	}
	return last
}

// scaleLogTime parses a slog line's time=… attribute (text or JSON).
func scaleLogTime(l string) (time.Time, bool) {
	for _, pre := range []string{"time=", `"time":"`} {
		if i := strings.Index(l, pre); i >= 0 {
			v := l[i+len(pre):]
			if j := strings.IndexAny(v, ` "`); j >= 0 {
				v = v[:j]
			}
			if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return ts, true
			}
		}
	}
	return time.Time{}, false
}

// scaleMeasureIdle reads every agent's CPU time over window and its memory.
func scaleMeasureIdle(t *testing.T, sites []*site, window time.Duration) ([]scaleIdle, float64) {
	t.Helper()
	pids := make([]int, len(sites))
	for i, s := range sites {
		pids[i] = s.agentPID(t)
	}
	cpu0, sched0 := make([]int64, len(sites)), make([]int64, len(sites))
	for i, p := range pids {
		cpu0[i], sched0[i] = processCPU(t, p)
	}
	begin := time.Now()
	time.Sleep(window)
	var out []scaleIdle
	for i, p := range pids {
		cpu1, sched1 := processCPU(t, p)
		el := time.Since(begin).Seconds()
		hs, err := scaleHandshakes(sites[i].iface)
		if err != nil {
			t.Fatal(err)
		}
		rss, hwm, err := sitetest.Memory(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, scaleIdle{
			Site: sites[i].name, Peers: len(hs),
			CPUPercent: float64(cpu1-cpu0[i]) / scaleClockTick / el * 100,
			SchedCPU:   float64(sched1-sched0[i]) / 1e9 / el * 100,
			RSSKB:      rss, HWMKB: hwm,
		})
	}
	return out, time.Since(begin).Seconds()
}

func (r scaleResult) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sites (+1 joiner), gossip %s, poll period %.1f ms: cold start %.3f s (device %.3f s, agents running %.3f s)",
		r.Sites, r.Profile, r.PollPeriodMS, r.ColdPoll, r.ColdDevice, r.ColdRunning)
	var js []float64
	for _, j := range r.Joins {
		js = append(js, j.Poll)
		fmt.Fprintf(&b, "; join %.3f s (device %.3f s, joiner sees all %.3f s)", j.Poll, j.Device, j.JoinerPoll)
	}
	if len(js) > 0 {
		fmt.Fprintf(&b, "; join min/median/max %.3f/%.3f/%.3f s", slices.Min(js), sitetest.Median(js), slices.Max(js))
	}
	if len(r.Idle) > 0 {
		var cpu, sched, rss, hwm []float64
		for _, a := range r.Idle {
			cpu = append(cpu, a.CPUPercent)
			sched = append(sched, a.SchedCPU)
			rss = append(rss, float64(a.RSSKB)/1024)
			hwm = append(hwm, float64(a.HWMKB)/1024)
		}
		fmt.Fprintf(&b, "; idle over %.1f s, %d agents: cpu median/max %.3f/%.3f %% (schedstat %.3f/%.3f %%), rss %.1f/%.1f MB, hwm %.1f/%.1f MB",
			r.IdleWindow, len(r.Idle), sitetest.Median(cpu), slices.Max(cpu), sitetest.Median(sched), slices.Max(sched), sitetest.Median(rss), slices.Max(rss), sitetest.Median(hwm), slices.Max(hwm))
	}
	return b.String()
}
