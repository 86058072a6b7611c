package main

// The systemd unit's SystemCallFilter= must not break the agent. This
// machine (and CI) may have no systemd as PID 1, so the filter is applied
// the way systemd would apply it with SystemCallErrorNumber=EPERM, by strace:
// every system call outside the unit's set is traced, fails with EPERM and
// is logged. Real agents then go through start, traffic, a rotation, a
// reload, status, metrics, leave, down and a restart, and must not make a
// single call outside the set.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const unitFile = "../../examples/dcmesh.service"

// unitValues returns the values of every KEY= line of a unit file, in order.
func unitValues(t testing.TB, path, key string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// syscallGroup expands a systemd system call group (@name) into system call
// names, recursively, as `systemd-analyze syscall-filter` lists it.
func syscallGroup(t testing.TB, group string, seen map[string]bool) []string {
	t.Helper()
	if seen[group] {
		return nil
	}
	seen[group] = true
	out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager", group).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", group, err)
	}
	var names []string
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != group {
		t.Fatalf("systemd-analyze syscall-filter %s printed:\n%s", group, out)
	}
	for _, l := range lines[1:] {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "@"):
			names = append(names, syscallGroup(t, l, seen)...)
		default:
			names = append(names, l)
		}
	}
	return names
}

// unitSyscallFilter returns the system calls the unit's SystemCallFilter=
// lines allow, combined as systemd.exec(5) says: the first line is an allow
// list (this helper supports no other), later lines add, "~" lines remove,
// an empty assignment resets; @default and the calls the manual lists as
// implicitly allowed are always in.
func unitSyscallFilter(t testing.TB, path string) map[string]bool {
	t.Helper()
	lines := unitValues(t, path, "SystemCallFilter")
	if len(lines) == 0 {
		t.Fatalf("%s has no SystemCallFilter=", path)
	}
	if got := unitValues(t, path, "SystemCallErrorNumber"); len(got) != 1 || got[0] != "EPERM" {
		t.Fatalf("%s: SystemCallErrorNumber= %q; this test emulates EPERM", path, got)
	}
	allowed := map[string]bool{}
	implicit := append([]string{"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"},
		syscallGroup(t, "@default", map[string]bool{})...)
	for i, line := range lines {
		if line == "" {
			allowed = map[string]bool{}
			continue
		}
		deny := strings.HasPrefix(line, "~")
		if i == 0 && deny {
			t.Fatalf("%s: the first SystemCallFilter= is a deny list; the unit should allow-list", path)
		}
		for _, name := range strings.Fields(strings.TrimPrefix(line, "~")) {
			name, _, _ = strings.Cut(name, ":") // a per-call errno
			names := []string{name}
			if strings.HasPrefix(name, "@") {
				names = syscallGroup(t, name, map[string]bool{})
			}
			for _, n := range names {
				allowed[n] = !deny
			}
		}
	}
	for _, n := range implicit {
		allowed[n] = true
	}
	for n, ok := range allowed {
		if !ok {
			delete(allowed, n)
		}
	}
	return allowed
}

// straceWrapper writes a stand-in for the dcmesh binary: `agent` runs under
// strace, which fails every system call outside allowed with EPERM and logs
// it to logDir/agent.PID; every other command runs the real binary as is.
// strace -D keeps the agent's PID (signals reach it directly), and
// --seccomp-bpf stops the agent only on the calls outside the set.
func straceWrapper(t testing.TB, real, logDir string, allowed map[string]bool) string {
	t.Helper()
	names := make([]string, 0, len(allowed))
	for n := range allowed {
		names = append(names, "?"+n) // ?: a name this strace does not know (another arch) is ignored
	}
	sort.Strings(names)
	set := "!" + strings.Join(names, ",")
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = agent ]; then
  exec strace -f -qqq -D --seccomp-bpf -e signal=none -o %q/agent.$$ -e trace=%q -e inject=%q:error=EPERM -- %q "$@"
fi
exec %q "$@"
`, logDir, set, set, real, real)
	path := filepath.Join(t.TempDir(), "dcmesh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// deniedCalls reads the strace logs: one line per call outside the filter.
func deniedCalls(t testing.TB, logDir string) (map[string]int, []string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(logDir, "agent.*"))
	counts := map[string]int{}
	var examples []string
	for _, l := range logs {
		raw, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			f := strings.Fields(sc.Text()) // PID call(args) = -1 EPERM ... (INJECTED)
			// Only calls that were made and failed count. A thread that
			// strace catches as the process exits is logged as
			// "PID ???( <detached ...>": no call, no result (it failed a
			// loaded CI run once, at an agent's exit).
			if len(f) < 2 || !strings.Contains(sc.Text(), "EPERM") {
				continue
			}
			call, _, _ := strings.Cut(f[1], "(")
			if counts[call] == 0 {
				examples = append(examples, filepath.Base(l)+": "+sc.Text())
			}
			counts[call]++
		}
	}
	return counts, examples
}

// The emulation itself works: take out of the set a call the Go runtime
// makes at start (sched_getaffinity, to count CPUs; it copes with EPERM) and
// the log names it. Without this, an empty log could mean strace never ran.
func TestStraceWrapperRefusesCallsOutsideTheSet(t *testing.T) {
	requireTool(t, "strace", "systemd-analyze")
	allowed := unitSyscallFilter(t, unitFile)
	for call, want := range map[string]bool{"socket": true, "ioctl": true, "sched_getaffinity": true,
		"mount": false, "setrlimit": false, "bpf": false, "init_module": false} {
		if allowed[call] != want {
			t.Errorf("the unit's filter allows %s: %v, want %v", call, allowed[call], want)
		}
	}
	delete(allowed, "sched_getaffinity")
	logDir := t.TempDir()
	w := straceWrapper(t, dcmeshBinary(t), logDir, allowed)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if out, err := exec.Command(w, "agent", "--config", missing).CombinedOutput(); err == nil || !strings.Contains(string(out), "missing.yaml") {
		t.Fatalf("agent with a missing configuration, under strace: %v\n%s", err, out)
	}
	if counts, ex := deniedCalls(t, logDir); counts["sched_getaffinity"] == 0 {
		t.Fatalf("sched_getaffinity was taken out of the set but strace logged no refusal: %v\n%s", counts, strings.Join(ex, "\n"))
	}
}

func TestAgentSyscallsInUnitFilter(t *testing.T) {
	requireTool(t, "strace", "systemd-analyze", "curl")
	allowed := unitSyscallFilter(t, unitFile)
	real := dcmeshBinary(t)
	logDir := t.TempDir()
	t.Setenv("DCMESH_BIN", straceWrapper(t, real, logDir, allowed))

	m, _ := newGossipMesh(t, 3)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]
	s1.agentArgs = []string{"--metrics-addr", "127.0.0.1:9469"}
	m.startAll()
	m.waitFullMesh(m.sites...)
	for _, o := range []*site{s2, s3} {
		if err := s1.ping(o, 3); err != nil {
			t.Fatal(err)
		}
	}
	if out := m.cli("rotate", "--wait", "--config", s1.cfgPath); !strings.Contains(out, "complete") {
		t.Fatalf("rotation: %s", out)
	}
	if err := s1.ping(s2, 3); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if scrape := s1.ns.Run(t, "curl", "-sf", "http://127.0.0.1:9469/metrics"); !strings.Contains(scrape, "dcmesh_key_epoch 1") {
		t.Errorf("scrape after the rotation:\n%s", grepLines(scrape, "dcmesh_key"))
	}
	if err := s2.agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s2.agent.WaitOutput(t, "configuration reloaded", 10*time.Second)
	m.cli("status", "--config", s2.cfgPath)
	m.cli("leave", "--config", s3.cfgPath)
	m.cli("down", "--config", s2.cfgPath)
	for _, s := range []*site{s2, s3} {
		waitFor(t, 15*time.Second, s.name+"'s agent stops", func() error {
			if !s.agent.Exited() {
				return fmt.Errorf("still running")
			}
			return nil
		})
	}
	// Stopped by SIGTERM, as systemctl stop does, then started again on the
	// state it left: the restart path reads every state file.
	if err := s1.agent.Stop(15 * time.Second); err != nil {
		t.Errorf("agent stopped by SIGTERM: %v\n%s", err, s1.agent.Output())
	}
	s1.start()
	if err := s1.agent.Stop(15 * time.Second); err != nil {
		t.Errorf("restarted agent stopped by SIGTERM: %v", err)
	}

	logs, _ := filepath.Glob(filepath.Join(logDir, "agent.*"))
	if len(logs) != 4 {
		t.Fatalf("%d strace logs for 4 agent runs: did strace run? %v", len(logs), logs)
	}
	if counts, ex := deniedCalls(t, logDir); len(counts) > 0 {
		t.Errorf("the agent made system calls outside the unit's SystemCallFilter (they failed with EPERM): %v\n%s\n"+
			"allow them in %s (with a comment saying why) or stop making them",
			counts, strings.Join(ex, "\n"), unitFile)
	}
}
