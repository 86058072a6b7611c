package probe

import (
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

// listen opens the UDP socket on local:port with:
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

// drain handles every datagram already queued on conn without waiting,
// alongside the reader goroutine (which holds the read lock while it
// waits, so this reads the descriptor directly, with MSG_DONTWAIT).
func drain(conn *net.UDPConn, buf, oob []byte, handle func(b []byte, src netip.Addr, ttl int, now time.Time)) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		for range 1024 { // bounded: a flood must not keep the timers from running
			n, oobn, _, from, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
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
	})
}
