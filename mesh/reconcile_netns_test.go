package mesh

// Reconcile cost against a real kernel and a real (embedded) WireGuard
// device: the same synthetic mesh as reconcile_scale_test.go, programmed
// through netlink and the UAPI socket inside a network namespace. The work
// runs in a child process (this test binary again, inside the namespace):
// wireguard-go cannot be moved between namespaces thread by thread.

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// reconcileHelperEnv carries "SITES ITERATIONS INTERFACE [GATEWAYS]" to
// the child. With GATEWAYS (1 or 2: gateways per remote site) every peer
// reads as freshly handshaken (freshHandshakes), so that two gateways of a
// site are healthy and their nexthop group has both members.
const reconcileHelperEnv = "DCMESH_RECONCILE_HELPER"

// reconcileResult is what the child reports, per reconcile.
type reconcileResult struct {
	Sites           int     `json:"sites"`
	Iterations      int     `json:"iterations"`
	SteadyWallMS    float64 `json:"steady_wall_ms"`
	SteadyCPUMS     float64 `json:"steady_cpu_ms"`
	OneChangeWallMS float64 `json:"one_change_wall_ms"`
	OneChangeCPUMS  float64 `json:"one_change_cpu_ms"`
	IdleCPUPercent  float64 `json:"idle_cpu_percent"` // background: the device's own timers
	Peers           int     `json:"peers"`            // counted by wg(8)
	Routes          int     `json:"routes"`           // counted by ip(8)
	SlotPeers       int     `json:"slot_peers"`       // on slot 1's device (gateways 2), by wg(8)
	GroupRoutes     int     `json:"group_routes"`     // routes over a nexthop group, by ip(8)
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestHelperReconcileInNamespace is the child process of
// runReconcileInNamespace; it does nothing unless reconcileHelperEnv is set.
func TestHelperReconcileInNamespace(t *testing.T) {
	spec := os.Getenv(reconcileHelperEnv)
	if spec == "" {
		t.Skip("helper process for the namespace reconcile benchmark; runs only when started by it")
	}
	var n, iters, gateways int
	var iface string
	f := strings.Fields(spec)
	if len(f) == 3 {
		f = append(f, "0") // no GATEWAYS: as before it was a field
	}
	if _, err := fmt.Sscanf(strings.Join(f, " "), "%d %d %s %d", &n, &iters, &iface, &gateways); err != nil || len(f) != 4 {
		t.Fatalf("%s=%q: want SITES ITERATIONS INTERFACE [GATEWAYS] (%v)", reconcileHelperEnv, spec, err)
	}
	m, g1s := reconcileHelperMesh(t, n, iface, gateways)
	// Background CPU (keepalive handshakes to unreachable endpoints, GC):
	// subtracted from the reconciles below.
	const idle = time.Second
	c0 := processCPU()
	time.Sleep(idle)
	bg := float64(processCPU()-c0) / float64(idle)

	measure := func(before func(i int)) (wallMS, cpuMS float64) {
		var wall, cpu time.Duration
		for i := range iters {
			if before != nil {
				before(i)
			}
			w0, c0 := time.Now(), processCPU()
			m.reconcile(t)
			w := time.Since(w0)
			wall += w
			cpu += processCPU() - c0 - time.Duration(bg*float64(w))
		}
		return float64(wall.Microseconds()) / 1e3 / float64(iters), float64(max(cpu, 0).Microseconds()) / 1e3 / float64(iters)
	}
	res := reconcileResult{Sites: n, Iterations: iters, IdleCPUPercent: 100 * bg}
	res.SteadyWallMS, res.SteadyCPUMS = measure(nil)
	s, g := m.sites[n/2], 0
	if g1s != nil {
		s, g = g1s[n/2], 2 // scaleEndpoint generation 1 is the gateways 1's
	}
	res.OneChangeWallMS, res.OneChangeCPUMS = measure(func(i int) {
		m.offer(t, s, trusttest.RecordOptions{Endpoints: []netip.AddrPort{scaleEndpoint(n/2, g+1+i%2)}})
	})
	countInNamespace(t, m, iface, &res)
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
}

// reconcileHelperMesh opens the device and netlink of the child and
// builds the mesh on them: n remote sites, each with a second gateway for
// gateways 2 (returned; nil otherwise). What it opens is closed at the
// test's end, failed or not (an embedded device left open leaves its
// socket in /var/run/wireguard).
func reconcileHelperMesh(t *testing.T, n int, iface string, gateways int) (*scaleMesh, []*scaleSite) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev, err := wg.OpenDevice(wg.DeviceOptions{Name: iface, Mode: wg.ModeUserspace, MTU: 1420, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	var nl interface {
		netconfig.Netlink
		Close()
	}
	if gateways == 0 {
		nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		nl, err = netconfig.OpenHandle() // nexthop objects and sysctls, as the agent opens it
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wgc.Close() })
	var client wg.Client = wgc
	if gateways > 0 {
		client = freshHandshakes{wgc}
	}
	m := newScaleMeshIn(t, n, scaleEnv{iface: iface, dev: dev, wgc: client, nl: nl})
	t.Cleanup(func() { _ = m.rt.closeSlotDevices(false) }) // runs before the closes above
	var g1s []*scaleSite
	if gateways == 2 {
		g1s = m.addSecondGateways(t) // opens slot 1's device, a real one
		m.reconcile(t)               // healthy: the groups get both members
		m.reconcile(t)
	}
	return m, g1s
}

// countInNamespace has wg(8) and ip(8), not our code, count what the
// devices and the kernel hold.
func countInNamespace(t *testing.T, m *scaleMesh, iface string, res *reconcileResult) {
	t.Helper()
	out, err := runCmd("wg", "show", iface, "peers")
	if err != nil {
		t.Fatalf("wg show: %v\n%s", err, out)
	}
	res.Peers = len(strings.Fields(out))
	if len(m.rt.slots) > 0 {
		if out, err = runCmd("wg", "show", iface+"g1", "peers"); err != nil {
			t.Fatalf("wg show: %v\n%s", err, out)
		}
		res.SlotPeers = len(strings.Fields(out))
	}
	out, err = runCmd("ip", "-4", "route", "show", "table", strconv.Itoa(m.rt.cfg.RouteTable), "proto", "220")
	if err != nil {
		t.Fatalf("ip route: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, " ") { // not a group member's line
			res.Routes++
		}
	}
	res.GroupRoutes = strings.Count(out, " nhid ")
}

// runReconcileInNamespace runs the child for n sites and checks that the
// device and the kernel hold exactly the mesh.
func runReconcileInNamespace(tb testing.TB, n, iters int) reconcileResult {
	return runReconcileInNamespaceWith(tb, n, iters, 0)
}

// runReconcileInNamespaceWith is runReconcileInNamespace with gateways per
// remote site (0: as runReconcileInNamespace; 1 or 2: with fresh
// handshakes, reconcileHelperEnv).
func runReconcileInNamespaceWith(tb testing.TB, n, iters, gateways int) reconcileResult {
	tb.Helper()
	netconfigtest.RequireRoot(tb)
	sfx := netconfigtest.UniqueSuffix()
	ns := netconfigtest.NewNS(tb, "dcmrec-"+sfx)
	cmd := ns.Command(os.Args[0], "-test.run=^TestHelperReconcileInNamespace$", "-test.count=1", "-test.timeout=10m")
	spec := fmt.Sprintf("%d %d dcmrec%s", n, iters, sfx)
	if gateways > 0 {
		spec += fmt.Sprintf(" %d", gateways)
	}
	cmd.Env = append(os.Environ(), reconcileHelperEnv+"="+spec)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("reconcile helper in %s: %v\n%s", ns.Name, err, out)
	}
	var res reconcileResult
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "RESULT "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				tb.Fatalf("helper result %q: %v", j, err)
			}
		}
	}
	// validConfig's 2 static peers and 3 prefixes, plus per site one peer
	// and two prefixes (its /24 and overlay address); every prefix has a
	// route to the device and a fail-closed unreachable route.
	if gateways < 2 && (res.Peers != n+2 || res.Routes != 2*(3+2*n)) {
		tb.Fatalf("after the reconciles: %d peers (want %d), %d routes (want %d)\n%s", res.Peers, n+2, res.Routes, 2*(3+2*n), out)
	}
	// Two gateways: gateway 1 on slot 1's device, its overlay address a
	// third prefix of the site, the site's prefix over a group of both.
	if gateways == 2 && (res.Peers != n+2 || res.SlotPeers != n || res.Routes != 2*(3+3*n) || res.GroupRoutes != n) {
		tb.Fatalf("after the reconciles: %d+%d peers (want %d+%d), %d routes (want %d), %d over a group (want %d)\n%s",
			res.Peers, res.SlotPeers, n+2, n, res.Routes, 2*(3+3*n), res.GroupRoutes, n, out)
	}
	return res
}

// The namespace benchmark's code path, small: real device, real netlink.
func TestReconcileInNamespaceSmoke(t *testing.T) {
	res := runReconcileInNamespace(t, 20, 3)
	if res.SteadyWallMS <= 0 || res.OneChangeWallMS <= 0 {
		t.Errorf("no time measured: %+v", res)
	}
	t.Logf("20 sites: steady reconcile %.2f ms wall / %.2f ms CPU, one change %.2f / %.2f ms",
		res.SteadyWallMS, res.SteadyCPUMS, res.OneChangeWallMS, res.OneChangeCPUMS)
}

// BenchmarkReconcileNamespace reports the wall and CPU time of one reconcile
// against the embedded device and the real kernel (root):
//
//	sudo go test -run '^$' -bench ReconcileNamespace -benchtime 1x ./mesh
func BenchmarkReconcileNamespace(b *testing.B) {
	for _, n := range []int{50, 200, 1000} {
		b.Run(fmt.Sprintf("sites=%d", n), func(b *testing.B) {
			for b.Loop() {
				res := runReconcileInNamespace(b, n, 20)
				b.ReportMetric(res.SteadyWallMS, "steady-ms")
				b.ReportMetric(res.SteadyCPUMS, "steady-cpu-ms")
				b.ReportMetric(res.OneChangeWallMS, "change-ms")
				b.ReportMetric(res.OneChangeCPUMS, "change-cpu-ms")
				b.ReportMetric(res.IdleCPUPercent, "idle-cpu-%")
			}
		})
	}
}

// runCmd runs a command and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// The namespace benchmark with two gateways per remote site, small: slot
// 1's real device holds the gateways 1, and each site's prefix goes over a
// real nexthop group of both (runReconcileInNamespaceWith checks the
// counts with wg(8) and ip(8)).
func TestReconcileInNamespaceGatewaysSmoke(t *testing.T) {
	res := runReconcileInNamespaceWith(t, 4, 3, 2)
	if res.SteadyWallMS <= 0 || res.OneChangeWallMS <= 0 {
		t.Errorf("no time measured: %+v", res)
	}
	t.Logf("4 sites × 2 gateways: steady reconcile %.2f ms wall / %.2f ms CPU, one change %.2f / %.2f ms",
		res.SteadyWallMS, res.SteadyCPUMS, res.OneChangeWallMS, res.OneChangeCPUMS)
}

// BenchmarkReconcileNamespaceGateways is BenchmarkReconcileNamespace for
// 16 remote sites of two gateways (two devices, nexthop groups) beside 16
// and 32 one-gateway sites, all with fresh handshakes (reconcileHelperEnv):
//
//	sudo go test -run '^$' -bench ReconcileNamespaceGateways -benchtime 1x ./mesh
func BenchmarkReconcileNamespaceGateways(b *testing.B) {
	for _, c := range []struct{ sites, gateways int }{{16, 1}, {32, 1}, {16, 2}} {
		b.Run(fmt.Sprintf("sites=%d/gateways=%d", c.sites, c.gateways), func(b *testing.B) {
			for b.Loop() {
				res := runReconcileInNamespaceWith(b, c.sites, 50, c.gateways)
				b.ReportMetric(res.SteadyWallMS, "steady-ms")
				b.ReportMetric(res.SteadyCPUMS, "steady-cpu-ms")
				b.ReportMetric(res.OneChangeWallMS, "change-ms")
				b.ReportMetric(res.OneChangeCPUMS, "change-cpu-ms")
			}
		})
	}
}
