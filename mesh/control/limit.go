package control

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// limitListener caps the open connections of a listener. It accepts
// eagerly (a connection left in the kernel's backlog would only make its
// client wait) and, over the cap, makes room by closing the connection that
// has waited longest without a request being served: a client that
// connects and sends nothing, or drips its header, loses its place to one
// that asks. A connection whose request is being served (a long poll
// included) is never closed for room; when every one is, the newcomer is
// refused. File descriptors and goroutines of the server stay at most cap+1.
type limitListener struct {
	net.Listener
	max int
	log *rateLog

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	refused uint64
	evicted uint64
}

// trackedConn is a connection the listener counts. serving and waitSince
// are guarded by the listener's mu.
type trackedConn struct {
	net.Conn
	l         *limitListener
	closeOnce sync.Once
	closeErr  error
	serving   bool      // a request's handler has it (markServing)
	waitSince time.Time // when it last started waiting for a request
}

func newLimitListener(ln net.Listener, max int, log *rateLog) *limitListener {
	return &limitListener{Listener: ln, max: max, log: log, conns: map[*trackedConn]struct{}{}}
}

// Accept returns the next connection within the cap. Connections over it
// are closed here and never reach the server.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, l: l, waitSince: time.Now()}
		victim, ok := l.admit(tc)
		if victim != nil {
			victim.Close()
			l.log.warn("control socket: connection limit reached; closed the connection that waited longest without a request", "limit", l.max, "evicted_total", l.stats().Evicted)
		}
		if ok {
			return tc, nil
		}
		c.Close()
		l.log.warn("control socket: connection limit reached and every connection is being served; refused a connection", "limit", l.max, "refused_total", l.stats().Refused)
	}
}

// admit counts tc in if there is room or room can be made; it returns the
// connection to close for it, if any.
func (l *limitListener) admit(tc *trackedConn) (victim *trackedConn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		for c := range l.conns {
			if !c.serving && (victim == nil || c.waitSince.Before(victim.waitSince)) {
				victim = c
			}
		}
		if victim == nil {
			l.refused++
			return nil, false
		}
		delete(l.conns, victim)
		l.evicted++
	}
	l.conns[tc] = struct{}{}
	return victim, true
}

func (l *limitListener) stats() ConnStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ConnStats{Open: len(l.conns), Refused: l.refused, Evicted: l.evicted}
}

// Close frees the connection's place.
func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

type connKey struct{}

// connContext puts the tracked connection in every request's context, for
// markServing.
func (l *limitListener) connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// connState notes when a connection goes back to waiting for a request.
func (l *limitListener) connState(c net.Conn, st http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok || st != http.StateIdle {
		return
	}
	l.mu.Lock()
	tc.serving, tc.waitSince = false, time.Now()
	l.mu.Unlock()
}

// markServing says the request in ctx has been read in full and is being
// handled: its connection is no longer a candidate to make room. It ends
// when the connection goes idle or closes.
func markServing(ctx context.Context) {
	tc, ok := ctx.Value(connKey{}).(*trackedConn)
	if !ok {
		return
	}
	tc.l.mu.Lock()
	tc.serving = true
	tc.l.mu.Unlock()
}
