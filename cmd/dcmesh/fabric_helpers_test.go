package main

// Helpers for the fabric tests: the site's fabric router (FRR) and two dcmesh
// gateways (one FRR, one BIRD) in network namespaces, each running the
// configuration shipped in examples/frr and examples/bird, verbatim. The
// gateways' kernel routes are written by netconfig, as the agent writes them.

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// The example values of the shipped configuration (examples/frr/*.conf,
// examples/bird/bird.conf). The namespaces are private, so the tests use
// them as they are.
const (
	fabricRemoteA = "10.2.0.0/16" // ams1: measured, degraded, withdrawn
	fabricRemoteB = "10.3.0.0/16" // par1: the exact prefix the fabric leaks
	// fabricRemoteHosts addresses 10.2.0.1… behind the tunnels, in ams1's
	// prefix: flows to different ones are hashed onto different gateways.
	fabricRemoteHosts = 16
	fabricMetric      = 100         // routes.metric
	fabricGW1Addr     = "192.0.2.2" // FRR gateway
	fabricGW2Addr     = "192.0.2.6" // BIRD gateway
	fabricFabAddr1    = "192.0.2.1" // the fabric's end towards gateway 1
	fabricFabAddr2    = "192.0.2.5" // and towards gateway 2
	// dropTable makes a namespace silent: nothing in, out or through.
	fabricDropTable = "dcmtsilent"
)

var fabricExamples = filepath.Join("..", "..", "examples")

// requireFabricTool skips when a program is missing, or fails in CI
// (CI=true), where .ci/run installs frr and bird2.
func requireFabricTool(t testing.TB, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run must install the frr and bird2 packages", what)
	}
	t.Skipf("skipping: %s is not installed (apt-get install --no-install-recommends frr bird2)", what)
}

func onPath(name string) bool { _, err := exec.LookPath(name); return err == nil }

// frrDaemonDir returns the frr package's daemon directory (zebra, bgpd, …).
func frrDaemonDir(t testing.TB) string {
	t.Helper()
	dir := "/usr/lib/frr"
	if out, err := exec.Command("dpkg", "-L", "frr").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(l, "/zebra") {
				dir = filepath.Dir(l)
			}
		}
	}
	for _, d := range []string{"zebra", "bgpd", "bfdd", "staticd"} {
		_, err := os.Stat(filepath.Join(dir, d))
		requireFabricTool(t, "FRR's "+d+" (in "+dir+")", err == nil)
	}
	_, err := user.Lookup("frr")
	requireFabricTool(t, "the frr user", err == nil)
	return dir
}

// requireFabric checks for root and every tool the namespace tests use and
// returns FRR's daemon directory.
func requireFabric(t testing.TB) string {
	t.Helper()
	netconfigtest.RequireRoot(t)
	requireTool(t, "ip", "nsenter", "nft", "ping")
	for _, n := range []string{"vtysh", "bird", "birdc"} {
		requireFabricTool(t, n, onPath(n))
	}
	return frrDaemonDir(t)
}

// frrRouter is one FRR instance in its own pathspace (-N NAME: config in
// /etc/frr/NAME, sockets and PID files in /var/run/frr/NAME), NAME being its
// namespace's name.
type frrRouter struct {
	name  string
	ns    *netconfigtest.NS
	procs map[string]*netconfigtest.Proc
}

// frrPathspace creates /etc/frr/NAME and /var/run/frr/NAME for FRR's -N
// NAME, owned by the frr user, and removes them (by these exact names) in
// t.Cleanup. Register it before the daemons: cleanups run last-in first-out.
func frrPathspace(t *testing.T, name string) (etc, run string, uid, gid int) {
	t.Helper()
	frr, err := user.Lookup("frr")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(frr.Uid)
	gid, _ = strconv.Atoi(frr.Gid)
	etc, run = filepath.Join("/etc/frr", name), filepath.Join("/var/run/frr", name)
	for _, d := range []string{etc, run} {
		// The package's directories, as its tmpfiles.d makes them, if this
		// machine has not started FRR since boot; never removed.
		if _, err := os.Stat(filepath.Dir(d)); os.IsNotExist(err) {
			if err := os.Mkdir(filepath.Dir(d), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Dir(d), uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return etc, run, uid, gid
}

// startFRR runs the daemons in ns, in the foreground and logging to stdout
// (shown if the test fails), then loads conf with `vtysh -b`. Cleanup stops
// each daemon by its PID, then removes the two pathspace directories.
func startFRR(t *testing.T, daemonDir string, ns *netconfigtest.NS, conf string, daemons ...string) *frrRouter {
	t.Helper()
	r := &frrRouter{name: ns.Name, ns: ns, procs: map[string]*netconfigtest.Proc{}}
	etc, run, uid, gid := frrPathspace(t, r.name)
	if os.Getenv("DCMESH_FABRIC_LOGS") != "" { // the daemons' logs, even when the test passes
		t.Cleanup(func() {
			for d, p := range r.procs {
				t.Logf("--- %s %s ---\n%s", r.name, d, p.Output())
			}
		})
	}
	files := map[string]string{"frr.conf": conf, "vtysh.conf": "service integrated-vtysh-config\n"}
	for name, body := range files {
		p := filepath.Join(etc, name)
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range daemons {
		args := []string{"-N", r.name, "-u", "frr", "-g", "frr", "-P", "0",
			"-i", filepath.Join(run, d+".pid"), "--log", "stdout"}
		if d == "bfdd" { // its control socket is outside the pathspace by default
			args = append(args, "--bfdctl", filepath.Join(run, "bfdd.sock"))
		}
		p := ns.Start(t, r.name+" "+d, filepath.Join(daemonDir, d), args...)
		r.procs[d] = p
		vty := filepath.Join(run, d+".vty")
		netconfigtest.Eventually(t, 15*time.Second, 20*time.Millisecond, r.name+" "+d+" vty socket", func() error {
			if p.Exited() {
				t.Fatalf("%s %s exited:\n%s", r.name, d, p.Output())
			}
			_, err := os.Stat(vty)
			return err
		})
	}
	if out, err := exec.Command("vtysh", "-N", r.name, "-b").CombinedOutput(); err != nil || strings.Contains(string(out), "% ") {
		t.Fatalf("vtysh -N %s -b: %v\n%s", r.name, err, out)
	}
	return r
}

// vtysh runs one vtysh session with the commands given (each a -c) and
// fails the test on an error.
func (r *frrRouter) vtysh(t testing.TB, cmds ...string) string {
	t.Helper()
	out, err := r.vtyshTry(cmds...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vtyshTry is vtysh returning the error: a failed command, or FRR's "% …"
// complaint (vtysh exits 0 after some of those).
func (r *frrRouter) vtyshTry(cmds ...string) (string, error) {
	args := []string{"-N", r.name}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("vtysh", args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "% ") {
		return string(out), fmt.Errorf("vtysh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (r *frrRouter) json(t testing.TB, cmd string, v any) {
	t.Helper()
	out := r.vtysh(t, cmd)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

// bgpPath is one path of `show ip bgp PREFIX json`, as FRR 8.4 writes it.
type bgpPath struct {
	ASPath struct {
		String string `json:"string"`
	} `json:"aspath"`
	Origin    string `json:"origin"`
	MED       *int   `json:"metric"`
	LocPrf    *int   `json:"locPrf"`
	Community *struct {
		String string `json:"string"`
	} `json:"community"`
	Nexthops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
	Peer struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
	Bestpath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	Multipath bool `json:"multipath"`
}

func (p bgpPath) best() bool { return p.Bestpath != nil && p.Bestpath.Overall }

// String shows what the tests compare: attributes, next hop, selection.
func (p bgpPath) String() string {
	med, lp, comm, nh := "none", "100", "none", "none"
	if p.MED != nil {
		med = strconv.Itoa(*p.MED)
	}
	if p.LocPrf != nil {
		lp = strconv.Itoa(*p.LocPrf)
	}
	if p.Community != nil {
		comm = p.Community.String
	}
	if len(p.Nexthops) > 0 {
		nh = p.Nexthops[0].IP
	}
	return fmt.Sprintf("from %s: as-path %q origin %s MED %s local-pref %s community %s next-hop %s best %v multipath %v",
		p.Peer.PeerID, p.ASPath.String, p.Origin, med, lp, comm, nh, p.best(), p.Multipath)
}

// bgpPaths returns the fabric's paths for prefix, by peer.
func (r *frrRouter) bgpPaths(t testing.TB, prefix string) map[string]bgpPath {
	t.Helper()
	var v struct {
		Paths []bgpPath `json:"paths"`
	}
	r.json(t, "show ip bgp "+prefix+" json", &v)
	m := map[string]bgpPath{}
	for _, p := range v.Paths {
		m[p.Peer.PeerID] = p
	}
	return m
}

// bfdPeer is one entry of `show bfd peers json`.
type bfdPeer struct {
	Peer         string `json:"peer"`
	Status       string `json:"status"`
	RxMS         int    `json:"receive-interval"`
	TxMS         int    `json:"transmit-interval"`
	Mult         int    `json:"detect-multiplier"`
	RemoteRxMS   int    `json:"remote-receive-interval"`
	RemoteTxMS   int    `json:"remote-transmit-interval"`
	RemoteMult   int    `json:"remote-detect-multiplier"`
	RemoteStatus string `json:"remote-diagnostic"`
}

// birdRouter is one BIRD 2 daemon in a namespace.
type birdRouter struct {
	ns   *netconfigtest.NS
	ctl  string
	proc *netconfigtest.Proc
}

func startBIRD(t *testing.T, ns *netconfigtest.NS, conf, dir string) *birdRouter {
	t.Helper()
	b := &birdRouter{ns: ns, ctl: filepath.Join(dir, "bird.ctl")}
	if os.Getenv("DCMESH_FABRIC_LOGS") != "" {
		t.Cleanup(func() { t.Logf("--- bird in %s ---\n%s", ns.Name, b.proc.Output()) })
	}
	b.proc = ns.Start(t, "bird", "bird", "-f", "-c", conf, "-s", b.ctl, "-P", filepath.Join(dir, "bird.pid"))
	netconfigtest.Eventually(t, 15*time.Second, 20*time.Millisecond, "bird control socket", func() error {
		if b.proc.Exited() {
			t.Fatalf("bird exited:\n%s", b.proc.Output())
		}
		out, err := exec.Command("birdc", "-s", b.ctl, "show", "status").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Daemon is up and running") {
			return fmt.Errorf("birdc show status: %v: %s", err, out)
		}
		return nil
	})
	return b
}

func (b *birdRouter) birdc(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("birdc", append([]string{"-s", b.ctl}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("birdc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// configure makes BIRD read conf (it keeps sessions up and re-runs the
// changed filters).
func (b *birdRouter) configure(t testing.TB, conf string) {
	t.Helper()
	if out := b.birdc(t, "configure", strconv.Quote(conf)); !strings.Contains(out, "Reconfigured") {
		t.Fatalf("birdc configure %s:\n%s", conf, out)
	}
}

// variant writes a copy of the shipped file with old replaced by new, which
// must occur exactly once (or the shipped file changed and so must the test).
func variant(t testing.TB, src, dst, old, new string) string {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), old); n != 1 {
		t.Fatalf("%s has %q %d times, want once: update the test with the file", src, old, n)
	}
	if err := os.WriteFile(dst, []byte(strings.Replace(string(raw), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readExample(t testing.TB, path string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fabricExamples, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// kernelRoute is what a kernel holds for one prefix, reduced to what the
// tests compare: the gateways it forwards to, or its type when it does not
// forward ("blackhole", "unreachable"), or nothing.
type kernelRoute struct {
	at   time.Time
	via  []string
	kind string // "" absent, "unicast", "blackhole", "unreachable", …
}

func (r kernelRoute) String() string {
	switch {
	case r.kind == "":
		return "no route"
	case len(r.via) > 0:
		return "via " + strings.Join(r.via, " ")
	default:
		return r.kind
	}
}

func (r kernelRoute) isVia(gws ...string) bool {
	return r.kind == "unicast" && slices.Equal(r.via, sorted(gws))
}

func sorted(s []string) []string { s = slices.Clone(s); sort.Strings(s); return s }

// readKernelRoute reads the main table's routes for prefix (all protocols).
func readKernelRoute(h *netlink.Handle, prefix string) (kernelRoute, error) {
	_, dst, _ := net.ParseCIDR(prefix)
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Table: netconfig.MainTable},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	r := kernelRoute{at: time.Now()}
	if err != nil || len(rs) == 0 {
		return r, err
	}
	best := rs[0]
	for _, x := range rs[1:] {
		if x.Priority < best.Priority {
			best = x
		}
	}
	switch best.Type {
	case unix.RTN_UNICAST:
		r.kind = "unicast"
	case unix.RTN_BLACKHOLE:
		r.kind = "blackhole"
	case unix.RTN_UNREACHABLE:
		r.kind = "unreachable"
	default:
		r.kind = fmt.Sprintf("type %d", best.Type)
	}
	if best.Gw != nil {
		r.via = append(r.via, best.Gw.String())
	}
	for _, nh := range best.MultiPath {
		if nh.Gw != nil {
			r.via = append(r.via, nh.Gw.String())
		}
	}
	sort.Strings(r.via)
	return r, nil
}

// routeWatch keeps the history of one prefix's route in a namespace's main
// table: re-read on every route event (and every 20 ms, in case an event is
// lost), stamped with the time it was seen.
type routeWatch struct {
	prefix  string
	mu      sync.Mutex
	hist    []kernelRoute
	changed chan struct{} // closed and replaced on every change
}

func watchRoute(t *testing.T, ns *netconfigtest.NS, prefix string) *routeWatch {
	t.Helper()
	h := ns.Handle(t)
	nsh, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	updates, done := make(chan netlink.RouteUpdate, 1024), make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &nsh}); err != nil {
		t.Fatalf("subscribe to routes in %s: %v", ns.Name, err)
	}
	w := &routeWatch{prefix: prefix, changed: make(chan struct{})}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case _, ok := <-updates:
				if !ok {
					return
				}
			case <-tick.C:
			case <-done:
				return
			}
			if r, err := readKernelRoute(h, prefix); err == nil {
				w.record(r)
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped; nsh.Close() })
	return w
}

func (w *routeWatch) record(r kernelRoute) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.hist); n > 0 && w.hist[n-1].String() == r.String() {
		return
	}
	w.hist = append(w.hist, r)
	close(w.changed)
	w.changed = make(chan struct{})
}

// waitSince returns the first state seen at or after since that satisfies
// cond (the time it was seen tells the latency of a change made at since).
func (w *routeWatch) waitSince(since time.Time, timeout time.Duration, cond func(kernelRoute) bool) (kernelRoute, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		var last kernelRoute
		for _, r := range w.hist {
			last = r
			if !r.at.Before(since) && cond(r) {
				w.mu.Unlock()
				return r, nil
			}
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return last, fmt.Errorf("%s: still %s after %s", w.prefix, last, timeout)
		}
	}
}

// wait waits until the current state satisfies cond.
func (w *routeWatch) wait(t testing.TB, timeout time.Duration, what string, cond func(kernelRoute) bool) kernelRoute {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		var last kernelRoute
		if n := len(w.hist); n > 0 {
			last = w.hist[n-1]
		}
		changed := w.changed
		w.mu.Unlock()
		if cond(last) {
			return last
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: %s is %s after %s", what, w.prefix, last, timeout)
		}
	}
}

// fabricGateway is one dcmesh gateway: its namespace, its daemon, the
// stand-ins for its WireGuard devices and the routes netconfig writes.
type fabricGateway struct {
	name    string // "FRR" or "BIRD"
	ns      *netconfigtest.NS
	addr    string // towards the fabric: the fabric's BGP next hop
	links   [2]string
	overlay netip.Prefix
	nl      *netlink.Handle // in ns, used from the test goroutine only
	nc      *netconfig.Manager
	healthy map[string]bool // remote prefix → has a tunnel route
	drained bool            // dcmesh drain: tunnel routes at metric-1
	frr     *frrRouter
	bird    *birdRouter
}

// setHealthy programs the routes dcmesh would with prefix healthy (a tunnel
// route into links[0] at metric 100 plus the unreachable route at 101) or
// not (the unreachable route only), and returns the time just before.
func (g *fabricGateway) setHealthy(t testing.TB, prefix string, healthy bool) time.Time {
	t.Helper()
	g.healthy[prefix] = healthy
	cfg := netconfig.Config{Link: g.links[0], Addresses: []netip.Prefix{g.overlay}, Metric: fabricMetric}
	if g.drained { // as the agent drains (mesh/drain.go)
		cfg.Metric, cfg.FailClosedMetric = fabricMetric-1, fabricMetric+1
	}
	for _, p := range []string{fabricRemoteA, fabricRemoteB} {
		pp := netip.MustParsePrefix(p)
		cfg.FailClosed = append(cfg.FailClosed, pp)
		if g.healthy[p] {
			cfg.Routes = append(cfg.Routes, pp)
		}
	}
	start := time.Now()
	if _, err := g.nc.Apply(cfg); err != nil {
		t.Fatalf("%s gateway: netconfig apply: %v", g.name, err)
	}
	return start
}

// silence drops everything in, out of and through the gateway's namespace:
// the machine is still there but says nothing (no BFD, no BGP, no traffic).
func (g *fabricGateway) silence(t testing.TB, on bool) time.Time {
	t.Helper()
	start := time.Now()
	if !on {
		g.ns.Run(t, "nft", "delete", "table", "inet", fabricDropTable)
		return start
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", fabricDropTable)
	for _, hook := range []string{"input", "output", "forward"} {
		fmt.Fprintf(&b, "  chain %s_drop { type filter hook %s priority -10; policy drop; }\n", hook, hook)
	}
	b.WriteString("}\n")
	cmd := g.ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", g.ns.Name, err, out)
	}
	return start
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// durationStats is min / median / max of a set of measurements.
func durationStats(ds []time.Duration) (lo, med, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + med) / 2
	}
	return s[0], med, s[len(s)-1]
}

func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatInt(d.Milliseconds(), 10)
	}
	return strings.Join(parts, " ")
}

// fabricLab is the topology of the fabric tests:
//
//	host 10.1.1.2 ── fabric (FRR, AS 65000) ─┬─ gw1 (FRR, AS 65010) ── dcm…1 ─┐
//	                                          └─ gw2 (BIRD, AS 65010) ─ dcm…2 ─┴─ remote 10.2.0.1, 10.3.0.1
//
// The veths dcm… stand in for the WireGuard devices (this kernel has no
// dummy links); "remote" stands for the far side of the tunnels.
type fabricLab struct {
	id             string
	dir            string
	fab, rem, host *netconfigtest.NS
	fabFRR         *frrRouter
	gws            [2]*fabricGateway
	watchA, watchB *routeWatch // the fabric's kernel routes for the two remote prefixes
	counterTable   string
}

func newFabricLab(t *testing.T) *fabricLab {
	t.Helper()
	daemonDir := requireFabric(t)
	l := &fabricLab{id: netconfigtest.UniqueSuffix(), dir: shortTempDir(t), counterTable: "dcmtcount"}
	newNS := func(role string) *netconfigtest.NS {
		ns := netconfigtest.NewNS(t, "dcmt-"+l.id+"-"+role)
		disableIPv6(t, ns)
		return ns
	}
	l.fab, l.rem, l.host = newNS("fab"), newNS("rem"), newNS("host")
	l.gws[0] = &fabricGateway{name: "FRR", ns: newNS("gw1"), addr: fabricGW1Addr, overlay: netip.MustParsePrefix("10.255.0.11/32")}
	l.gws[1] = &fabricGateway{name: "BIRD", ns: newNS("gw2"), addr: fabricGW2Addr, overlay: netip.MustParsePrefix("10.255.0.12/32")}
	l.wire(t)
	for _, g := range l.gws {
		g.nl = g.ns.Handle(t)
		g.nc = netconfig.New(g.nl, discardLogger())
		g.healthy = map[string]bool{}
		g.setHealthy(t, fabricRemoteA, true)
		g.setHealthy(t, fabricRemoteB, true)
	}
	start := time.Now()
	l.fabFRR = startFRR(t, daemonDir, l.fab, readExample(t, "frr/fabric.conf"), "zebra", "bgpd", "bfdd", "staticd")
	l.gws[0].frr = startFRR(t, daemonDir, l.gws[0].ns, readExample(t, "frr/frr.conf"), "zebra", "bgpd", "bfdd")
	birdConf, err := filepath.Abs(filepath.Join(fabricExamples, "bird", "bird.conf"))
	if err != nil {
		t.Fatal(err)
	}
	l.gws[1].bird = startBIRD(t, l.gws[1].ns, birdConf, l.dir)
	l.watchA = watchRoute(t, l.fab, fabricRemoteA)
	l.watchB = watchRoute(t, l.fab, fabricRemoteB)
	// 30 s: with BIRD's or FRR's default error-wait and connect timers, the
	// BFD flap that both show at bring-up would cost a minute or more.
	l.requireHealthy(t, 30*time.Second)
	l.waitBFDUp(t)
	t.Logf("bring-up: daemons started to ECMP on the fabric with BFD up in %s", time.Since(start).Round(time.Millisecond))
	return l
}

// wire creates the links and addresses of the topology.
func (l *fabricLab) wire(t *testing.T) {
	t.Helper()
	netconfigtest.Veth(t, l.fab, "f"+l.id+"h", l.host, "h"+l.id+"f")
	l.fab.Run(t, "ip", "addr", "add", "10.1.1.1/24", "dev", "f"+l.id+"h")
	l.host.Run(t, "ip", "addr", "add", "10.1.1.2/24", "dev", "h"+l.id+"f")
	l.host.Run(t, "ip", "route", "add", "default", "via", "10.1.1.1")
	for i := 1; i <= fabricRemoteHosts; i++ {
		l.rem.Run(t, "ip", "addr", "add", fmt.Sprintf("10.2.0.%d/32", i), "dev", "lo")
	}
	l.rem.Run(t, "ip", "addr", "add", "10.3.0.1/32", "dev", "lo")
	fabAddrs := [2]string{fabricFabAddr1, fabricFabAddr2}
	ret := []string{"route", "add", "10.1.0.0/16"}
	for i, g := range l.gws {
		n := strconv.Itoa(i + 1)
		fabLink, gwLink := "f"+l.id+n, "g"+l.id+"f"
		netconfigtest.Veth(t, l.fab, fabLink, g.ns, gwLink)
		l.fab.Run(t, "ip", "addr", "add", fabAddrs[i]+"/30", "dev", fabLink)
		g.ns.Run(t, "ip", "addr", "add", g.addr+"/30", "dev", gwLink)
		g.links = [2]string{"dcm" + l.id + n, "dcm" + l.id + n + "b"}
		netconfigtest.Veth(t, g.ns, g.links[0], l.rem, "r"+l.id+n)
		netconfigtest.Veth(t, g.ns, g.links[1], l.rem, "r"+l.id+n+"b")
		g.ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		ret = append(ret, "nexthop", "via", g.overlay.Addr().String(), "dev", "r"+l.id+n, "onlink")
	}
	l.fab.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.rem.Run(t, "ip", ret...)
	// Echo requests reaching the remote side, counted per gateway.
	rules := fmt.Sprintf("table inet %s {\n chain input {\n  type filter hook input priority 0; policy accept;\n", l.counterTable)
	for i, g := range l.gws {
		rules += fmt.Sprintf("  iifname \"r%s%d\" icmp type echo-request counter comment \"%s\"\n", l.id, i+1, g.name)
	}
	rules += " }\n}\n"
	cmd := l.rem.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft counters: %v\n%s", err, out)
	}
}

// requireHealthy waits until the fabric routes both remote prefixes over
// both gateways.
func (l *fabricLab) requireHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	for _, w := range []*routeWatch{l.watchA, l.watchB} {
		w.wait(t, timeout, "fabric ECMP over both gateways", func(r kernelRoute) bool { return r.isVia(fabricGW1Addr, fabricGW2Addr) })
	}
}

// restoreHealthy puts every gateway back to healthy and waits for the fabric
// to use both again: each subtest starts from there, whatever the last left.
func (l *fabricLab) restoreHealthy(t testing.TB) {
	t.Helper()
	for _, g := range l.gws {
		g.drained = false
		for _, p := range []string{fabricRemoteA, fabricRemoteB} {
			g.setHealthy(t, p, true)
		}
	}
	l.requireHealthy(t, 30*time.Second)
}

func (l *fabricLab) bfdPeers(t testing.TB) map[string]bfdPeer {
	t.Helper()
	var peers []bfdPeer
	l.fabFRR.json(t, "show bfd peers json", &peers)
	m := map[string]bfdPeer{}
	for _, p := range peers {
		m[p.Peer] = p
	}
	return m
}

func (l *fabricLab) waitBFDUp(t testing.TB) {
	t.Helper()
	netconfigtest.Eventually(t, 30*time.Second, 50*time.Millisecond, "BFD up with both gateways", func() error {
		peers := l.bfdPeers(t)
		for _, g := range l.gws {
			if p := peers[g.addr]; p.Status != "up" {
				return fmt.Errorf("BFD with the %s gateway is %q", g.name, p.Status)
			}
		}
		return nil
	})
}

// other is the gateway that is not g.
func (l *fabricLab) other(g *fabricGateway) *fabricGateway {
	if g == l.gws[0] {
		return l.gws[1]
	}
	return l.gws[0]
}

// echoCounts returns how many echo requests reached the remote side through
// each gateway (by name).
func (l *fabricLab) echoCounts(t testing.TB) map[string]int {
	t.Helper()
	return nftCounters(t, l.rem, l.counterTable)
}

// nftCounters returns the packet counter of each rule of an inet table in
// ns, by the rule's comment.
func nftCounters(t testing.TB, ns *netconfigtest.NS, table string) map[string]int {
	t.Helper()
	out := ns.Run(t, "nft", "-j", "list", "table", "inet", table)
	var v struct {
		Nftables []struct {
			Rule *struct {
				Comment string `json:"comment"`
				Expr    []struct {
					Counter *struct {
						Packets int `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("nft -j: %v\n%s", err, out)
	}
	counts := map[string]int{}
	for _, o := range v.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			if e.Counter != nil {
				counts[o.Rule.Comment] = e.Counter.Packets
			}
		}
	}
	return counts
}

// pingRemote sends n echo requests from the fabric's host to dst behind the
// tunnels, all of which must come back, and returns how many went through
// each gateway.
func (l *fabricLab) pingRemote(t testing.TB, dst string, n int) map[string]int {
	t.Helper()
	before := l.echoCounts(t)
	l.host.Run(t, "ping", "-n", "-q", "-c", strconv.Itoa(n), "-i", "0.02", "-W", "2", dst)
	after := l.echoCounts(t)
	through := map[string]int{}
	for name, c := range after {
		through[name] = c - before[name]
	}
	return through
}
