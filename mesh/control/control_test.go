package control

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

type echoIn struct{ Word string }
type echoOut struct{ Echo string }

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
