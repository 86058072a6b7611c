package gossip

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// logInterval is how often a kind of message that keeps coming is summed up.
const logInterval = time.Minute

// maxLogKeys bounds the kinds of message tracked; beyond them, messages are
// counted together as "other".
const maxLogKeys = 256

// rateLog logs the first message of each kind, then at most one summary per
// interval with the number suppressed: garbage from the network costs a few
// lines a minute, not one line per datagram.
type rateLog struct {
	out      *slog.Logger
	interval time.Duration
	now      func() time.Time // time.Now; tests set a clock

	mu      sync.Mutex
	keys    map[string]*logKind
	timer   *time.Timer
	stopped bool
}

type logKind struct {
	level      slog.Level
	msg        string // the latest of this kind, for the summary
	args       []any
	last       time.Time // logged (first occurrence or summary)
	suppressed int
}

const otherKind = "\x00other"

func newRateLog(l *slog.Logger) *rateLog {
	return &rateLog{out: l, interval: logInterval, now: time.Now, keys: map[string]*logKind{}}
}

// log logs msg unless a message of the same kind (key) was logged within
// the interval; then it is counted for the next summary.
func (r *rateLog) log(level slog.Level, key, msg string, args ...any) {
	ctx := context.Background()
	if !r.out.Enabled(ctx, level) {
		return
	}
	r.mu.Lock()
	now := r.now()
	k := r.keys[key]
	if k == nil && len(r.keys) >= maxLogKeys {
		r.prune(now)
	}
	if k == nil && len(r.keys) >= maxLogKeys {
		if k = r.keys[otherKind]; k == nil {
			k = &logKind{last: now}
			r.keys[otherKind] = k
		}
		k.level, k.msg, k.args = max(k.level, level), "gossip: messages of other kinds", nil
		k.suppressed++
		r.arm()
		r.mu.Unlock()
		return
	}
	if k == nil || k.suppressed == 0 && now.Sub(k.last) >= r.interval {
		if k == nil {
			k = &logKind{}
			r.keys[key] = k
		}
		k.level, k.last = level, now
		r.mu.Unlock()
		r.out.Log(ctx, level, msg, args...)
		return
	}
	k.level, k.msg, k.args = level, msg, args
	k.suppressed++
	r.arm()
	r.mu.Unlock()
}

// arm schedules a flush one interval from now, unless one is pending.
func (r *rateLog) arm() {
	if r.timer == nil && !r.stopped {
		r.timer = time.AfterFunc(r.interval, r.flush)
	}
}

// flush logs one summary per kind with messages suppressed.
func (r *rateLog) flush() {
	r.mu.Lock()
	r.timer = nil
	now := r.now()
	type line struct {
		level slog.Level
		msg   string
		args  []any
	}
	var lines []line
	for _, k := range r.keys {
		if k.suppressed > 0 {
			args := append([]any{"suppressed", k.suppressed, "in", r.interval.String()}, k.args...)
			lines = append(lines, line{k.level, k.msg + " (repeated)", args})
			k.suppressed, k.last = 0, now
		}
	}
	r.prune(now)
	r.mu.Unlock()
	for _, l := range lines {
		r.out.Log(context.Background(), l.level, l.msg, l.args...)
	}
}

// prune forgets kinds with nothing suppressed and not logged for an interval.
func (r *rateLog) prune(now time.Time) {
	for key, k := range r.keys {
		if k.suppressed == 0 && now.Sub(k.last) >= r.interval {
			delete(r.keys, key)
		}
	}
}

// stop logs what is still suppressed and schedules nothing more.
func (r *rateLog) stop() {
	r.mu.Lock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	r.flush()
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog,
// through the rate limiter, and counts those about bad input.
type logWriter struct {
	r         *rateLog
	malformed *atomic.Uint64
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelWarn // memberlist reports every unreachable peer as an error
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	if badInput(line) {
		w.malformed.Add(1)
	}
	w.r.log(level, logKey(line), line)
	return len(p), nil
}

// badInputs are the beginnings of memberlist's complaints about what it
// received (from a key holder: the transport refuses the rest first).
var badInputs = []string{"Failed to decode", "failed to receive", "Failed to receive", "Failed to read remote state",
	"Failed to decompress", "Received invalid msgType", "msg type (", "Message type (", "Got invalid checksum",
	"missing message type", "Decrypt packet failed", "discarding", "Compound request had",
	"failed to receive and remove the stream label header"}

func badInput(line string) bool {
	for _, p := range badInputs {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// logKey is a message with what varies between occurrences — addresses,
// numbers, names in quotes — left out, at most 100 characters.
func logKey(line string) string {
	var b strings.Builder
	for f := range strings.FieldsSeq(line) {
		if b.Len() >= 100 {
			break
		}
		if strings.ContainsFunc(f, unicode.IsDigit) || strings.ContainsAny(f[:1], `'"(`) || strings.Contains(f, "=") {
			f = "_"
		}
		b.WriteString(f)
		b.WriteByte(' ')
	}
	return b.String()
}
