package main

// Helpers for the end-to-end tests: real dcmesh agent processes, each in its
// own network namespace, on an underlay bridge in a namespace of its own.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// dcmeshBinary returns a dcmesh binary built from this tree (or the one named
// by DCMESH_BIN, as in the qemu guest where there is no Go toolchain).
func dcmeshBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DCMESH_BIN"); p != "" {
		return p
	}
	return goBuild(t, ".", "dcmesh")
}

// builds holds one build per package path, for the whole test binary.
var builds sync.Map // package path → *build

type build struct {
	once sync.Once
	path string
	err  error
}

// goBuild builds the Go main package pkg (as `go build` names it, from this
// module: its own code or a dependency's) into a temporary file called name,
// once per test binary, and returns its path.
func goBuild(t testing.TB, pkg, name string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, &build{})
	b := v.(*build)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "dcmesh-test-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// requireTool skips when a program the test needs is missing, except in CI
// (CI=true), where a missing tool is a broken setup and fails the test.
func requireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed; .ci/run must install it", n)
			}
			t.Skipf("skipping: %s is not installed (apt-get install --no-install-recommends wireguard-tools iputils-ping tcpdump wireguard-go iproute2)", n)
		}
	}
}

// testMesh is a test topology: an underlay namespace with a bridge and n site
// namespaces attached to it.
type testMesh struct {
	t       *testing.T
	id      string // random, in every name
	backend string // the agents' wireguard setting
	ul      *netconfigtest.NS
	subnet  int // third octet of the underlay, 192.168.<subnet>.0/24
	sites   []*site
	dir     string
	// transcript holds every CLI invocation and its output (m.cli)
	transcript []string
}

type site struct {
	m       *testMesh
	idx     int // 1-based
	name    string
	ns      *netconfigtest.NS
	iface   string
	keyPath string
	pub     string
	cfgPath string
	agent   *netconfigtest.Proc
	// extra peers (non-dcmesh) appended to the generated config
	external bool // configured by hand, not by a dcmesh agent
	// gossip sites
	bundle   string
	stateDir string
	// agentArgs are extra flags for `dcmesh agent`
	agentArgs []string
}

type peerSpec struct {
	name, pub, endpoint string
	prefixes            []string
}

func (s *site) underlay() string { return fmt.Sprintf("192.168.%d.%d", s.m.subnet, s.idx) }
func (s *site) host() string     { return fmt.Sprintf("10.%d.0.1", s.idx) }
func (s *site) prefix() string   { return fmt.Sprintf("10.%d.0.0/24", s.idx) }
func (s *site) overlay() string  { return fmt.Sprintf("10.255.0.%d", s.idx) }

// newMesh builds the underlay and n site namespaces. No agent runs yet.
func newMesh(t *testing.T, n int) *testMesh {
	t.Helper()
	netconfigtest.RequireRoot(t)
	requireTool(t, "ip", "nsenter", "wg", "ping")
	m := &testMesh{t: t, id: netconfigtest.UniqueSuffix(), dir: shortTempDir(t), backend: "userspace"}
	m.subnet = 100 + int(m.id[0])%100
	m.ul = netconfigtest.NewNS(t, "dcmt-"+m.id+"-ul")
	disableIPv6(t, m.ul)
	m.ul.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	m.ul.Run(t, "ip", "addr", "add", fmt.Sprintf("192.168.%d.254/24", m.subnet), "dev", "br0")
	m.ul.Run(t, "ip", "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		m.addSite(i)
	}
	return m
}

// shortTempDir is a temporary directory with a short path: control sockets
// live in it, and unix socket paths are limited to 107 bytes (t.TempDir
// includes the test name).
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "dcmt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func disableIPv6(t testing.TB, ns *netconfigtest.NS) {
	// No router solicitations or MLD on the underlay: the capture must see
	// WireGuard's UDP and nothing else.
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
}

// addSite creates site i attached to the underlay bridge.
func (m *testMesh) addSite(i int) *site {
	t := m.t
	s := m.newSite(i)
	disableIPv6(t, s.ns)
	netconfigtest.Veth(t, s.ns, "eth0", m.ul, fmt.Sprintf("ul%d", i))
	m.ul.Run(t, "ip", "link", "set", fmt.Sprintf("ul%d", i), "master", "br0")
	s.ns.Run(t, "ip", "addr", "add", s.underlay()+"/24", "dev", "eth0")
	return s
}

// newSite creates site i's namespace, prefix and key; the caller connects
// it to an underlay.
func (m *testMesh) newSite(i int) *site {
	t := m.t
	s := &site{m: m, idx: i, name: fmt.Sprintf("site%d", i), iface: fmt.Sprintf("dcm%s%d", m.id, i)}
	s.ns = netconfigtest.NewNS(t, fmt.Sprintf("dcmt-%s-s%d", m.id, i))
	// The site's own prefix, represented by an address on lo.
	s.ns.Run(t, "ip", "addr", "add", s.host()+"/24", "dev", "lo")
	// An embedded device leaves its control socket behind when killed.
	t.Cleanup(func() { _ = os.Remove("/var/run/wireguard/" + s.iface + ".sock") })
	s.keyPath = filepath.Join(m.dir, s.name+".key")
	out, err := exec.Command(dcmeshBinary(t), "key", "generate", "--out", s.keyPath).Output()
	if err != nil {
		t.Fatalf("key generate: %v", err)
	}
	s.pub = strings.TrimSpace(string(out))
	s.cfgPath = filepath.Join(m.dir, s.name+".yaml")
	m.sites = append(m.sites, s)
	return s
}

// writeConfigs writes every dcmesh site's config with all other sites as
// static peers.
func (m *testMesh) writeConfigs() {
	for _, s := range m.sites {
		if !s.external {
			s.writeConfig(nil)
		}
	}
}

// writeConfig writes s's config; extra maps a peer name to additional
// prefixes to announce for it.
func (s *site) writeConfig(extra map[string][]string) {
	var b strings.Builder
	fmt.Fprintf(&b, "site: %s\ninterface: %s\nprivate_key_file: %s\noverlay_address: %s/32\nlocal_prefixes: [%s]\nwireguard: %s\nresync_interval: 2s\nstate_dir: %s\npeers:\n",
		s.name, s.iface, s.keyPath, s.overlay(), s.prefix(), s.m.backend, filepath.Join(s.m.dir, s.name+"-state"))
	for _, o := range s.m.sites {
		if o == s {
			continue
		}
		prefixes := append([]string{o.prefix(), o.overlay() + "/32"}, extra[o.name]...)
		fmt.Fprintf(&b, "  - name: %s\n    public_key: %s\n    endpoint: %s:51820\n    allowed_prefixes: [%s]\n",
			o.name, o.pub, o.underlay(), strings.Join(prefixes, ", "))
	}
	if err := os.WriteFile(s.cfgPath, []byte(b.String()), 0o600); err != nil {
		s.m.t.Fatal(err)
	}
}

// start runs the agent and waits until it reports running.
func (s *site) start(env ...string) {
	t := s.m.t
	t.Helper()
	args := append([]string{"agent", "--config", s.cfgPath, "--log-level", "debug"}, s.agentArgs...)
	s.agent = s.ns.StartEnv(t, s.name+" agent", env, dcmeshBinary(t), args...)
	s.agent.WaitOutput(t, "agent running", 10*time.Second)
}

func (m *testMesh) startAll() {
	for _, s := range m.sites {
		if !s.external {
			s.start()
		}
	}
}

// handshakes returns the latest handshake time per peer public key, read
// with wireguard-tools (`wg show IFACE latest-handshakes`), an independent
// client of the device.
func (s *site) handshakes() map[string]int64 {
	t := s.m.t
	t.Helper()
	out, err := s.ns.Try("wg", "show", s.iface, "latest-handshakes")
	if err != nil {
		t.Fatalf("wg show %s: %v\n%s", s.iface, err, out)
	}
	hs := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		ts, _ := strconv.ParseInt(f[1], 10, 64)
		hs[f[0]] = ts
	}
	return hs
}

// waitHandshakes waits until s has exactly the peers in want, each with a
// handshake.
func (s *site) waitHandshakes(want ...*site) { s.waitHandshakesWith(true, want...) }

// waitHandshakesWith waits until s has a handshake with every peer in want
// and, if exact, no other peer.
func (s *site) waitHandshakesWith(exact bool, want ...*site) {
	t := s.m.t
	t.Helper()
	netconfigtest.Eventually(t, 20*time.Second, 100*time.Millisecond, s.name+" handshakes", func() error {
		hs := s.handshakes()
		if exact && len(hs) != len(want) {
			return fmt.Errorf("wg show lists %d peers, want %d", len(hs), len(want))
		}
		for _, o := range want {
			if hs[o.pub] == 0 {
				return fmt.Errorf("no handshake with %s", o.name)
			}
		}
		return nil
	})
}

// probePattern is the ping payload: if it ever appears in an underlay
// capture, cleartext crossed the wire.
const probePattern = "dcmesh-probe-!!!"

func patternHex() string { return fmt.Sprintf("%x", probePattern) }

// ping sends count pings from s's prefix to o's and reports whether all came
// back.
func (s *site) ping(o *site, count int) error {
	out, err := s.ns.Try("ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", "-I", s.host(), "-p", patternHex(), o.host())
	if err != nil {
		return fmt.Errorf("ping %s → %s: %v\n%s", s.name, o.name, err, out)
	}
	return nil
}

// capture records every packet in the underlay namespace into a pcap file.
type capture struct {
	path string
	proc *netconfigtest.Proc
}

func (m *testMesh) startCapture(filter ...string) *capture {
	t := m.t
	t.Helper()
	requireTool(t, "tcpdump")
	c := &capture{path: filepath.Join(m.dir, fmt.Sprintf("underlay-%d.pcap", time.Now().UnixNano()))}
	args := append([]string{"-i", "any", "-n", "-U", "-Z", "root", "-w", c.path}, filter...)
	c.proc = m.ul.Start(t, "tcpdump", "tcpdump", args...)
	c.proc.WaitOutput(t, "listening on", 10*time.Second)
	return c
}

// stop ends the capture and returns tcpdump's reading of it, one packet per
// line, and the raw file.
func (c *capture) stop(t testing.TB) (lines []string, raw []byte) {
	t.Helper()
	_ = c.proc.Signal(syscall.SIGINT)
	_ = c.proc.Stop(5 * time.Second)
	out, err := exec.Command("tcpdump", "-n", "-r", c.path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		// Packet lines start with a timestamp; the rest is tcpdump talking.
		if l != "" && l[0] >= '0' && l[0] <= '9' {
			lines = append(lines, l)
		}
	}
	raw, err = os.ReadFile(c.path)
	if err != nil {
		t.Fatal(err)
	}
	return lines, raw
}
