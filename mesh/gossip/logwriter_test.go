package gossip

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// captureLog records every log line (all levels).
type captureLog struct {
	mu    sync.Mutex
	lines []string
}

func (h *captureLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}
func (h *captureLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureLog) WithGroup(string) slog.Handler      { return h }

func (h *captureLog) snapshot() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

func (h *captureLog) count(substr string) int {
	n := 0
	for _, l := range h.snapshot() {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// waitCount waits until f() reaches want, failing with what it reached.
func waitCount(t *testing.T, what string, want uint64, f func() uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d counted, want %d", what, f(), want)
		}
		time.Sleep(2 * time.Millisecond) // polling a counter
	}
}

// Issue 15 item 4: every garbage datagram and connection made memberlist
// log a line (150,000 in 30 s). Now each is counted, and logged only as the
// first of its kind.
func TestGarbageIsCountedNotLogged(t *testing.T) {
	logs := &captureLog{}
	k := key(t)
	a := startNode(t, Config{NodeName: "a", SecretKey: k, Logger: slog.New(logs)})
	base := len(logs.snapshot())

	udp, err := net.Dial("udp", a.cfg.Advertise.String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	const datagrams, batch = 3000, 100
	for i := 0; i < datagrams; i += batch {
		for j := range batch {
			b := make([]byte, 64+(i+j)%900)
			_, _ = rand.Read(b)
			switch j % 3 {
			case 1: // our label, then garbage
				b = append(labelHeader(testLabel), b...)
			case 2: // our label and encryption version, not our key
				b = append(append(labelHeader(testLabel), encVersion), b...)
			}
			if _, err := udp.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		// Wait for the node to take the batch: more at once would overflow
		// the socket's buffer, and the kernel's drops are not ours to count.
		waitCount(t, "datagrams", uint64(i+batch), a.Malformed)
	}

	const streams, perBatch = 300, 20
	for i := 0; i < streams; i += perBatch {
		for j := range perBatch {
			c, err := dialFrom(fmt.Sprintf("127.0.0.%d", 2+j), a.cfg.Advertise)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 200)
			_, _ = rand.Read(b)
			if j%2 == 1 { // a well-formed header, a body not sealed with our key
				b = append(streamHeader(200), append([]byte{encVersion}, b[1:]...)...)
			}
			_, _ = c.Write(b)
			c.Close()
		}
		waitCount(t, "streams", uint64(datagrams+i+perBatch), a.Malformed)
	}
	if got := a.Malformed(); got != datagrams+streams {
		t.Errorf("Malformed() = %d, want %d", got, datagrams+streams)
	}
	if r := a.Refused(); r.Malformed+r.Unauthenticated != streams {
		t.Errorf("streams refused %+v, want %d malformed or not sealed", r, streams)
	}
	lines := logs.snapshot()[base:]
	if len(lines) > 10 {
		t.Errorf("%d garbage inputs logged %d lines, want at most 10:\n%s", datagrams+streams, len(lines), strings.Join(lines, "\n"))
	}

	// What a member does is still logged, at once.
	b := newNode(t, "b", k, a.cfg.Advertise.String())
	certify(a, b)
	deadline := time.Now().Add(10 * time.Second)
	for logs.count("gossip member joined member=b") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("b's join not logged: %v", logs.snapshot()[base:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRateLogSumsUp(t *testing.T) {
	logs := &captureLog{}
	r := newRateLog(slog.New(logs))
	clock := time.Now()
	r.now = func() time.Time { return clock } // under r.mu
	defer r.stop()
	var malformed atomic.Uint64
	w := &logWriter{r: r, malformed: &malformed}
	for i := range 10000 {
		fmt.Fprintf(w, "[ERR] memberlist: Failed to decode ping request: EOF from=192.0.2.%d:%d\n", i%250, 1000+i)
	}
	if got := logs.count("Failed to decode ping request"); got != 1 {
		t.Fatalf("%d lines for 10,000 of one kind, want 1 before the summary", got)
	}
	r.flush() // what the timer does after an interval
	if got := logs.count("(repeated) suppressed=9999 in=1m0s"); got != 1 {
		t.Fatalf("no summary: %v", logs.snapshot())
	}
	if malformed.Load() != 10000 {
		t.Errorf("counted %d bad inputs, want 10000", malformed.Load())
	}
	// Within the interval after a summary, another is only counted; after a
	// quiet interval, the next is logged again.
	fmt.Fprintf(w, "[ERR] memberlist: Failed to decode ping request: EOF from=192.0.2.1:1\n")
	if got := logs.count("Failed to decode ping request"); got != 2 {
		t.Errorf("%d lines of the kind, want 2 (first, summary)", got)
	}
	r.flush()
	if got := logs.count("(repeated) suppressed=1 in=1m0s"); got != 1 {
		t.Fatalf("no summary of one: %v", logs.snapshot())
	}
	r.mu.Lock()
	clock = clock.Add(2 * logInterval)
	r.mu.Unlock()
	fmt.Fprintf(w, "[ERR] memberlist: Failed to decode ping request: EOF from=192.0.2.1:1\n")
	if got := logs.count("Failed to decode ping request"); got != 4 {
		t.Errorf("%d lines of the kind, want 4 (first, summary, summary of one, first again): %v", got, logs.snapshot())
	}

	// Kinds are bounded: distinct messages beyond maxLogKeys are summed up
	// together.
	before := len(logs.snapshot())
	for i := range 5000 {
		fmt.Fprintf(w, "[WARN] memberlist: %s\n", strings.Repeat(string(rune('a'+i%26)), 1+i/26))
	}
	r.mu.Lock()
	kinds := len(r.keys)
	r.mu.Unlock()
	if kinds > maxLogKeys+1 {
		t.Errorf("%d kinds tracked, more than %d", kinds, maxLogKeys+1)
	}
	if got := len(logs.snapshot()) - before; got > maxLogKeys {
		t.Errorf("5,000 distinct messages logged %d lines, more than %d", got, maxLogKeys)
	}
}

func TestLogKey(t *testing.T) {
	for _, c := range [][2]string{
		{"Failed to decode ping request: EOF from=192.0.2.1:5000", "Failed to decode ping request: EOF _ "},
		{"Got ping for unexpected node 'ghost-17' from=[::1]:4", "Got ping for unexpected node _ _ "},
		{"Conflicting address for b. Mine: 127.0.0.1:1 Theirs: 127.0.0.2:2 Old state: 0", "Conflicting address for b. Mine: _ Theirs: _ Old state: _ "},
	} {
		if got := logKey(c[0]); got != c[1] {
			t.Errorf("logKey(%q) = %q, want %q", c[0], got, c[1])
		}
	}
}
