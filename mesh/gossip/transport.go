package gossip

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

type inputCounters struct {
	streams  [numReasons]atomic.Uint64
	bytesCut atomic.Uint64
	packets  atomic.Uint64 // datagrams refused (any reason)
	reported atomic.Uint64 // input errors memberlist logged (authenticated garbage)
	unreach  atomic.Uint64 // sends refused: a certified name at another address
}

// guard is a memberlist transport wrapped around another (memberlist's own
// NetTransport in production) that screens every inbound stream and
// datagram and budgets what they may cost; see the package comment.
type guard struct {
	inner memberlist.NodeAwareTransport
	lim   StreamLimits
	scr   screener
	// certified tells whether an address is a certified site's or ours;
	// addrOf gives a certified name's roster address.
	certified func(netip.Addr) bool
	addrOf    func(name string) (netip.AddrPort, bool)
	c         *inputCounters
	logs      *rateLog

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{} // closed when Shutdown begins: stop forwarding
	drained chan struct{} // closed when the inner transport stopped
	once    sync.Once

	mu        sync.Mutex
	active    int
	strangers int
	perSource map[netip.Addr]int
	inflight  int64
	strangerB int64
	conns     map[*guardConn]struct{}
}

var _ memberlist.NodeAwareTransport = (*guard)(nil)

func newGuard(inner memberlist.Transport, lim StreamLimits, scr screener, c *inputCounters, logs *rateLog,
	certified func(netip.Addr) bool, addrOf func(string) (netip.AddrPort, bool)) *guard {
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		na = &nodeAwareShim{inner}
	}
	t := &guard{inner: na, lim: lim, scr: scr, certified: certified, addrOf: addrOf, c: c, logs: logs,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		done: make(chan struct{}), drained: make(chan struct{}),
		perSource: map[netip.Addr]int{}, conns: map[*guardConn]struct{}{}}
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

// nodeAwareShim is memberlist's shimNodeAwareTransport (unexported there).
type nodeAwareShim struct{ memberlist.Transport }

func (s *nodeAwareShim) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return s.WriteTo(b, a.Addr)
}
func (s *nodeAwareShim) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	return s.DialTimeout(a.Addr, d)
}

func (t *guard) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}
func (t *guard) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *guard) StreamCh() <-chan net.Conn           { return t.streams }

func (t *guard) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress drops, as if sent, a packet for a certified name at an
// address the roster does not give it: an error would make memberlist give
// up the probe instead of suspecting the squatter.
func (t *guard) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if !t.mayReach(a) {
		return time.Now(), nil
	}
	return t.inner.WriteToAddress(b, a)
}

func (t *guard) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *guard) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if !t.mayReach(a) {
		return nil, fmt.Errorf("gossip: %s is not the certified address of %s", a.Addr, a.Name)
	}
	conn, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: conn, t: t, outbound: true}, nil
}

// mayReach refuses a certified name at another address than its roster's.
func (t *guard) mayReach(a memberlist.Address) bool {
	if a.Name == "" {
		return true
	}
	want, ok := t.addrOf(a.Name)
	if !ok {
		return true
	}
	if got, err := netip.ParseAddrPort(a.Addr); err == nil && netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) == want {
		return true
	}
	t.c.unreach.Add(1)
	t.logs.log(slog.LevelInfo, "unreach", "gossip: not sending to a certified site's name at an address its record does not give",
		"member", a.Name, "addr", a.Addr, "certified", want.String())
	return false
}

func (t *guard) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.done)
		t.mu.Lock()
		for c := range t.conns {
			_ = c.Conn.Close() // unblocks screening reads; memberlist closes its own
		}
		t.mu.Unlock()
		err = t.inner.Shutdown()
		close(t.drained)
	})
	return err
}

// forwardPackets screens datagrams and hands memberlist a copy of exactly
// their size (memberlist's NetTransport reads each into 64 KiB).
func (t *guard) forwardPackets() {
	var keys *keySet
	var aeads []cipher.AEAD
	scratch := make([]byte, maxPacketBytes)
	for {
		select {
		case p := <-t.inner.PacketCh():
			if cur := t.scr.ring.load(); cur != keys {
				var err error
				if aeads, err = cur.aeads(); err != nil {
					panic(err) // key lengths are checked before they enter the ring
				}
				keys = cur
			}
			var err error
			if scratch, err = t.scr.checkPacket(aeads, p.Buf, scratch); err != nil {
				t.c.packets.Add(1)
				t.refused("datagram", reasonOf(err), p.From.String(), err)
				continue
			}
			p.Buf = append([]byte(nil), p.Buf...)
			select {
			case t.packets <- p:
			case <-t.done:
			}
		case <-t.drained:
			return
		}
	}
}

func (t *guard) forwardStreams() {
	for {
		select {
		case conn := <-t.inner.StreamCh():
			t.admit(conn)
		case <-t.drained:
			return
		}
	}
}

func (t *guard) refused(what string, why reason, from string, err error) {
	detail := err.Error()
	var r *refusal
	if errors.As(err, &r) {
		detail = r.detail
	}
	t.logs.log(slog.LevelWarn, what+why.String(), "gossip: refused "+what+": "+why.String(), "from", from, "detail", detail)
}

func (t *guard) refuseStream(c *guardConn, why reason, announced int, err error) {
	t.c.streams[why].Add(1)
	if announced > 0 {
		t.c.bytesCut.Add(uint64(announced))
	}
	t.refused("stream", why, c.RemoteAddr().String(), err)
	_ = c.Close()
}

// admit applies the concurrency limits at once, then screens the stream
// on its own goroutine.
func (t *guard) admit(conn net.Conn) {
	src := sourceIP(conn)
	c := &guardConn{Conn: conn, t: t, src: src, stranger: !t.certified(src), accepted: time.Now()}
	if isClosed(t.done) {
		_ = conn.Close()
		return
	}
	t.mu.Lock()
	why := reason(255)
	switch {
	case t.active >= t.lim.MaxStreams || c.stranger && t.strangers >= t.lim.MaxStreams/2:
		why = reasonTooMany
	case c.stranger && t.perSource[src] >= t.lim.MaxStreamsPerSource:
		why = reasonPerSource
	default:
		c.counted = true
		t.active++
		if c.stranger {
			t.strangers++
			t.perSource[src]++
		}
		t.conns[c] = struct{}{}
	}
	t.mu.Unlock()
	if !c.counted {
		t.refuseStream(c, why, 0, errors.New("limit reached"))
		return
	}
	go t.screenInbound(c)
}

func (t *guard) screenInbound(c *guardConn) {
	_ = c.Conn.SetDeadline(c.accepted.Add(t.lim.HeaderTimeout))
	hdr, n, err := t.scr.readStreamHeader(c.Conn, true, t.lim.MaxStreamBytes)
	if err != nil {
		t.refuseStream(c, reasonOf(err), n, err)
		return
	}
	if !t.reserve(c, int64(n)) {
		t.refuseStream(c, reasonBudget, n, fmt.Errorf("%d bytes announced", n))
		return
	}
	_ = c.Conn.SetDeadline(c.accepted.Add(t.lim.StreamTimeout))
	msg, err := t.readBody(c, hdr, n, true)
	if err != nil {
		t.refuseStream(c, reasonOf(err), n, err)
		return
	}
	_ = c.Conn.SetDeadline(time.Time{}) // memberlist sets its own
	c.replay = msg
	select {
	case t.streams <- c:
	case <-t.done:
		_ = c.Close()
	}
}

// readBody reads and checks the n bytes of ciphertext after a stream's
// header, and reserves what memberlist will decompress them to. It returns
// the header and the ciphertext, in one buffer read into once.
func (t *guard) readBody(c *guardConn, hdr []byte, n int, inbound bool) ([]byte, error) {
	msg := make([]byte, len(hdr)+n)
	body := msg[copy(msg, hdr):]
	if _, err := io.ReadFull(c.Conn, body); err != nil {
		return nil, err
	}
	var lenHdr [5]byte
	copy(lenHdr[:], hdr[len(hdr)-5:])
	keys := t.scr.ring.load()
	// More than one key: checkStream decrypts into a copy (see there),
	// which counts against the budget while it lives.
	trial := int64(0)
	if len(keys.keys) > 1 {
		trial = int64(n)
		if !t.reserve(c, trial) {
			return nil, refuse(reasonBudget, "trying %d keys on %d bytes", len(keys.keys), n)
		}
	}
	expands, err := t.scr.checkStream(keys, lenHdr, body, inbound)
	t.unreserve(c, trial)
	if err != nil {
		return nil, err
	}
	if expands > 0 && !t.reserve(c, int64(expands)) {
		return nil, refuse(reasonBudget, "expands to %d bytes", expands)
	}
	return msg, nil
}

func (t *guard) reserve(c *guardConn, n int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inflight+n > t.lim.MaxInflightBytes || c.stranger && t.strangerB+n > t.lim.MaxInflightBytes/2 {
		return false
	}
	t.inflight += n
	if c.stranger {
		t.strangerB += n
	}
	c.reserved += n
	return true
}

// unreserve gives back n bytes of what c reserved.
func (t *guard) unreserve(c *guardConn, n int64) {
	if n == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inflight -= n
	if c.stranger {
		t.strangerB -= n
	}
	c.reserved -= n
}

func (t *guard) release(c *guardConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inflight -= c.reserved
	if c.stranger {
		t.strangerB -= c.reserved
	}
	c.reserved = 0
	if c.counted {
		t.active--
		if c.stranger {
			t.strangers--
			if t.perSource[c.src]--; t.perSource[c.src] <= 0 {
				delete(t.perSource, c.src)
			}
		}
		delete(t.conns, c)
	}
}

func (t *guard) stats() StreamStats {
	s := StreamStats{
		TooMany: t.c.streams[reasonTooMany].Load(), PerSource: t.c.streams[reasonPerSource].Load(),
		TooLarge: t.c.streams[reasonTooLarge].Load(), Budget: t.c.streams[reasonBudget].Load(),
		Timeout: t.c.streams[reasonTimeout].Load(), Malformed: t.c.streams[reasonMalformed].Load(),
		Unauthenticated: t.c.streams[reasonUnauthenticated].Load(), BytesCut: t.c.bytesCut.Load(),
	}
	t.mu.Lock()
	s.Active, s.InflightBytes = t.active, t.inflight
	t.mu.Unlock()
	return s
}

// guardConn is a stream handed to memberlist: inbound, the screened message
// replayed from memory, then EOF (memberlist reads one message per inbound
// stream); outbound (our dial), the reply is screened on the first Read.
// Writes go to the network. Close releases what was reserved.
type guardConn struct {
	net.Conn
	t        *guard
	src      netip.Addr
	stranger bool
	counted  bool // holds a slot of the inbound stream limits
	accepted time.Time
	outbound bool
	screened bool
	replay   []byte
	reserved int64 // guarded by t.mu
	once     sync.Once
}

func (c *guardConn) Read(p []byte) (int, error) {
	if c.outbound && !c.screened {
		c.screened = true
		if err := c.screenReply(); err != nil {
			// A reply refused is counted; one that never came (the peer
			// closed, or is slow) is memberlist's failed exchange to report.
			if r := (*refusal)(nil); errors.As(err, &r) {
				c.t.c.streams[r.reason].Add(1)
				c.t.refused("reply", r.reason, c.RemoteAddr().String(), err)
			}
			return 0, err
		}
	}
	if len(c.replay) == 0 {
		c.replay = nil
		return 0, io.EOF // memberlist reads exactly one message
	}
	n := copy(p, c.replay)
	c.replay = c.replay[n:]
	return n, nil
}

// screenReply reads and checks the reply to a stream we opened, within the
// deadline memberlist set.
func (c *guardConn) screenReply() error {
	hdr, n, err := c.t.scr.readStreamHeader(c.Conn, false, c.t.lim.MaxStreamBytes)
	if err != nil {
		return err
	}
	if !c.t.reserve(c, int64(n)) {
		return refuse(reasonBudget, "reply of %d bytes", n)
	}
	msg, err := c.t.readBody(c, hdr, n, false)
	if err != nil {
		return err
	}
	c.replay = msg
	return nil
}

func (c *guardConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.Conn.Close()
		c.t.release(c)
	})
	return err
}

func sourceIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
