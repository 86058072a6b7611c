package control

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Bounds of the control socket. Its clients are root's commands and
// monitoring checks: a few at a time, each one or two small requests.
const (
	// MaxConns is the default cap on open connections (WithMaxConns).
	MaxConns = 64
	// ReadHeaderTimeout: a request's header must have arrived by then.
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout bounds reading a whole request, header and body.
	ReadTimeout = 10 * time.Second
	// RequestTimeout bounds handling a request and writing its answer
	// (http.Server's WriteTimeout, and the handler's context in Handle).
	RequestTimeout = 30 * time.Second
	// LongPollMargin is added to what a long poll asks for
	// (ResponseWithin): the agent answers at the end of the wait, and
	// the answer still has to be written.
	LongPollMargin = 10 * time.Second
	// IdleTimeout closes a kept-alive connection with no request.
	IdleTimeout = 30 * time.Second
	// MaxHeaderBytes bounds a request's header; ours are a few lines.
	MaxHeaderBytes = 16 << 10
	// MaxBodyBytes bounds a request body (a revocation list is the
	// largest); more is refused with 413.
	MaxBodyBytes = 1 << 20
)

// Server serves a handler on a unix socket.
type Server struct {
	path string
	ln   *limitListener
	srv  *http.Server
	log  *rateLog
}

// Option changes how Listen serves.
type Option func(*options)

type options struct {
	log      *slog.Logger
	maxConns int
	limits   limits
}

// limits are the server's timeouts: the constants, shorter in tests.
type limits struct {
	readHeader, read, request, longPollMargin, idle time.Duration
}

var defaultLimits = limits{
	readHeader: ReadHeaderTimeout, read: ReadTimeout, request: RequestTimeout,
	longPollMargin: LongPollMargin, idle: IdleTimeout,
}

type limitsKey struct{}

// limitsFrom returns the limits of the server a request came to.
func limitsFrom(ctx context.Context) limits {
	if l, ok := ctx.Value(limitsKey{}).(limits); ok {
		return l
	}
	return defaultLimits
}

// withLimits replaces the timeouts (tests).
func withLimits(l limits) Option { return func(o *options) { o.limits = l } }

// WithLogger sends the server's own messages (http.Server's errors,
// refused and evicted connections) to l, rate-limited. The default is
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMaxConns caps open connections at n (default MaxConns).
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// Listen creates the socket at path (mode 0600). A leftover socket from a
// crashed agent is replaced; a socket another process still serves is not.
func Listen(path string, h http.Handler, opts ...Option) (*Server, error) {
	o := options{log: slog.Default(), maxConns: MaxConns, limits: defaultLimits}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.maxConns < 1 {
		return nil, fmt.Errorf("control socket: a connection cap of %d leaves no room for a client: use at least 1", o.maxConns)
	}
	// sun_path holds 108 bytes with the terminating NUL.
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than a unix socket allows (107): use a shorter state_dir", path, len(path))
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use: is another agent running with this state directory?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	old := syscall.Umask(0o077) // the socket is created 0600, never briefly wider
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	rl := newRateLog(o.log)
	ll := newLimitListener(ln, o.maxConns, rl)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.limits.readHeader,
		ReadTimeout:       o.limits.read,
		WriteTimeout:      o.limits.request,
		IdleTimeout:       o.limits.idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          log.New(rl, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return ll.connContext(context.WithValue(ctx, limitsKey{}, o.limits), c)
		},
		ConnState: ll.connState,
	}
	return &Server{path: path, ln: ll, srv: srv, log: rl}, nil
}

// Serve answers requests until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops serving (waiting up to 5 s for requests in flight, then
// cutting the rest, long polls included) and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	_ = os.Remove(s.path)
	s.log.flush()
	return err
}

// ConnStats counts the socket's connections.
type ConnStats struct {
	Open    int    // open now (at most the cap)
	Refused uint64 // closed at once: the cap was reached and every connection was being served
	Evicted uint64 // closed to make room for a newer one, while waiting without a request being served
}

// Stats returns the connection counters since Listen.
func (s *Server) Stats() ConnStats { return s.ln.stats() }
