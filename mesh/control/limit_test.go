package control

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A crowd of local clients that connect and send nothing, or drip their
// header a byte at a time, holds at most the cap of the server's
// connections (file descriptors), and a client that asks is still answered
// within a second.
func TestSlowClientsCannotExhaustTheServer(t *testing.T) {
	const max, silent, dripping = 8, 200, 20
	s, path := serve(t, echoMux(), WithMaxConns(max), WithLogger(quiet))
	before := openFDs(t)

	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range silent {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	stop, started := make(chan struct{}), make(chan struct{}, dripping)
	defer close(stop)
	for range dripping {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		go drip(c, stop, started)
	}
	// The last max drippers keep their place until the well-behaved
	// client takes one: wait until they are into their header.
	for range max {
		select {
		case <-started:
		case <-time.After(ReadHeaderTimeout):
			t.Fatal("the dripping clients did not get to write")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var out echoOut
	if err := NewClient(path).Do(ctx, "POST", "/v1/echo", echoIn{"hi"}, &out); err != nil || out.Echo != "hi" {
		t.Fatalf("a well-behaved client behind %d slow ones: %+v %v", silent+dripping, out, err)
	}
	// Connections are accepted in order: the answer means every slow one
	// was accepted (and kept or closed) before.
	st := s.Stats()
	if st.Open > max || st.Evicted < silent+dripping+1-max {
		t.Errorf("stats %+v: want at most %d open and at least %d evicted", st, max, silent+dripping+1-max)
	}
	// This process holds both ends: the clients' (silent+dripping) and the
	// server's, which must be at most the cap.
	if got, limit := openFDs(t)-before, silent+dripping+max+2; got > limit {
		t.Errorf("%d file descriptors more than before, want at most %d: the server holds more connections than its cap of %d", got, limit, max)
	}
}

// drip writes a request header a byte every 20 ms, never finishing it,
// until stop or the server closes the connection. It signals started after
// 5 bytes.
func drip(c net.Conn, stop, started chan struct{}) {
	header := "POST /v1/echo HTTP/1.1\r\nHost: dcmesh\r\nX-Slow: " + strings.Repeat("a", 1000)
	for i := 0; i < len(header); i++ {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := c.Write([]byte{header[i]}); err != nil {
			return
		}
		if i == 4 {
			started <- struct{}{}
		}
	}
}

// A connection whose request is being served (a long poll) is never closed
// to make room; when every one is, a newcomer is refused and counted.
func TestServedConnectionsAreNotEvicted(t *testing.T) {
	const max = 2
	release := make(chan struct{})
	entered := make(chan struct{}, max)
	mux := echoMux()
	mux.Handle("POST /v1/wait", Handle(func(ctx context.Context, in echoIn) (echoOut, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return echoOut{Echo: in.Word}, nil
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
	}))
	s, path := serve(t, mux, WithMaxConns(max), WithLogger(quiet))
	c := NewClient(path)
	results := make(chan error, max)
	for range max {
		go func() {
			var out echoOut
			err := c.Do(context.Background(), "POST", "/v1/wait", echoIn{"done"}, &out)
			if err == nil && out.Echo != "done" {
				err = errors.New("wrong answer " + out.Echo)
			}
			results <- err
		}()
	}
	for range max {
		<-entered
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Do(ctx, "POST", "/v1/echo", echoIn{"hi"}, nil)
	var se *SocketError
	if !errors.As(err, &se) {
		t.Errorf("a request over the cap with every connection served: %v, want no answer", err)
	}
	if st := s.Stats(); st.Refused != 1 || st.Evicted != 0 || st.Open != max {
		t.Errorf("stats %+v: want 1 refused, none evicted, %d open", st, max)
	}
	close(release)
	for range max {
		if err := <-results; err != nil {
			t.Errorf("a served request was cut: %v", err)
		}
	}
}

var quiet = slog.New(slog.DiscardHandler)

type pollIn struct {
	Wait time.Duration
}

func (p pollIn) ResponseWithin() time.Duration { return p.Wait }

// A long poll is answered after longer than the server's read and write
// timeouts (which would otherwise cancel its context and cut its answer);
// an ordinary request that takes too long gets 503 at its deadline.
func TestLongPollOutlivesServerTimeouts(t *testing.T) {
	lim := limits{readHeader: 100 * time.Millisecond, read: 100 * time.Millisecond, request: 200 * time.Millisecond, longPollMargin: 500 * time.Millisecond, idle: time.Second}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/poll", Handle(func(ctx context.Context, in pollIn) (echoOut, error) {
		select {
		case <-time.After(in.Wait):
			return echoOut{Echo: "waited"}, nil
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
	}))
	_, path := serve(t, mux, withLimits(lim))
	c := NewClient(path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out echoOut
	start := time.Now()
	if err := c.Do(ctx, "POST", "/v1/poll", pollIn{Wait: 600 * time.Millisecond}, &out); err != nil || out.Echo != "waited" {
		t.Fatalf("long poll past the read (100ms) and write (200ms) timeouts: %+v %v", out, err)
	}
	if took := time.Since(start); took < 600*time.Millisecond {
		t.Errorf("long poll answered after %s, before its wait", took)
	}

	// Not a long poll: the handler's context ends at the request bound.
	mux.Handle("POST /v1/slow", Handle(func(ctx context.Context, _ echoIn) (echoOut, error) {
		<-ctx.Done()
		return echoOut{}, ctx.Err()
	}))
	var ae *Error
	err := c.Do(ctx, "POST", "/v1/slow", echoIn{}, &out)
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "within 200ms") {
		t.Errorf("a request past its bound: %v", err)
	}
}
