package main

// Data-plane benchmark: iperf3 through the overlay between two namespaces,
// for the embedded wireguard-go device run by two real dcmesh agents, for the
// reference wireguard-go binary built from the same module version (set up
// with wg and ip, as in TestInteropWithReferenceWireGuardGo), and for plain
// veth as the ceiling. It also records the agents' peak RSS under that load,
// with the default memory bound and with the bound disabled.
//
// Full run (root; about 5 minutes):
//
//	sudo go test -run '^$' -bench DataPlane -benchtime 1x ./cmd/dcmesh
//
// DCMESH_DP_SECONDS and DCMESH_DP_REPS change the length of each iperf3 run
// and the number of interleaved rounds.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// dpRSSBoundMB is the documented bound on an agent's peak RSS under iperf3
// load with dpBoundedYAML (1024 buffers per pool and the memory limit that
// goes with it by default). The default is no bound: see
// config.DefaultBuffersPerPool.
const dpRSSBoundMB = 128

const dpBoundedYAML = "userspace: {buffers_per_pool: 1024}\n"

// referenceWireGuardGo builds wireguard-go from the module version this tree
// embeds (go.mod), so the comparison is between the same code run two ways.
func referenceWireGuardGo(tb testing.TB) string {
	tb.Helper()
	return goBuild(tb, "golang.zx2c4.com/wireguard", "wireguard-go")
}

// dpKind is one way of carrying the traffic.
type dpKind int

const (
	dpVeth      dpKind = iota // the underlay veth itself
	dpAgent                   // two dcmesh agents, embedded device
	dpReference               // two wireguard-go processes configured with wg and ip
)

// dpConfig is one configuration measured in every round.
type dpConfig struct {
	label  string // metric name suffix
	kind   dpKind
	yaml   string // extra agent configuration (dpAgent)
	binary string // wireguard-go binary (dpReference)
	tag    string // one letter in interface and namespace names

	pair *dpPair
	bps  []float64
	hwm  []int64 // VmHWM in kB of each WireGuard process after the runs
}

// dpPair is two namespaces joined by a veth, with a WireGuard device in each
// (none for dpVeth).
type dpPair struct {
	cfg    *dpConfig
	id     string
	ns     [2]*netconfigtest.NS
	iface  [2]string
	procs  [2]*netconfigtest.Proc
	pids   [2]int
	under  [2]string // underlay addresses
	host   [2]string // site addresses, on lo
	subnet int
}

type dpOptions struct {
	seconds int // per iperf3 run
	omit    int // iperf3 -O
	reps    int // rounds
}

func dpRequire(tb testing.TB) {
	tb.Helper()
	netconfigtest.RequireRoot(tb)
	requireTool(tb, "ip", "nsenter", "wg", "iperf3", "go")
}

// dpConfigs lists the configurations in the order they run in each round.
func dpConfigs(tb testing.TB, withDebian bool) []*dpConfig {
	cs := []*dpConfig{
		{label: "veth", kind: dpVeth, tag: "v"},
		{label: "embedded", kind: dpAgent, tag: "e"},
		{label: "reference", kind: dpReference, binary: referenceWireGuardGo(tb), tag: "r"},
		{label: "embedded-bounded", kind: dpAgent, tag: "b", yaml: dpBoundedYAML},
	}
	// DCMESH_DP_VARIANTS adds agent configurations for experiments:
	// "LABEL=YAML;LABEL=YAML", e.g. "b1024=userspace: {buffers_per_pool: 1024}".
	for i, v := range strings.Split(os.Getenv("DCMESH_DP_VARIANTS"), ";") {
		if label, y, ok := strings.Cut(v, "="); ok && i < 6 {
			cs = append(cs, &dpConfig{label: label, kind: dpAgent, tag: string("abcfgh"[i]), yaml: y + "\n"})
		}
	}
	if withDebian {
		if p, err := exec.LookPath("wireguard-go"); err == nil {
			cs = append(cs, &dpConfig{label: "debian-wireguard-go", kind: dpReference, binary: p, tag: "d"})
		}
	}
	return cs
}

// runDataPlane sets every configuration up, then runs the rounds,
// interleaving the configurations (A B C A B C …) so that noise from other
// work on the machine hits all of them alike.
func runDataPlane(tb testing.TB, cs []*dpConfig, o dpOptions) {
	tb.Helper()
	id := netconfigtest.UniqueSuffix()
	for i, c := range cs {
		c.pair = newDPPair(tb, c, id, 150+i)
	}
	for r := 0; r < o.reps; r++ {
		for _, c := range cs {
			bps, bytes := c.pair.iperf(tb, o)
			if bytes <= 0 {
				tb.Fatalf("%s: round %d: no bytes received", c.label, r+1)
			}
			c.bps = append(c.bps, bps)
			tb.Logf("round %d %-20s %6.2f Gbit/s", r+1, c.label, bps/1e9)
		}
	}
	for _, c := range cs {
		for _, pid := range c.pair.pids {
			if pid != 0 {
				c.hwm = append(c.hwm, peakKB(tb, pid))
			}
		}
		if len(c.hwm) > 0 {
			tb.Logf("%-20s peak RSS per process %v kB", c.label, c.hwm)
		}
	}
}

func newDPPair(tb testing.TB, c *dpConfig, id string, subnet int) *dpPair {
	tb.Helper()
	p := &dpPair{cfg: c, id: id, subnet: subnet}
	dir := shortTempDir(tb)
	for i := range 2 {
		p.ns[i] = netconfigtest.NewNS(tb, fmt.Sprintf("dcdp-%s-%s%d", id, c.tag, i+1))
		disableIPv6(tb, p.ns[i])
		p.under[i] = fmt.Sprintf("192.168.%d.%d", subnet, i+1)
		p.host[i] = fmt.Sprintf("10.%d.0.1", i+1)
		// Distinct from every other test's names: control sockets share
		// /var/run/wireguard.
		p.iface[i] = fmt.Sprintf("dp%s%s%d", c.tag, id, i+1)
	}
	netconfigtest.Veth(tb, p.ns[0], "eth0", p.ns[1], "eth0")
	for i := range 2 {
		p.ns[i].Run(tb, "ip", "addr", "add", p.under[i]+"/24", "dev", "eth0")
		p.ns[i].Run(tb, "ip", "addr", "add", p.host[i]+"/24", "dev", "lo")
	}
	switch c.kind {
	case dpAgent:
		p.startAgents(tb, dir)
	case dpReference:
		p.startReference(tb, dir)
	}
	srv := p.ns[1].Start(tb, c.label+" iperf3 server", "iperf3", "-s", "-p", "5201", "--forceflush")
	srv.WaitOutput(tb, "Server listening", 10*time.Second)
	if c.kind != dpVeth {
		netconfigtest.Eventually(tb, 20*time.Second, 200*time.Millisecond, c.label+" tunnel passes traffic", func() error {
			out, err := p.ns[0].Try("ping", "-n", "-q", "-c", "1", "-W", "1", "-I", p.host[0], p.host[1])
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	return p
}

func (p *dpPair) keys(tb testing.TB, dir string) (keyPath, pub [2]string) {
	tb.Helper()
	for i := range 2 {
		keyPath[i] = filepath.Join(dir, fmt.Sprintf("wg%d.key", i+1))
		out, err := exec.Command(dcmeshBinary(tb), "key", "generate", "--out", keyPath[i]).Output()
		if err != nil {
			tb.Fatalf("key generate: %v", err)
		}
		pub[i] = strings.TrimSpace(string(out))
	}
	return keyPath, pub
}

// startAgents runs a dcmesh agent with the embedded device in each
// namespace, each with the other as its static peer.
func (p *dpPair) startAgents(tb testing.TB, dir string) {
	tb.Helper()
	keyPath, pub := p.keys(tb, dir)
	for i := range 2 {
		o := 1 - i
		tb.Cleanup(func() { _ = os.Remove("/var/run/wireguard/" + p.iface[i] + ".sock") })
		cfg := fmt.Sprintf("site: site%d\ninterface: %s\nprivate_key_file: %s\noverlay_address: 10.255.0.%d/32\nlocal_prefixes: [10.%d.0.0/24]\nwireguard: userspace\nstate_dir: %s\n%speers:\n  - name: site%d\n    public_key: %s\n    endpoint: %s:51820\n    allowed_prefixes: [10.%d.0.0/24, 10.255.0.%d/32]\n",
			i+1, p.iface[i], keyPath[i], i+1, i+1, filepath.Join(dir, fmt.Sprintf("state%d", i+1)), p.cfg.yaml,
			o+1, pub[o], p.under[o], o+1, o+1)
		cfgPath := filepath.Join(dir, fmt.Sprintf("site%d.yaml", i+1))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			tb.Fatal(err)
		}
		p.procs[i] = p.ns[i].StartEnv(tb, fmt.Sprintf("%s agent %d", p.cfg.label, i+1), dpAgentEnv(), dcmeshBinary(tb), "agent", "--config", cfgPath)
		p.procs[i].WaitOutput(tb, "agent running", 15*time.Second)
		p.pids[i] = p.findPID(tb, i, cfgPath)
	}
}

// dpAgentEnv passes DCMESH_DP_AGENT_ENV (space-separated KEY=VALUE) to the
// agents, for experiments (e.g. GODEBUG=gctrace=1).
func dpAgentEnv() []string {
	if v := os.Getenv("DCMESH_DP_AGENT_ENV"); v != "" {
		return strings.Fields(v)
	}
	return nil
}

// startReference runs wireguard-go in each namespace and configures it with
// wg and ip, as TestInteropWithReferenceWireGuardGo does, with the MTU the
// agents choose on a 1500-byte underlay (1420).
func (p *dpPair) startReference(tb testing.TB, dir string) {
	tb.Helper()
	keyPath, pub := p.keys(tb, dir)
	for i := range 2 {
		o := 1 - i
		tb.Cleanup(func() { _ = os.Remove("/var/run/wireguard/" + p.iface[i] + ".sock") })
		p.procs[i] = p.ns[i].StartEnv(tb, fmt.Sprintf("%s %d", p.cfg.label, i+1),
			[]string{"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error"}, p.cfg.binary, "-f", p.iface[i])
		netconfigtest.Eventually(tb, 5*time.Second, 50*time.Millisecond, p.cfg.label+" up", func() error {
			_, err := p.ns[i].Try("wg", "show", p.iface[i])
			return err
		})
		p.ns[i].Run(tb, "wg", "set", p.iface[i], "private-key", keyPath[i], "listen-port", "51820",
			"peer", pub[o], "endpoint", p.under[o]+":51820",
			"allowed-ips", fmt.Sprintf("10.%d.0.0/24,10.255.0.%d/32", o+1, o+1), "persistent-keepalive", "25")
		p.ns[i].Run(tb, "ip", "addr", "add", fmt.Sprintf("10.255.0.%d/32", i+1), "dev", p.iface[i])
		p.ns[i].Run(tb, "ip", "link", "set", p.iface[i], "mtu", "1420", "up")
		p.ns[i].Run(tb, "ip", "route", "add", fmt.Sprintf("10.%d.0.0/24", o+1), "dev", p.iface[i])
		p.ns[i].Run(tb, "ip", "route", "add", fmt.Sprintf("10.255.0.%d/32", o+1), "dev", p.iface[i])
		p.pids[i] = p.findPID(tb, i, p.iface[i])
	}
}

// findPID returns the process in namespace i whose command line contains
// marker (nsenter execs the program, so it is the process Start created).
func (p *dpPair) findPID(tb testing.TB, i int, marker string) int {
	tb.Helper()
	pid, err := sitetest.FindPID(sitetest.ParsePIDs(p.ns[i].Run(tb, "ip", "netns", "pids", p.ns[i].Name)), func(argv []string) bool {
		cl := strings.Join(argv, " ")
		return strings.Contains(cl, marker) && !strings.Contains(cl, "iperf3")
	})
	if err != nil {
		tb.Fatalf("no process with %q in namespace %s: %v", marker, p.ns[i].Name, err)
	}
	return pid
}

// peakKB returns the process's peak resident set size (VmHWM) in kB.
func peakKB(tb testing.TB, pid int) int64 {
	tb.Helper()
	_, hwm, err := sitetest.Memory(pid)
	if err != nil {
		tb.Fatalf("memory of %d: %v", pid, err)
	}
	return hwm
}

// iperfResult is the part of `iperf3 -J` output we use.
type iperfResult struct {
	End struct {
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs one TCP test from namespace 1 to namespace 2 and returns the
// receiver's bit rate and byte count.
func (p *dpPair) iperf(tb testing.TB, o dpOptions) (float64, int64) {
	tb.Helper()
	src, dst := p.host[0], p.host[1]
	if p.cfg.kind == dpVeth {
		src, dst = p.under[0], p.under[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.seconds+o.omit+30)*time.Second)
	defer cancel()
	args := []string{"--net=" + p.ns[0].Path, "--", "iperf3", "-c", dst, "-B", src, "-p", "5201", "-J",
		"-t", strconv.Itoa(o.seconds), "--connect-timeout", "5000"}
	if o.omit > 0 {
		args = append(args, "-O", strconv.Itoa(o.omit))
	}
	out, err := exec.CommandContext(ctx, "nsenter", args...).Output()
	var res iperfResult
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || err != nil {
		tb.Fatalf("%s: iperf3: %v %s\n%s", p.cfg.label, err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond, res.End.SumReceived.Bytes
}

func dpFind(cs []*dpConfig, label string) *dpConfig {
	i := slices.IndexFunc(cs, func(c *dpConfig) bool { return c.label == label })
	if i < 0 {
		return nil
	}
	return cs[i]
}

func dpMaxKB(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v)
}

func BenchmarkDataPlane(b *testing.B) {
	dpRequire(b)
	o := dpOptions{seconds: sitetest.EnvInt("DCMESH_DP_SECONDS", 10), omit: 1, reps: sitetest.EnvInt("DCMESH_DP_REPS", 5)}
	for range b.N {
		cs := dpConfigs(b, true)
		runDataPlane(b, cs, o)
		for _, c := range cs {
			b.ReportMetric(sitetest.Mean(c.bps)/1e9, "Gbit/s-"+c.label)
			if c.kind != dpVeth {
				b.ReportMetric(float64(dpMaxKB(c.hwm))/1024, "MB-RSS-"+c.label)
			}
			b.Logf("%-20s mean %6.2f Gbit/s (min %.2f, max %.2f), peak RSS %d kB per process %v",
				c.label, sitetest.Mean(c.bps)/1e9, slices.Min(c.bps)/1e9, slices.Max(c.bps)/1e9, dpMaxKB(c.hwm), c.hwm)
		}
		emb, ref := dpFind(cs, "embedded"), dpFind(cs, "reference")
		b.ReportMetric(sitetest.Mean(emb.bps)/sitetest.Mean(ref.bps), "ratio-embedded/reference")
		b.ReportMetric(0, "ns/op")
	}
}

// TestDataPlaneSmoke runs the benchmark's code at a tiny size: traffic must
// cross every path, and the agents must stay under the documented RSS bound.
func TestDataPlaneSmoke(t *testing.T) {
	dpRequire(t)
	cs := dpConfigs(t, false)
	runDataPlane(t, cs, dpOptions{seconds: 2, reps: 1})
	emb := dpFind(cs, "embedded-bounded")
	if hwm := dpMaxKB(emb.hwm); hwm <= 0 || hwm > dpRSSBoundMB*1024 {
		t.Errorf("bounded embedded agent peak RSS %d kB, want ≤ %d MB (%s, memory_limit %d MiB)", hwm, dpRSSBoundMB,
			strings.TrimSpace(dpBoundedYAML), config.DefaultUserspaceMemoryLimit(1024)>>20)
	}
}
