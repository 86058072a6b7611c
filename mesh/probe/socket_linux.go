package probe

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// oobSize fits the control messages asked for: the TTL or hop limit and
// the kernel's receive timestamp.
var oobSize = unix.CmsgSpace(4) + unix.CmsgSpace(16) + 16

// socket is the Prober's UDP port on Linux: two sockets bound to the same
// address and port in one SO_REUSEPORT group, and a classic BPF program on
// the group that steers each datagram to one of them by its BFD header:
//
//   - bulk (index 1), outside Go's network poller: the steady state, every
//     packet of an Up session without the Poll bit (the periodic packets and
//     the Finals). Nothing wakes for them: the timer loop drains the queue
//     each time it wakes, before it acts on a deadline. The kernel's receive
//     timestamp keeps detection, loss and RTT exact however late they are
//     read. All packets leave from this descriptor too: a send on a socket
//     in the poller ends with an EPOLLOUT edge that wakes the poller's
//     thread for nothing.
//   - urgent (index 0), a net.UDPConn with a reader goroutine: everything
//     else - Polls (the remote measures its RTT by how soon the Final
//     comes back), and every packet that is not Up (a state change, a
//     restart, an AdminDown), handled the moment it arrives.
//
// A steady Prober thus wakes only for its own timers, which wakeAt gathers
// on a shared grid, instead of once for every packet a peer sends: the
// wakeups, not the packets, are most of its CPU. If the program cannot be
// attached, bulk is -1 and the urgent socket alone does everything, as
// before.
type socket struct {
	urgent  *net.UDPConn
	bulk    int
	bulkErr error // why there is no bulk socket
}

// steer is the reuseport program: return 1 (bulk) for state Up without P,
// 0 (urgent) for anything else. The kernel runs it with the data at the
// UDP payload: byte 1 is the state (top two bits) and the flags (P = 0x20).
var steer = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 1},
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: 2, K: 0x20},
	{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: 0xc0},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, K: uint32(StateUp) << 6},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	{Code: unix.BPF_RET | unix.BPF_K, K: 1},
}

// openSocket opens the Prober's port on local:port. The sockets are
// created on the calling goroutine (and so in its thread's network
// namespace). The urgent socket binds first without SO_REUSEPORT, so that
// a port held by anyone else (a second agent on the same overlay address)
// is refused with "address already in use" as it would be without the
// pair; it sets SO_REUSEPORT once bound, and the bulk socket joins it (a
// second agent's exclusive bind still fails).
func openSocket(ctx context.Context, local netip.Addr, port uint16) (*socket, error) {
	urgent, err := listen(ctx, local, port)
	if err != nil {
		return nil, err
	}
	s := &socket{urgent: urgent, bulk: -1}
	// Without the bulk socket the urgent one does everything, as a plain
	// socket would; Run logs why.
	s.bulkErr = s.addBulk(local, port)
	return s, nil
}

// addBulk makes the urgent socket a reuseport group, binds the bulk socket
// into it and attaches steer.
func (s *socket) addBulk(local netip.Addr, port uint16) error {
	raw, err := s.urgent.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil || serr != nil {
		return cmp.Or(err, serr)
	}
	bulk, err := bindRaw(local, port)
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(steer)), Filter: &steer[0]}
	if err := unix.SetsockoptSockFprog(bulk, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
		unix.Close(bulk) // the urgent socket is left in a group of one
		return err
	}
	s.bulk = bulk
	return nil
}

// bindRaw creates the bulk socket: a non-blocking descriptor that Go's
// poller never sees, with the same options as the urgent one.
func bindRaw(local netip.Addr, port uint16) (int, error) {
	family := unix.AF_INET
	if local.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	if local.Is6() { // as Go's udp6 sockets: the group's members must agree
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := setSockopts(fd, local.Is6()); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(local, port))); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// send writes one datagram from the bulk descriptor (the urgent socket if
// there is none). It never blocks: a full send buffer is an error, counted
// like any other.
func (s *socket) send(b []byte, dst netip.AddrPort) error {
	if s.bulk < 0 {
		_, err := s.urgent.WriteToUDPAddrPort(b, dst)
		return err
	}
	return unix.Sendto(s.bulk, b, unix.MSG_DONTWAIT, sockaddr(dst))
}

// drain handles every datagram queued on either socket without waiting.
func (s *socket) drain(buf, oob []byte, handle rxFunc) {
	if s.bulk >= 0 {
		recvAll(s.bulk, buf, oob, handle)
	}
	raw, err := s.urgent.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { recvAll(int(fd), buf, oob, handle) })
}

// drainBulk handles what the bulk socket holds: the timer loop calls it on
// every wakeup.
func (s *socket) drainBulk(buf, oob []byte, handle rxFunc) {
	if s.bulk >= 0 {
		recvAll(s.bulk, buf, oob, handle)
	}
}

func (s *socket) close() {
	s.urgent.Close()
	if s.bulk >= 0 {
		unix.Close(s.bulk)
		s.bulk = -1
	}
}

// listen opens the urgent UDP socket on local:port. Its options, and the
// bulk socket's:
//   - IP_FREEBIND / IPV6_FREEBIND: the overlay address may not be on the
//     device yet when the agent starts; the bind must not depend on that
//     order (and survives the address being removed and re-added);
//   - TTL / hop limit 255 on everything sent (RFC 5881 §5, GTSM);
//   - IP_RECVTTL / IPV6_RECVHOPLIMIT so each read reports what arrived;
//   - SO_TIMESTAMPNS: each read carries the time the kernel received the
//     packet, so detection and RTT do not depend on how soon this process
//     gets to run (see rxTime).
//
// It is an ordinary socket: packets to a remote overlay address follow the
// kernel's route into the WireGuard device, kernel or wireguard-go TUN.
func listen(ctx context.Context, local netip.Addr, port uint16) (*net.UDPConn, error) {
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = setSockopts(int(fd), local.Is6())
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, network, netip.AddrPortFrom(local, port).String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func setSockopts(fd int, v6 bool) error {
	type opt struct {
		level, name int
		what        string
	}
	opts := []opt{
		{unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND"},
		{unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL"},
		{unix.IPPROTO_IP, unix.IP_RECVTTL, "IP_RECVTTL"},
	}
	if v6 {
		opts = []opt{
			{unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"},
			{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"},
			{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"},
		}
	}
	opts = append(opts, opt{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, "SO_TIMESTAMPNS"})
	for _, o := range opts {
		v := 1
		if o.name == unix.IP_TTL || o.name == unix.IPV6_UNICAST_HOPS {
			v = 255
		}
		if err := unix.SetsockoptInt(fd, o.level, o.name, v); err != nil {
			return fmt.Errorf("setsockopt %s: %w", o.what, err)
		}
	}
	return nil
}

// parseOOB returns the TTL or hop limit (-1 if absent) and the kernel
// receive timestamp (zero if absent) from a read's control messages.
func parseOOB(oob []byte) (ttl int, stamp time.Time) {
	ttl = -1
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return ttl, stamp
	}
	for _, m := range msgs {
		h := m.Header
		switch {
		case (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL) ||
			(h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT):
			if len(m.Data) >= 4 {
				ttl = int(int32(binary.NativeEndian.Uint32(m.Data)))
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS:
			if len(m.Data) >= 16 {
				sec := int64(binary.NativeEndian.Uint64(m.Data))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
				stamp = time.Unix(sec, nsec)
			}
		}
	}
	return ttl, stamp
}

// recvAll handles every datagram already queued on fd without waiting
// (MSG_DONTWAIT: the urgent socket's reader goroutine may be blocked in a
// read on it at the same time).
func recvAll(fd int, buf, oob []byte, handle rxFunc) {
	for range 1024 { // bounded: a flood must not keep the timers from running
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		var src netip.Addr
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			src = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			src = netip.AddrFrom16(sa.Addr).Unmap()
		default:
			continue
		}
		ttl, stamp := parseOOB(oob[:oobn])
		handle(buf[:n], src, ttl, rxTime(stamp, time.Now()))
	}
}
