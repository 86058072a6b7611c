package main

// Helpers for the gossip end-to-end tests: sites bootstrapped with the real
// CLI (ca init, ca issue, init, agent), exactly as an operator would.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// cli runs the dcmesh binary on the host (not in a namespace) and returns its
// output; the test fails if it fails.
func (m *testMesh) cli(args ...string) string {
	m.t.Helper()
	out, err := exec.Command(dcmeshBinary(m.t), args...).CombinedOutput()
	m.transcript = append(m.transcript, "$ dcmesh "+strings.Join(args, " ")+"\n"+string(out))
	if err != nil {
		m.t.Fatalf("dcmesh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newCA creates a CA directory with `dcmesh ca init`.
func (m *testMesh) newCA(name string) string {
	dir := filepath.Join(m.dir, name)
	m.cli("ca", "init", "--dir", dir, "--cluster", "test")
	return dir
}

var pubKeyLine = regexp.MustCompile(`WireGuard public key: (\S+)`)

// enroll certifies s with caDir and runs `dcmesh init` for it, joining the
// gossip seeds given (IP:PORT). The generated configuration gets test
// timings: LAN gossip profile, 1 s rejoin, 2 s resync.
func (s *site) enroll(caDir string, seeds []string, issueArgs ...string) {
	s.m.t.Helper()
	s.enrollAs(caDir, seeds, s.name, s.prefix(), issueArgs...)
}

// enrollAs is enroll with the certificate of site siteName, for prefix
// (another gateway of a site: issueArgs has --gateway).
func (s *site) enrollAs(caDir string, seeds []string, siteName, prefix string, issueArgs ...string) {
	m := s.m
	m.t.Helper()
	s.bundle = filepath.Join(m.dir, s.name+"-bundle")
	s.stateDir = filepath.Join(m.dir, s.name+"-state")
	args := append([]string{"ca", "issue", "--dir", caDir, "--site", siteName, "--prefix", prefix,
		"--overlay", s.overlay(), "--underlay", fmt.Sprintf("192.168.%d.0/24", m.subnet), "--out", s.bundle}, issueArgs...)
	m.cli(args...)
	initArgs := []string{"init", "--bundle", s.bundle, "--state-dir", s.stateDir,
		"--endpoint", s.underlay() + ":51820", "--interface", s.iface}
	for _, j := range seeds {
		initArgs = append(initArgs, "--join", j)
	}
	out := m.cli(initArgs...)
	mm := pubKeyLine.FindStringSubmatch(out)
	if mm == nil {
		m.t.Fatalf("init printed no public key:\n%s", out)
	}
	s.pub = mm[1]
	s.keyPath = filepath.Join(s.stateDir, "wg.key")
	s.cfgPath = filepath.Join(s.stateDir, "dcmesh.yaml")
	f, err := os.OpenFile(s.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	// Appended under the gossip: mapping the file ends with, then top level.
	_, err = f.WriteString("  profile: lan\n  rejoin_interval: 1s\nwireguard: " + m.backend + "\nresync_interval: 2s\ntrust:\n  clock_skew: 1s\nrotation:\n  ack_timeout: 3s\n  complete_timeout: 10s\n")
	f.Close()
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = os.Remove(filepath.Join(s.stateDir, "control.sock")) })
}

func (s *site) seed() string { return s.underlay() + ":7946" }

// newGossipMesh bootstraps n sites from one CA; every site but the first
// joins the first. Agents are not started.
func newGossipMesh(t *testing.T, n int) (*testMesh, string) {
	m := newMesh(t, n)
	caDir := m.newCA("ca")
	for i, s := range m.sites {
		var seeds []string
		if i > 0 {
			seeds = []string{m.sites[0].seed()}
		}
		s.enroll(caDir, seeds)
	}
	return m, caDir
}

// agentPID is s's agent process: the one whose command line is
// `dcmesh agent --config CFG …` with s's exact configuration (nsenter execs
// the agent, so there is no intermediate process to skip).
func (s *site) agentPID(t testing.TB) int {
	t.Helper()
	pid, err := sitetest.FindPID(nil, func(argv []string) bool {
		i := slices.Index(argv, "--config")
		return i > 0 && i+1 < len(argv) && argv[i+1] == s.cfgPath && slices.Contains(argv, "agent") && filepath.Base(argv[0]) != "nsenter"
	})
	if err != nil {
		t.Fatalf("no agent process for %s: %v", s.name, err)
	}
	return pid
}

// processCPU is sitetest.CPU that fails the test on an error.
func processCPU(t testing.TB, pid int) (ticks, ns int64) {
	t.Helper()
	ticks, ns, err := sitetest.CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	return ticks, ns
}

// client talks to s's agent over its control socket.
func (s *site) client() *control.Client {
	return control.NewClient(config.StateDir(s.stateDir).ControlSocket())
}

// status asks s's agent for its status over the control socket.
func (s *site) status() control.Status {
	s.m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.client().Status(ctx)
	if err != nil {
		s.m.t.Fatalf("%s status: %v", s.name, err)
	}
	return st
}

// allowedIPs returns, per peer public key, the allowed IPs `wg show` lists.
func (s *site) allowedIPs() map[string]string {
	s.m.t.Helper()
	out := s.ns.Run(s.m.t, "wg", "show", s.iface, "allowed-ips")
	res := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok {
			res[k] = v
		}
	}
	return res
}

// waitFullMesh waits until every started site has a handshake with every
// other started site.
func (m *testMesh) waitFullMesh(sites ...*site) {
	m.t.Helper()
	for _, s := range sites {
		var others []*site
		for _, o := range sites {
			if o != s {
				others = append(others, o)
			}
		}
		s.waitHandshakes(others...)
	}
}

// memberStates returns name → state of s's gossip view.
func (s *site) memberStates() map[string]string {
	out := map[string]string{}
	for _, mb := range s.status().Gossip.Members {
		out[mb.Name] = string(mb.State)
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	netconfigtest.Eventually(t, timeout, 100*time.Millisecond, what, cond)
}
