package control

import (
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Rate limit of the server's own log lines: a client can provoke them
// (every connection over the cap is one), so at most logBurst lines per
// logWindow get through, and the next line after a window with suppressed
// ones says how many were dropped.
const (
	logBurst  = 5
	logWindow = 10 * time.Second
)

// rateLog is the control server's logger. As an io.Writer it takes
// http.Server's ErrorLog lines, which would otherwise bypass slog.
type rateLog struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	windowFrom time.Time
	inWindow   int
	suppressed int
}

func newRateLog(l *slog.Logger) *rateLog { return &rateLog{log: l, now: time.Now} }

// Write logs one line of http.Server's ErrorLog ("http: panic serving …",
// "http: Accept error: …") at warn level.
func (r *rateLog) Write(p []byte) (int, error) {
	r.warn("control socket: http server error", "err", strings.TrimSpace(string(p)))
	return len(p), nil
}

// warn logs msg unless the window's budget is spent.
func (r *rateLog) warn(msg string, args ...any) {
	r.mu.Lock()
	now := r.now()
	if now.Sub(r.windowFrom) >= logWindow {
		r.reportSuppressedLocked()
		r.windowFrom, r.inWindow = now, 0
	}
	if r.inWindow >= logBurst {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.inWindow++
	r.mu.Unlock()
	r.log.Warn(msg, args...)
}

// flush reports lines suppressed so far (at Close).
func (r *rateLog) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reportSuppressedLocked()
}

func (r *rateLog) reportSuppressedLocked() {
	if r.suppressed > 0 {
		r.log.Warn("control socket: log lines suppressed (rate limit)", "suppressed", r.suppressed, "limit_per_window", logBurst, "window", logWindow)
		r.suppressed = 0
	}
}
