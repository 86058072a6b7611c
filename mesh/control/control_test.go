package control

import (
	"context"
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
)

func TestRoundTripAndErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	mux := http.NewServeMux()
	mux.Handle("POST /v1/echo", Handle(func(_ context.Context, in echoIn) (echoOut, error) {
		if in.Word == "" {
			return echoOut{}, errors.New("say something")
		}
		return echoOut{Echo: in.Word}, nil
	}))
	s, err := Listen(path, mux)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %04o, want 0600", st.Mode().Perm())
	}
	if _, err := Listen(path, mux); err == nil {
		t.Error("a second server took over a live socket")
	}
	c := NewClient(path)
	var out echoOut
	if err := c.Do(context.Background(), "POST", "/v1/echo", echoIn{"hi"}, &out); err != nil || out.Echo != "hi" {
		t.Fatalf("echo: %+v %v", out, err)
	}
	var ae *Error
	if err := c.Do(context.Background(), "POST", "/v1/echo", echoIn{}, &out); !errors.As(err, &ae) || ae.Message != "say something" {
		t.Errorf("error: %v", err)
	}
	if err := c.Do(context.Background(), "POST", "/v1/echo", map[string]int{"Bogus": 1}, &out); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("unknown field: %v", err)
	}
	s.Close()
	// The client keeps no connection: after Close every request dials
	// anew and finds nothing, never "server closed idle connection".
	if err := c.Do(context.Background(), "POST", "/v1/echo", echoIn{"hi"}, &out); !errors.Is(err, ErrAgentUnreachable) {
		t.Errorf("after close: %v", err)
	}
	// A stale socket file (agent crashed) is replaced.
	s2, err := Listen(path, mux)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s2.Close()
}

// Why there is no answer is told apart, and the socket named: no socket
// file, a socket file nobody serves, an agent that does not answer in time.
func TestClientSaysWhyThereIsNoAnswer(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	err := NewClient(missing).Do(context.Background(), "GET", "/v1/status", nil, nil)
	if !errors.Is(err, ErrAgentUnreachable) || !strings.Contains(err.Error(), "no control socket at "+missing) {
		t.Errorf("missing socket: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // as a crashed agent leaves it
	ln.Close()
	err = NewClient(stale).Do(context.Background(), "GET", "/v1/status", nil, nil)
	if !errors.Is(err, ErrAgentUnreachable) || !strings.Contains(err.Error(), "nothing listens on "+stale) {
		t.Errorf("stale socket: %v", err)
	}

	// Accepts, reads, never answers (a stuck agent).
	mute := filepath.Join(dir, "mute.sock")
	mln, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer mln.Close()
	go func() {
		for {
			c, err := mln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = NewClient(mute).Do(ctx, "GET", "/v1/status", nil, nil)
	var se *SocketError
	if !errors.Is(err, ErrAgentTimeout) || !errors.As(err, &se) || !strings.Contains(err.Error(), "within 200ms") || !strings.Contains(err.Error(), mute) {
		t.Errorf("mute agent: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout does not wrap the context's error: %v", err)
	}
}

// helperSocketEnv names the socket the helper process dials.
const helperSocketEnv = "DCMESH_CONTROL_TEST_DIAL"

// TestHelperDial is not a test: run with helperSocketEnv set (by
// TestPermissionDeniedIsReported, as another user), it dials the socket
// and prints the client's error.
func TestHelperDial(t *testing.T) {
	sock := os.Getenv(helperSocketEnv)
	if sock == "" {
		t.Skip("helper process for TestPermissionDeniedIsReported")
	}
	err := NewClient(sock).Do(context.Background(), "POST", "/v1/echo", echoIn{"hi"}, nil)
	kind := "other"
	switch {
	case errors.Is(err, ErrPermissionDenied):
		kind = "permission"
	case errors.Is(err, ErrAgentUnreachable):
		kind = "unreachable"
	case err == nil:
		kind = "answered"
	}
	os.Stdout.WriteString("KIND=" + kind + "\nERR=" + errString(err) + "\n")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A user other than root gets "permission denied" against a running agent,
// not "not running": both where the state directory keeps them out (0700)
// and where only the socket's own mode (0600) does.
func TestPermissionDeniedIsReported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root, to run the client as another user (nobody)")
	}
	bin := copyExecutable(t)
	_, inPrivateDir := serve(t, echoMux())
	open := worldReadableDir(t)
	inOpenDir := filepath.Join(open, "control.sock")
	s, err := Listen(inOpenDir, echoMux())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	for _, sock := range []string{inPrivateDir, inOpenDir} {
		cmd := exec.Command(bin, "-test.run=^TestHelperDial$", "-test.count=1")
		cmd.Dir = "/"
		cmd.Env = []string{helperSocketEnv + "=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as nobody: %v\n%s", err, out)
		}
		want := "ERR=permission denied on the control socket " + sock + ": run dcmesh as root"
		if !strings.Contains(string(out), "KIND=permission\n") || !strings.Contains(string(out), want) {
			t.Errorf("dialing %s as nobody:\n%s\nwant KIND=permission and %q", sock, out, want)
		}
	}
}

// worldReadableDir is a temporary directory every user may enter
// (t.TempDir's are 0700).
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dcmesh-control-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyExecutable copies this test binary where another user can run it.
func copyExecutable(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(worldReadableDir(t), "control.test")
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
