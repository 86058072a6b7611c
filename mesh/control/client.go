package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// Why a client got no answer. Match them with errors.Is; every error Do
// returns without an answer from the agent is a *SocketError.
var (
	// ErrAgentUnreachable: nothing listens on the socket (the file is
	// missing, or a crashed agent left it behind).
	ErrAgentUnreachable = errors.New("the dcmesh agent is not running")
	// ErrPermissionDenied: the caller may not use the socket (it is mode
	// 0600 in a 0700 state directory: root only).
	ErrPermissionDenied = errors.New("permission denied on the control socket")
	// ErrAgentTimeout: the agent did not answer within the caller's
	// deadline.
	ErrAgentTimeout = errors.New("the dcmesh agent did not answer in time")
)

// SocketError is a request that got no answer from the agent: its state is
// unknown to the caller (`dcmesh health` exits 3 for it, except when the
// agent is plainly not running).
type SocketError struct {
	Path string
	Kind error // ErrAgentUnreachable, ErrPermissionDenied, ErrAgentTimeout, or nil: another failure
	Err  error // what the transport said
	msg  string
}

func (e *SocketError) Error() string { return e.msg }

// Is matches the error's Kind.
func (e *SocketError) Is(target error) bool { return e.Kind != nil && target == e.Kind }

func (e *SocketError) Unwrap() error { return e.Err }

// Client talks to an agent's socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path. It opens a connection
// per request: commands make one or two, and a kept-alive connection the
// agent closed (idle, or stopping) would fail the next request with an
// error that is neither an answer nor "not running".
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}}}
}

// Error is an error the agent returned.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// maxAnswerBytes bounds an answer (status of the largest mesh is far less).
const maxAnswerBytes = 16 << 20

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). Without an answer it returns a *SocketError; with an error answer
// an *Error. ctx's deadline bounds the whole exchange.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://dcmesh"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.noAnswer(ctx, start, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return c.noAnswer(ctx, start, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(raw, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("agent answered %s", resp.Status)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decode agent answer: %w", err)
		}
	}
	return nil
}

// noAnswer says why a request got no answer, naming the socket.
func (c *Client) noAnswer(ctx context.Context, start time.Time, err error) error {
	e := &SocketError{Path: c.path, Err: err}
	var op *net.OpError
	dial := errors.As(err, &op) && op.Op == "dial"
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		e.Kind = ErrAgentTimeout
		e.msg = fmt.Sprintf("%v: no answer on %s within %s (the agent is stuck or overloaded; see its log)", ErrAgentTimeout, c.path, waitedFor(ctx, start))
	case dial && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)):
		e.Kind = ErrPermissionDenied
		e.msg = fmt.Sprintf("permission denied on the control socket %s: run dcmesh as root (the socket is the agent's, mode 0600)", c.path)
	case dial && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)):
		e.Kind = ErrAgentUnreachable
		e.msg = fmt.Sprintf("%v: no control socket at %s (start it, or point --config or --socket at the right state directory)", ErrAgentUnreachable, c.path)
	case dial && errors.Is(err, syscall.ECONNREFUSED):
		e.Kind = ErrAgentUnreachable
		e.msg = fmt.Sprintf("%v: nothing listens on %s (left behind by an agent that stopped)", ErrAgentUnreachable, c.path)
	default:
		e.msg = fmt.Sprintf("control socket %s: no answer from the agent: %v", c.path, err)
	}
	return e
}

type timeoutKey struct{}

type timeoutValue struct {
	d        time.Duration
	deadline time.Time
}

// WithTimeout is context.WithTimeout whose expiry Do reports as "within
// d" exactly (the caller's --timeout), not as the time left when the
// request started.
func WithTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(d)
	return context.WithDeadline(context.WithValue(parent, timeoutKey{}, timeoutValue{d, deadline}), deadline)
}

// waitedFor is how long a request that timed out was given.
func waitedFor(ctx context.Context, start time.Time) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return time.Since(start).Round(10 * time.Millisecond)
	}
	if tv, ok := ctx.Value(timeoutKey{}).(timeoutValue); ok && tv.deadline.Equal(dl) {
		return tv.d
	}
	return dl.Sub(start).Round(10 * time.Millisecond)
}
