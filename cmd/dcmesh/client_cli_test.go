package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

// muteSocket is a control socket whose "agent" accepts connections and
// never answers (a stuck agent).
func muteSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 100)
	t.Cleanup(func() {
		ln.Close()
		close(held)
		for c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c:
			default:
				c.Close()
			}
		}
	}()
	return path
}

// runCLIWithin runs the app in-process and fails the test if it has not
// returned within limit (a command without a timeout hangs on a mute agent).
func runCLIWithin(t *testing.T, limit time.Duration, args ...string) (string, int) {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		app := newApp()
		var out strings.Builder
		app.Writer, app.ErrWriter = &out, &out
		err := app.Run(append([]string{"dcmesh"}, args...))
		done <- result{out.String(), err}
	}()
	select {
	case r := <-done:
		code := 0
		var ec cli.ExitCoder
		if errors.As(r.err, &ec) {
			code = ec.ExitCode()
		} else if r.err != nil {
			code = 1
		}
		if r.err != nil && r.err.Error() != "" {
			r.out += "ERROR: " + r.err.Error()
		}
		return r.out, code
	case <-time.After(limit):
		t.Fatalf("dcmesh %s did not return within %s", strings.Join(args, " "), limit)
		return "", 0
	}
}

// An agent that does not answer makes health say unknown (exit 3) within
// its --timeout, and status give up with exit 3: a monitoring check
// answers instead of hanging.
func TestClientCommandsTimeOut(t *testing.T) {
	sock := muteSocket(t)
	out, code := runCLIWithin(t, 10*time.Second, "health", "--socket", sock, "--timeout", "300ms")
	want := "unknown: this site\n  the dcmesh agent did not answer in time: no answer on " + sock + " within 300ms"
	if code != 3 || !strings.HasPrefix(out, want) {
		t.Errorf("health against a mute agent: exit %d, %q; want exit 3 and %q", code, out, want)
	}
	out, code = runCLIWithin(t, 10*time.Second, "health", "--json", "--socket", sock, "--timeout", "300ms")
	var h control.Health
	if err := json.Unmarshal([]byte(out), &h); err != nil || code != 3 || h.ExitCode != 3 || h.Status != "unknown" || len(h.Reasons) != 1 {
		t.Errorf("health --json against a mute agent: exit %d, %+v (%v)", code, h, err)
	}
	for _, args := range [][]string{
		{"status", "--timeout", "300ms"},
		{"down", "--timeout", "300ms"},
		{"leave", "--timeout", "300ms"},
	} {
		out, code = runCLIWithin(t, 10*time.Second, append(args, "--socket", sock)...)
		if code != 3 || !strings.Contains(out, "no answer on "+sock+" within 300ms") {
			t.Errorf("%s against a mute agent: exit %d, %q; want exit 3 and the timeout", args[0], code, out)
		}
	}
	if _, code := runCLIWithin(t, 10*time.Second, "status", "--socket", sock, "--timeout", "0s"); code != 1 {
		t.Errorf("status --timeout 0s: exit %d, want a refusal (1)", code)
	}
}

// No agent at all is known, not unknown: health says critical (exit 2)
// and names the socket; status exits 3 (it could not show anything).
func TestHealthAgentNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	out, code := runCLIWithin(t, 10*time.Second, "health", "--socket", sock)
	want := "critical: this site\n  the dcmesh agent is not running: no control socket at " + sock
	if code != 2 || !strings.HasPrefix(out, want) {
		t.Errorf("health without an agent: exit %d, %q; want exit 2 and %q", code, out, want)
	}
	out, code = runCLIWithin(t, 10*time.Second, "status", "--socket", sock)
	if code != 3 || !strings.Contains(out, "the dcmesh agent is not running: no control socket at "+sock) {
		t.Errorf("status without an agent: exit %d, %q", code, out)
	}
	// down without an agent has nothing to do, and says so.
	if out, code := runCLIWithin(t, 10*time.Second, "down", "--socket", sock); code != 0 || !strings.Contains(out, "agent not running; nothing to stop") {
		t.Errorf("down without an agent: exit %d, %q", code, out)
	}
}

// A user other than root, against a running agent, is told permission
// denied on the socket (health: unknown, exit 3), not "not running".
func TestNonRootIsToldPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root, to run dcmesh as another user (nobody)")
	}
	bin := worldExecutable(t, dcmeshBinary(t))
	mux := http.NewServeMux()
	mux.Handle("GET /v1/health", control.Handle(func(context.Context, control.Empty) (control.Health, error) {
		return control.Health{Schema: control.StatusSchema, Status: control.Healthy, Reasons: []string{}}, nil
	}))
	sock := filepath.Join(t.TempDir(), "control.sock") // in a 0700 directory, as state_dir
	srv, err := control.Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	if out, code := runCLIWithin(t, 10*time.Second, "health", "--socket", sock); code != 0 {
		t.Fatalf("health as root: exit %d %q", code, out)
	}
	denied := "permission denied on the control socket " + sock + ": run dcmesh as root"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"health"}, "unknown: this site\n  " + denied},
		{[]string{"status"}, "dcmesh: " + denied},
		{[]string{"rotate"}, "dcmesh: " + denied},
	} {
		cmd := exec.Command(bin, append(tc.args, "--socket", sock)...)
		cmd.Dir, cmd.Env = "/", []string{"PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.HasPrefix(string(out), tc.want) {
			t.Errorf("%s as nobody: %v, %q; want exit 3 and %q", tc.args[0], err, out, tc.want)
		}
	}
}

// worldExecutable copies a binary where any user can run it (the test
// build directory is 0700).
func worldExecutable(t *testing.T, bin string) string {
	t.Helper()
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "dcmesh-cli-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dcmesh")
	if err := os.WriteFile(dst, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// examples/check-dcmesh.sh maps "cannot check" to UNKNOWN (3) with the
// reason, and a missing agent to CRITICAL (2).
func TestCheckScriptUnknown(t *testing.T) {
	bin := dcmeshBinary(t)
	run := func(args ...string) (string, int) {
		cmd := exec.Command("../../examples/check-dcmesh.sh", args...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	_, hasJQ := exec.LookPath("jq")
	out, code := run("--socket", muteSocket(t), "--timeout", "300ms")
	if code != 3 || !strings.HasPrefix(out, "UNKNOWN - dcmesh") || hasJQ == nil && !strings.Contains(out, "did not answer in time") {
		t.Errorf("mute agent: exit %d, %q; want 3 and UNKNOWN with the reason", code, out)
	}
	out, code = run("--socket", filepath.Join(t.TempDir(), "control.sock"))
	if code != 2 || !strings.HasPrefix(out, "CRITICAL - dcmesh") {
		t.Errorf("no agent: exit %d, %q; want 2 and CRITICAL", code, out)
	}
}
