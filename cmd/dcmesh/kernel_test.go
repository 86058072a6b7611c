package main

// The kernel WireGuard backend, for real: this machine's kernel has no
// WireGuard module, so TestKernelBackendUnderQEMU boots a Debian kernel under
// qemu and runs TestKernelBackend inside it, with a static dcmesh binary.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const inGuestEnv = "DCMESH_KERNEL_TEST"

func TestKernelBackendUnderQEMU(t *testing.T) {
	if os.Getenv(inGuestEnv) != "" {
		t.Skip("already inside the guest")
	}
	if testing.Short() {
		t.Skip("skipping the qemu boot in -short mode")
	}
	netconfigtest.RequireRoot(t)
	requireTool(t, "qemu-system-x86_64", "go")
	dir := t.TempDir()
	build := func(args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	build("test", "-c", "-o", filepath.Join(dir, "dcmesh.test"), ".")
	build("build", "-o", filepath.Join(dir, "dcmesh"), ".")

	script, err := filepath.Abs("../../scripts/qemu-kernel-test")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(script, "--timeout", "600",
		"--file", filepath.Join(dir, "dcmesh")+":/bin/dcmesh",
		"--env", inGuestEnv+"=1", "--env", "DCMESH_BIN=/bin/dcmesh",
		"--", filepath.Join(dir, "dcmesh.test"), "-test.run", "^TestKernel(Backend|Rotation|GatewayFailover)$", "-test.v", "-test.count=1")
	out, err := cmd.CombinedOutput()
	t.Logf("guest output (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if ps := cmd.ProcessState; ps != nil {
		// The script waits for qemu, so its usage includes the guest's.
		t.Logf("guest run: %s wall, %s CPU (user %s, system %s)", time.Since(start).Round(time.Second),
			(ps.UserTime() + ps.SystemTime()).Round(time.Second), ps.UserTime().Round(time.Second), ps.SystemTime().Round(time.Second))
	}
	if err != nil {
		t.Fatalf("kernel backend test in qemu failed: %v", err)
	}
	for _, name := range []string{"TestKernelBackend", "TestKernelRotation", "TestKernelGatewayFailover"} {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) {
			t.Errorf("the guest did not report %s as passed (skipped?)", name)
		}
	}
}

// TestKernelBackend runs inside the qemu guest: two sites on a veth pair,
// each with a dcmesh agent on the kernel backend.
func TestKernelBackend(t *testing.T) {
	if os.Getenv(inGuestEnv) == "" {
		t.Skip("runs inside the qemu guest started by TestKernelBackendUnderQEMU")
	}
	m, a, b := kernelPair(t, 77)
	m.writeConfigs()
	m.startAll()

	// The link is a kernel WireGuard device, created through netlink.
	for _, s := range m.sites {
		if !strings.Contains(s.agent.Output(), "created kernel WireGuard link") {
			t.Fatalf("%s did not create a kernel link:\n%s", s.name, s.agent.Output())
		}
		if d := s.device(); d.Type != wgtypes.LinuxKernel {
			t.Fatalf("%s: device type %v, want %v", s.name, d.Type, wgtypes.LinuxKernel)
		}
	}
	var hsA, hsB time.Time
	netconfigtest.Eventually(t, 30*time.Second, 200*time.Millisecond, "handshake", func() error {
		hsA, hsB = a.device().Peers[0].LastHandshakeTime, b.device().Peers[0].LastHandshakeTime
		if hsA.IsZero() || hsB.IsZero() {
			return fmt.Errorf("no handshake yet")
		}
		return nil
	})
	for _, p := range [][2]*site{{a, b}, {b, a}} {
		if out, err := p[0].ns.Try("ping", "-c", "2", "-W", "3", "-I", p[0].host(), p[1].host()); err != nil {
			t.Fatalf("ping %s → %s: %v\n%s", p[0].name, p[1].name, err, out)
		}
	}

	// Restart a's agent: the link and its session survive, the new agent
	// adopts them and changes nothing.
	if err := a.agent.Stop(10 * time.Second); err != nil {
		t.Fatalf("agent did not stop cleanly: %v", err)
	}
	if d := a.device(); len(d.Peers) != 1 || !d.Peers[0].LastHandshakeTime.Equal(hsA) {
		t.Fatalf("after SIGTERM the kernel device lost its peer or session: %+v", d.Peers)
	}
	if out, err := a.ns.Try("ping", "-c", "1", "-W", "3", "-I", a.host(), b.host()); err != nil {
		t.Errorf("traffic stopped while the agent was down: %v\n%s", err, out)
	}
	a.start()
	if out := a.agent.Output(); !strings.Contains(out, "adopting existing kernel WireGuard link") || strings.Contains(out, "WireGuard peers changed") {
		t.Fatalf("restarted agent did not adopt the link untouched:\n%s", out)
	}
	if out, err := a.ns.Try("ping", "-c", "2", "-W", "3", "-I", a.host(), b.host()); err != nil {
		t.Fatalf("ping after restart: %v\n%s", err, out)
	}
	if got := a.device().Peers[0].LastHandshakeTime; !got.Equal(hsA) {
		t.Errorf("%s handshake moved %s → %s: the restart renegotiated the session", a.name, hsA, got)
	}
	if got := b.device().Peers[0].LastHandshakeTime; !got.Equal(hsB) {
		t.Errorf("%s handshake moved %s → %s: the restart renegotiated the session", b.name, hsB, got)
	}
}

// TestKernelRotation runs inside the qemu guest: two gossip sites
// bootstrapped with the CLI on the kernel backend; a forced rotation moves
// the peer to the new key with traffic flowing after it; then, after an
// agent restart, rotations of both sites under traffic silence nothing.
func TestKernelRotation(t *testing.T) {
	if os.Getenv(inGuestEnv) == "" {
		t.Skip("runs inside the qemu guest started by TestKernelBackendUnderQEMU")
	}
	m, a, b := kernelPair(t, 78)
	caDir := m.newCA("ca")
	a.enroll(caDir, nil)
	b.enroll(caDir, []string{a.seed()})
	m.startAll()
	netconfigtest.Eventually(t, 30*time.Second, 200*time.Millisecond, "handshake", func() error {
		da, db := a.device(), b.device()
		if da.Type != wgtypes.LinuxKernel || len(da.Peers) != 1 || len(db.Peers) != 1 ||
			da.Peers[0].LastHandshakeTime.IsZero() || db.Peers[0].LastHandshakeTime.IsZero() {
			return fmt.Errorf("not meshed yet")
		}
		return nil
	})
	if out, err := a.ns.Try("ping", "-c", "2", "-W", "3", "-I", a.host(), b.host()); err != nil {
		t.Fatalf("ping before the rotation: %v\n%s", err, out)
	}
	out := m.cli("rotate", "--wait", "--config", a.cfgPath)
	if !strings.Contains(out, "complete") {
		t.Fatalf("rotation: %s", out)
	}
	newKey := m.publicKeyOf(a.keyPath)
	if newKey == a.pub {
		t.Fatal("the key did not change")
	}
	if got := wg.PublicKey(a.device().PublicKey).String(); got != newKey {
		t.Errorf("site1's kernel device has key %s, want %s", got, newKey)
	}
	netconfigtest.Eventually(t, 20*time.Second, 200*time.Millisecond, "peer holds only the new key", func() error {
		peers := b.device().Peers
		if len(peers) != 1 || wg.PublicKey(peers[0].PublicKey).String() != newKey {
			return fmt.Errorf("site2's peers: %d", len(peers))
		}
		for _, n := range peers[0].AllowedIPs {
			if n.String() == a.prefix() {
				return nil
			}
		}
		return fmt.Errorf("new key does not carry %s", a.prefix())
	})
	for _, p := range [][2]*site{{a, b}, {b, a}} {
		if out, err := p[0].ns.Try("ping", "-c", "2", "-W", "3", "-I", p[0].host(), p[1].host()); err != nil {
			t.Errorf("ping %s → %s after the rotation: %v\n%s", p[0].name, p[1].name, err, out)
		}
	}
	t.Logf("kernel rotation: %s", strings.TrimSpace(out))
	a.pub = newKey

	// Restart an agent (the kernel link and its sessions stay), then rotate
	// both sites in turn under traffic both ways: no rotation may silence
	// the pair for WireGuard's 5 s retry (crossing handshakes did, in about
	// 1 of 67 rotations). The limit is looser than on the host: this guest
	// is emulated (TCG), and a packet's path through it takes milliseconds.
	if err := b.agent.Stop(10 * time.Second); err != nil {
		t.Fatalf("agent did not stop cleanly: %v", err)
	}
	b.start()
	probes := startMeshProbes(t, m.sites, 9400, 50)
	const rounds = 4
	for i := 0; i < rounds; i++ {
		for _, s := range m.sites {
			out := m.cli("rotate", "--wait", "--timeout", "60s", "--config", s.cfgPath)
			if !strings.Contains(out, "complete") {
				t.Errorf("rotation of %s: %s", s.name, out)
			}
			probes.waitTraffic(t, 30, 30*time.Second)
		}
	}
	reports := probes.stop(t)
	for _, p := range [][2]*site{{a, b}, {b, a}} {
		src := reports[p[1].name].From[p[0].name]
		t.Logf("%s→%s over %d rotations after a restart: %d received, %d lost, longest silence %.1f ms %v",
			p[0].name, p[1].name, rounds*2, src.Received, src.Lost, src.LongestGap, src.Silences)
		if src.LongestGap > float64(kernelMaxSilence.Milliseconds()) {
			t.Errorf("%s→%s silent for %.0f ms (limit %s)", p[0].name, p[1].name, src.LongestGap, kernelMaxSilence)
		}
	}
}

// kernelMaxSilence is maxRotationSilence for the emulated guest. What it
// must catch is the failure this test exists for: crossing handshakes
// silence a pair until WireGuard retries, after REKEY_TIMEOUT (5 s). The
// guest's own timing is not ours: qemu emulates its CPU (TCG), and with the
// host at load 12-15 the guest went 400-700 ms without running several times
// in one run and once 1.5 s (run 2 of the determinism series). Half of
// REKEY_TIMEOUT separates the two.
const kernelMaxSilence = 2500 * time.Millisecond

// kernelPair builds, inside the guest, two sites on the kernel backend joined
// by a veth pair on 192.168.<subnet>.0/24; the kernel links they will create
// are deleted by name at the end.
func kernelPair(t *testing.T, subnet int) (*testMesh, *site, *site) {
	t.Helper()
	m := &testMesh{t: t, id: netconfigtest.UniqueSuffix(), dir: shortTempDir(t), backend: "kernel", subnet: subnet}
	a, b := m.newSite(1), m.newSite(2)
	netconfigtest.Veth(t, a.ns, "eth0", b.ns, "eth0")
	for _, s := range m.sites {
		s.ns.Run(t, "ip", "addr", "add", s.underlay()+"/24", "dev", "eth0")
		t.Cleanup(func() { _, _ = s.ns.Try("ip", "link", "del", s.iface) })
	}
	return m, a, b
}

// device reads s's WireGuard device with wgctrl from inside its namespace;
// the test fails if it cannot.
func (s *site) device() *wgtypes.Device {
	s.m.t.Helper()
	d, err := s.deviceOf(s.iface)
	if err != nil {
		s.m.t.Fatal(err)
	}
	return d
}

// deviceOf reads WireGuard device iface with wgctrl from inside s's
// namespace, by running this test binary there as a helper (the guest has
// no wg tool, and a genetlink socket belongs to the namespace it was opened
// in).
func (s *site) deviceOf(iface string) (*wgtypes.Device, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := s.ns.Command(self, "-test.run", "^TestHelperDevice$")
	cmd.Env = append(os.Environ(), "DCMESH_HELPER_DEVICE="+iface)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w\n%s", iface, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if j, ok := strings.CutPrefix(sc.Text(), "DCMESH-DEVICE "); ok {
			var d wgtypes.Device
			if err := json.Unmarshal([]byte(j), &d); err != nil {
				return nil, err
			}
			return &d, nil
		}
	}
	return nil, fmt.Errorf("helper printed no device %s:\n%s", iface, out)
}

// TestHelperDevice is not a test: device() runs it in a namespace to print
// one WireGuard device as JSON (without its private key).
func TestHelperDevice(t *testing.T) {
	name := os.Getenv("DCMESH_HELPER_DEVICE")
	if name == "" {
		t.Skip("helper process for device()")
	}
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	d.PrivateKey = wgtypes.Key{}
	j, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("DCMESH-DEVICE %s\n", j)
}
