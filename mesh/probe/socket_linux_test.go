package probe

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDrain: drain hands every queued datagram to the handler with its
// source and TTL, and returns when the queue is empty instead of waiting.
func TestDrain(t *testing.T) {
	port := freePort(t, lo1)
	conn, err := openSocket(t.Context(), lo1, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.close()
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
	conn.drain(buf, oob, func(b []byte, src netip.Addr, ttl int, at time.Time) {
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

// TestSteer: the reuseport program puts an Up packet without Poll in the
// bulk socket (nothing wakes for it) and everything else - a Poll, a state
// other than Up - in the urgent one; a second Prober on the same address
// and port is still refused.
func TestSteer(t *testing.T) {
	port := freePort(t, lo1)
	s, err := openSocket(t.Context(), lo1, port)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if s.bulk < 0 {
		t.Fatalf("no bulk socket: %v", s.bulkErr)
	}
	if other, err := openSocket(t.Context(), lo1, port); err == nil {
		other.close()
		t.Fatal("a second socket pair on the same address and port was allowed")
	}
	from, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo2, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo1, port))
	pkt := func(st State, poll, final bool) []byte {
		p := Packet{State: st, Poll: poll, Final: final, DetectMult: 3, MyDiscr: 1, DesiredMinTxUS: 1, RequiredMinRxUS: 1}
		return p.Append(nil)
	}
	sent := map[string][]byte{
		"up":       pkt(StateUp, false, false),
		"up final": pkt(StateUp, false, true),
		"up poll":  pkt(StateUp, true, false),
		"init":     pkt(StateInit, false, false),
		"down":     pkt(StateDown, false, false),
		"admin":    pkt(StateAdminDown, false, false),
	}
	for _, b := range sent {
		if _, err := from.WriteToUDP(b, to); err != nil {
			t.Fatal(err)
		}
	}
	name := func(b []byte) string {
		for n, p := range sent {
			if string(p) == string(b) {
				return n
			}
		}
		return fmt.Sprintf("%x", b)
	}
	// Loopback delivers synchronously: everything is queued already.
	buf, oob := make([]byte, 512), make([]byte, oobSize)
	var bulk, urgent []string
	s.drainBulk(buf, oob, func(b []byte, _ netip.Addr, _ int, _ time.Time) { bulk = append(bulk, name(b)) })
	s.drain(buf, oob, func(b []byte, _ netip.Addr, _ int, _ time.Time) { urgent = append(urgent, name(b)) })
	slices.Sort(bulk)
	slices.Sort(urgent)
	if !slices.Equal(bulk, []string{"up", "up final"}) || !slices.Equal(urgent, []string{"admin", "down", "init", "up poll"}) {
		t.Errorf("bulk got %q, urgent %q; want [up, up final] and [admin, down, init, up poll]", bulk, urgent)
	}
}
