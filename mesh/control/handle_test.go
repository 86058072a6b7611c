package control

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type rangeIn struct {
	Timeout time.Duration `json:"timeout"`
}

func (r rangeIn) Validate() error {
	if r.Timeout < 0 || r.Timeout > time.Hour {
		return fmt.Errorf("timeout: %s is out of range: use 0 to 1h", r.Timeout)
	}
	return nil
}

// Handle refuses, before the function sees it, anything but one JSON value
// of known fields within its range, of a bounded size.
func TestHandleDecodesStrictly(t *testing.T) {
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("POST /v1/do", Handle(func(_ context.Context, in rangeIn) (rangeIn, error) {
		calls.Add(1)
		return in, nil
	}))
	_, path := serve(t, mux)
	const js = "application/json"
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		msg               string
	}{
		{"trailing garbage", js, `{"timeout":-1}xyz`, 400, "data after the JSON value"},
		{"second value", js, `{"timeout":1} {"timeout":2}`, 400, "data after the JSON value"},
		{"out of range", js, `{"timeout":-1}`, 400, "timeout: -1ns is out of range"},
		{"absurd", js, `{"timeout":9223372036854775807}`, 400, "timeout: 2562047h47m16.854775807s is out of range"},
		{"wrong type", js, `{"timeout":"5m"}`, 400, "rangeIn.timeout"},
		{"unknown field", js, `{"timeout":1,"bogus":2}`, 400, `unknown field "bogus"`},
		{"truncated", js, `{"timeout":1`, 400, "bad request"},
		{"oversize", js, `{"timeout":1` + strings.Repeat(" ", MaxBodyBytes) + `}`, 413, "body larger than 1048576 bytes"},
		{"not json", "application/x-www-form-urlencoded", `timeout=1`, 415, "send application/json"},
	} {
		status, msg := rawPost(t, path, "/v1/do", tc.ctype, tc.body)
		if status != tc.status || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want %d and %q", tc.name, status, msg, tc.status, tc.msg)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the function ran %d times on refused requests", n)
	}
	for _, body := range []string{`{"timeout":5}`, "{\"timeout\":5}\n", ``, "  \n"} {
		if status, msg := rawPost(t, path, "/v1/do", js, body); status != 200 {
			t.Errorf("%q: %d %s", body, status, msg)
		}
	}
	if status, msg := rawPost(t, path, "/v1/do", "", `{}`); status != 200 {
		t.Errorf("no content type: %d %s", status, msg)
	}
}

// http.Server's own errors go through the agent's logger, at most a burst
// per window, and the rest are counted.
func TestServerErrorsGoThroughSlog(t *testing.T) {
	var logs logBuffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(path, mux, WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	s.log.now = func() time.Time { return time.Unix(1e9, 0) } // one window
	go s.Serve()
	defer s.Close()
	c := NewClient(path)
	const n = 20
	for range n {
		if err := c.Do(context.Background(), "GET", "/v1/panic", nil, nil); err == nil {
			t.Fatal("a panicking handler answered")
		}
	}
	s.Close()
	lines := logs.lines()
	panics, summary := 0, ""
	for _, l := range lines {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "http: panic serving") && strings.Contains(l, "boom") {
			panics++
		}
		if strings.Contains(l, "suppressed=") {
			summary = l
		}
	}
	if panics != logBurst || !strings.Contains(summary, fmt.Sprintf("suppressed=%d", n-logBurst)) {
		t.Errorf("%d panic lines (want %d) and summary %q (want suppressed=%d) in:\n%s", panics, logBurst, summary, n-logBurst, strings.Join(lines, "\n"))
	}
}

// The rate limit opens again in the next window.
func TestRateLogWindows(t *testing.T) {
	var logs logBuffer
	r := newRateLog(logs.logger())
	now := time.Unix(1e9, 0)
	r.now = func() time.Time { return now }
	for range logBurst + 3 {
		r.warn("x")
	}
	now = now.Add(logWindow)
	r.warn("y")
	want := []string{"msg=x", "msg=x", "msg=x", "msg=x", "msg=x", "suppressed=3", "msg=y"}
	got := logs.lines()
	if len(got) != len(want) {
		t.Fatalf("lines:\n%s", strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("line %d %q lacks %q", i, got[i], w)
		}
	}
}
