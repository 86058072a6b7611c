package netconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handle is the kernel of one network namespace: a *netlink.Handle (so it
// is a Netlink) plus what vishvananda/netlink lacks and Manager needs for
// Groups and sysctls: nexthop objects, routes over them, and /proc/sys/net.
// It implements Netlink, NexthopNetlink, Sysctls and RuleLister.
type Handle struct {
	*netlink.Handle
	socks map[int]*nl.SocketHandle
	ns    netns.NsHandle // a duplicate, or netns.None() for the caller's namespace
}

// OpenHandle opens the kernel of the calling thread's network namespace.
func OpenHandle() (*Handle, error) { return OpenHandleAt(netns.None()) }

// OpenHandleAt opens the kernel of network namespace ns (netns.None():
// the caller's). ns may be closed afterwards.
func OpenHandleAt(ns netns.NsHandle) (*Handle, error) {
	// NETLINK_ROUTE only: asking for xfrm too fails where it is not loaded.
	nh, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		nh.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	_ = s.SetSendTimeout(&nl.SocketTimeoutTv)
	_ = s.SetReceiveTimeout(&nl.SocketTimeoutTv)
	_ = s.SetExtAck(true) // the kernel's reason comes with the errno
	// Dumps filtered by the kernel (Linux 4.20+; older ones ignore the
	// filter and RouteListNexthop filters again).
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	h := &Handle{Handle: nh, socks: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}, ns: netns.None()}
	if ns.IsOpen() {
		fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("keep network namespace: %w", err)
		}
		h.ns = netns.NsHandle(fd)
	}
	return h, nil
}

// Close releases the handle.
func (h *Handle) Close() {
	h.Handle.Close()
	for _, s := range h.socks {
		s.Close()
	}
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

func (h *Handle) request(typ uint16, flags int, body []byte) *nl.NetlinkRequest {
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{Type: typ, Flags: unix.NLM_F_REQUEST | uint16(flags), Len: unix.SizeofNlMsghdr},
		Sockets:  h.socks,
	}
	req.AddRawData(body)
	return req
}

func (h *Handle) do(typ uint16, flags int, body []byte) error {
	_, err := h.request(typ, flags|unix.NLM_F_ACK, body).Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// NexthopList lists every nexthop object of the namespace.
func (h *Handle) NexthopList() ([]Nexthop, error) {
	msgs, err := h.request(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP, make([]byte, unix.SizeofNhmsg)).
		Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		return nil, fmt.Errorf("list nexthops: %w", err)
	}
	out := make([]Nexthop, 0, len(msgs))
	for _, m := range msgs {
		nh, err := decodeNexthop(m)
		if err != nil {
			return nil, fmt.Errorf("list nexthops: %w", err)
		}
		out = append(out, nh)
	}
	return out, nil
}

// NexthopAdd creates nh (NLM_F_EXCL).
func (h *Handle) NexthopAdd(nh Nexthop) error {
	return h.do(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_EXCL, encodeNexthop(nh))
}

// NexthopReplace replaces or creates nh in one step.
func (h *Handle) NexthopReplace(nh Nexthop) error {
	return h.do(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, encodeNexthop(nh))
}

// NexthopDel deletes the nexthop object id.
func (h *Handle) NexthopDel(id uint32) error {
	return h.do(unix.RTM_DELNEXTHOP, 0, encodeNexthopID(id))
}

// RouteListNexthop lists the routes in table whose nexthop is an object.
func (h *Handle) RouteListNexthop(table int) ([]NexthopRoute, error) {
	filter := attrs(make([]byte, unix.SizeofRtMsg)).u32(unix.RTA_TABLE, uint32(table))
	msgs, err := h.request(unix.RTM_GETROUTE, unix.NLM_F_DUMP, filter).Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []NexthopRoute
	for _, m := range msgs {
		r, ok, err := decodeNexthopRoute(m)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if ok && r.Table == table {
			out = append(out, r)
		}
	}
	return out, nil
}

// RouteAddNexthop adds r (NLM_F_EXCL).
func (h *Handle) RouteAddNexthop(r NexthopRoute) error {
	return h.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, encodeNexthopRoute(r))
}

// RouteReplaceNexthop replaces or adds r.
func (h *Handle) RouteReplaceNexthop(r NexthopRoute) error {
	return h.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, encodeNexthopRoute(r))
}

// Sysctl reads a kernel setting of the handle's namespace: name is a path
// under /proc/sys below net/, such as "net/ipv4/conf/dcm0/rp_filter".
func (h *Handle) Sysctl(name string) (string, error) {
	p, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	var v string
	err = h.inNamespace(func() error {
		b, err := os.ReadFile(p)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// SetSysctl writes a kernel setting of the handle's namespace.
func (h *Handle) SetSysctl(name, value string) error {
	p, err := sysctlPath(name)
	if err != nil {
		return err
	}
	return h.inNamespace(func() error {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(value)
		return errors.Join(werr, f.Close())
	})
}

// sysctlPath turns "net/ipv4/..." into its file, refusing anything that
// would leave /proc/sys/net.
func sysctlPath(name string) (string, error) {
	clean := filepath.Clean("/" + name)
	if clean != "/"+name || !strings.HasPrefix(name, "net/") {
		return "", fmt.Errorf("sysctl %q: want a path below net/, such as net/ipv4/conf/dcm0/rp_filter", name)
	}
	return "/proc/sys" + clean, nil
}

// inNamespace runs f with the calling goroutine's thread in the handle's
// namespace: /proc/sys/net shows the namespace of the thread that opens a
// file there. The thread goes back afterwards, or, if it cannot, stays
// locked and ends with its goroutine, so nothing else ever runs there.
func (h *Handle) inNamespace(f func() error) error {
	if !h.ns.IsOpen() {
		return f()
	}
	return InNamespace(h.ns, f)
}

var (
	_ Netlink        = (*Handle)(nil)
	_ NexthopNetlink = (*Handle)(nil)
	_ Sysctls        = (*Handle)(nil)
	_ RuleLister     = (*Handle)(nil)
)
