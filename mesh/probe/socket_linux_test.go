package probe

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDrain: drain hands every queued datagram to the handler with its
// source and TTL, and returns when the queue is empty instead of waiting.
func TestDrain(t *testing.T) {
	port := freePort(t, lo1)
	conn, err := listen(t.Context(), lo1, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	from, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo2, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	raw, err := from.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 7) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo1, port))
	for _, m := range []string{"one", "two", "three"} {
		if _, err := from.WriteToUDP([]byte(m), to); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	buf, oob := make([]byte, 512), make([]byte, oobSize)
	// Loopback delivers synchronously, so all three are queued already.
	start := time.Now()
	drain(conn, buf, oob, func(b []byte, src netip.Addr, ttl int, at time.Time) {
		if at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("receive time %v, want just before %v", at, start)
		}
		if src != lo2 || ttl != 7 {
			t.Errorf("datagram from %v with TTL %d, want %v and 7", src, ttl, lo2)
		}
		got = append(got, string(b))
	})
	if len(got) != 3 || got[0] != "one" || got[2] != "three" {
		t.Errorf("drained %q", got)
	}
}

// TestRxTime: the kernel's stamp becomes an age on the monotonic clock;
// an implausible stamp falls back to now.
func TestRxTime(t *testing.T) {
	now := time.Now()
	if got := rxTime(now.Round(0).Add(-30*time.Millisecond), now); now.Sub(got) != 30*time.Millisecond {
		t.Errorf("30 ms old stamp: %v before now", now.Sub(got))
	}
	for _, stamp := range []time.Time{{}, now.Add(time.Second), now.Add(-2 * time.Second)} {
		if got := rxTime(stamp.Round(0), now); got != now {
			t.Errorf("stamp %v: got %v, want now", stamp, got)
		}
	}
}
