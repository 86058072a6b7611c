package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestDemo runs `dcmesh demo --sites 3` as a user would and checks that it
// shows the full mesh, traffic between all 6 ordered pairs of sites and a
// completed rotation, and that it leaves nothing behind.
func TestDemo(t *testing.T) {
	netconfigtest.RequireRoot(t)
	requireTool(t, "nsenter")
	bin := dcmeshBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "demo", "--sites", "3")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	t.Logf("dcmesh demo took %s; output:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("dcmesh demo: %v", err)
	}
	text := string(out)

	if !regexp.MustCompile(`(?m)^  full mesh: 3 sites, 3 tunnels, every site has a handshake with every other`).MatchString(text) {
		t.Error("the output does not show the full mesh")
	}
	for _, s := range []string{"site1", "site2", "site3"} {
		if !regexp.MustCompile(`(?m)^  ` + s + `: handshake with `).MatchString(text) {
			t.Errorf("the output shows no handshakes for %s", s)
		}
	}
	// Traffic: every ordered pair in the traffic step, before the rotation.
	traffic := section(text, "[5/7]", "[6/7]")
	pairs := echoPairs(traffic)
	for _, from := range []int{1, 2, 3} {
		for _, to := range []int{1, 2, 3} {
			if from != to && !pairs[[2]int{from, to}] {
				t.Errorf("no echo from site%d to site%d in the traffic step", from, to)
			}
		}
	}
	if len(pairs) != 6 {
		t.Errorf("traffic step shows %d pairs, want 6", len(pairs))
	}
	rotation := section(text, "[6/7]", "[7/7]")
	if !regexp.MustCompile(`rotation \d+ complete: new key \S+; all 2 peers cut over \(site2, site3\)`).MatchString(rotation) {
		t.Error("the output shows no completed rotation of site1 with both peers cut over")
	}
	after := echoPairs(rotation)
	for _, p := range [][2]int{{1, 2}, {2, 1}, {1, 3}, {3, 1}} {
		if !after[p] {
			t.Errorf("no echo site%d → site%d after the rotation", p[0], p[1])
		}
	}
	if !strings.Contains(text, "\ndone in ") {
		t.Error("the output does not end with the cleanup")
	}
	// No secret: the CA and identity keys are PEM, WireGuard keys are files
	// the demo never prints.
	if strings.Contains(text, "PRIVATE KEY") {
		t.Error("the output contains a private key")
	}
	checkDemoLeftovers(t, text)
}

// TestDemoInterrupt presses Ctrl-C (SIGINT) once the agents run: the demo
// must exit non-zero after removing everything it created.
func TestDemoInterrupt(t *testing.T) {
	netconfigtest.RequireRoot(t)
	requireTool(t, "nsenter")
	bin := dcmeshBinary(t)
	cmd := exec.Command(bin, "demo", "--sites", "3")
	cmd.Dir = t.TempDir()
	var buf lockedBuffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	running := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			buf.WriteLine(sc.Text())
			if strings.Contains(sc.Text(), "agents running") {
				once.Do(func() { close(running) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { <-copied; exited <- cmd.Wait() }()

	select {
	case <-running:
	case err := <-exited:
		t.Fatalf("the demo exited before its agents ran: %v\n%s", err, buf.String())
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the demo did not report its agents running\n%s", buf.String())
	}
	interrupted := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the demo did not exit within 30 s of SIGINT\n%s", buf.String())
	}
	text := buf.String()
	t.Logf("exited %s after SIGINT: %v; output:\n%s", time.Since(interrupted).Round(time.Millisecond), err, text)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("exit after SIGINT: %v, want a non-zero exit code", err)
	}
	if !strings.Contains(text, "interrupted") {
		t.Error("the output does not say it was interrupted")
	}
	checkDemoLeftovers(t, text)
}

// checkDemoLeftovers fails the test if anything the demo creates is still
// there: a dcmdemo-* namespace, a WireGuard socket of its interfaces, a
// dcmesh route (protocol 220) or a link of its in this namespace, an agent
// process, its temporary directory.
func checkDemoLeftovers(t *testing.T, output string) {
	t.Helper()
	m := regexp.MustCompile(`named dcmdemo-([0-9a-f]{4})-\*`).FindStringSubmatch(output)
	if m == nil {
		t.Fatal("the output does not name the demo's id (dcmdemo-XXXX-*)")
	}
	id := m[1]
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "dcmdemo-") {
			t.Errorf("network namespace %s is left over", e.Name())
		}
	}
	socks, _ := filepath.Glob("/var/run/wireguard/dcmd" + id + "*")
	for _, s := range socks {
		t.Errorf("WireGuard socket %s is left over", s)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: 220, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		t.Errorf("route with protocol 220 in the root namespace: %s", r)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "dcmd"+id) {
			t.Errorf("link %s is left over in the root namespace", l.Attrs().Name)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "dcmdemo-*"))
	for _, d := range dirs {
		t.Errorf("directory %s is left over", d)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte("dcmdemo-")) {
			t.Errorf("process %s is left over: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// section returns the part of the output from the line starting with from
// up to the line starting with to.
func section(text, from, to string) string {
	i := strings.Index(text, "\n"+from)
	if i < 0 {
		return ""
	}
	rest := text[i+1:]
	if j := strings.Index(rest, "\n"+to); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

var echoLine = regexp.MustCompile(`(?m)^  site(\d) → site(\d): 10\.(\d)\.0\.1 → 10\.(\d)\.0\.1 over WireGuard, echo ok in [0-9.]+ ms$`)

// echoPairs returns the ordered pairs of sites the text shows an echo for.
func echoPairs(text string) map[[2]int]bool {
	pairs := map[[2]int]bool{}
	for _, m := range echoLine.FindAllStringSubmatch(text, -1) {
		if m[1] == m[3] && m[2] == m[4] {
			pairs[[2]int{int(m[1][0] - '0'), int(m[2][0] - '0')}] = true
		}
	}
	return pairs
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) WriteLine(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(&l.b, s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
