package netconfigtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root, which network
// namespaces, veths and WireGuard devices need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (run the tests with sudo; CI runs them as root)")
	}
}

// UniqueSuffix returns 4 random hex characters: short enough for interface
// names (15 characters), random enough that parallel or leftover runs never
// collide.
func UniqueSuffix() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NS is a named network namespace created for a test.
type NS struct {
	Name string
	Path string // the bind mount, /var/run/netns/NAME
}

// NewNS creates the namespace NAME with its loopback up, and deletes it in
// t.Cleanup. Register processes that run inside it after this call, so the
// cleanup stops them first.
func NewNS(t testing.TB, name string) *NS {
	t.Helper()
	if err := createNamed(name); err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	ns := &NS{Name: name, Path: filepath.Join("/var/run/netns", name)}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	h := ns.Handle(t)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring up lo in %s: %v", name, err)
	}
	return ns
}

// createNamed makes the namespace on a locked OS thread and puts the thread
// back, so no other goroutine ever runs in the new namespace by accident.
func createNamed(name string) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		// NewNamed may already have switched the thread.
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		return err
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return fmt.Errorf("return to the original namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return nil
}

// Handle opens a netlink handle inside the namespace, closed in t.Cleanup.
func (ns *NS) Handle(t testing.TB) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns.Name, err)
	}
	defer nsh.Close()
	// NETLINK_ROUTE only: asking for xfrm too fails where it is not loaded.
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Do runs f on a fresh OS thread inside the namespace, for what a test needs
// to create there from its own process (a socket stays in the namespace it
// was created in). The thread goes back to its own namespace afterwards; if
// it cannot, it stays locked and exits with its goroutine, so no other
// goroutine ever runs in the namespace by accident.
func (ns *NS) Do(f func() error) error {
	target, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns.Name, err)
	}
	defer target.Close()
	return netconfig.InNamespace(target, f)
}

// Command returns a command that runs inside the namespace (through
// nsenter, which util-linux and busybox both provide).
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + ns.Path, "--", name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output;
// it fails the test if the command fails.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Try(name, args...)
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", ns.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try runs a command inside the namespace and returns its output and error.
func (ns *NS) Try(name string, args ...string) (string, error) {
	cmd := ns.Command(name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Veth creates a veth pair with one end, aName, in a and the other, bName, in
// b, both up. Deleting either namespace deletes the pair.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	af, err := netns.GetFromPath(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	bf, err := netns.GetFromPath(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	la := netlink.NewLinkAttrs()
	la.Name = aName
	la.Namespace = netlink.NsFd(af)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: bName, PeerNamespace: netlink.NsFd(bf)}); err != nil {
		t.Fatalf("create veth %s/%s: %v", aName, bName, err)
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		h := end.ns.Handle(t)
		l, err := h.LinkByName(end.name)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("bring up %s in %s: %v", end.name, end.ns.Name, err)
		}
	}
}

// Proc is a long-running process inside a namespace. Its output is kept and
// printed if the test fails.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Start runs a process inside the namespace. t.Cleanup kills it (SIGKILL if
// it does not stop within 5 s of SIGTERM) and logs its output on failure.
func (ns *NS) Start(t testing.TB, label string, name string, args ...string) *Proc {
	t.Helper()
	return ns.StartEnv(t, label, nil, name, args...)
}

// StartEnv is Start with extra environment variables (KEY=VALUE).
func (ns *NS) StartEnv(t testing.TB, label string, env []string, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: label, cmd: ns.Command(name, args...), out: &syncBuffer{}, done: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", label, p.Output())
		}
	})
	return p
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL. It returns the exit
// error (nil for a clean exit).
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Interrupt sends SIGINT and waits up to timeout for the process to end by
// itself (ping prints its statistics on SIGINT), then stops it.
func (p *Proc) Interrupt(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Stop(time.Second)
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns everything the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitOutput waits until the output contains s, or fails the test after
// timeout (or when the process exits first).
func (p *Proc) WaitOutput(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), s) {
			return
		}
		if p.Exited() {
			t.Fatalf("%s exited before printing %q: %v\n%s", p.Name, s, p.err, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not print %q within %s\n%s", p.Name, s, timeout, p.Output())
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually polls cond every interval until it returns nil or timeout
// passes, then fails the test with the last error.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}
