package demo

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/dcmesh/dcmesh/netconfig"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted (iproute2's
// convention, which vishvananda/netns follows).
const netnsDir = "/var/run/netns"

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// onThread runs f on a locked OS thread and puts the thread back into its
// namespace afterwards (netconfig.OnThread).
func onThread(f func() error) error { return netconfig.OnThread(f) }

// inNS runs f on a thread inside the named namespace. Sockets f creates stay
// in that namespace for their whole life.
func inNS(name string, f func() error) error {
	return onThread(func() error {
		h, err := netns.GetFromPath(nsPath(name))
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w", name, err)
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", name, err)
		}
		return f()
	})
}

// errNSExists means the name was taken: the namespace is someone else's.
var errNSExists = errors.New("a network namespace of that name already exists")

// newNamedNS creates the named namespace (NewNamed switches the calling
// thread into it; onThread switches it back).
func newNamedNS(name string) error {
	return onThread(func() error {
		h, err := netns.NewNamed(name)
		if errors.Is(err, os.ErrExist) {
			return errNSExists
		}
		if err != nil {
			return fmt.Errorf("create network namespace %s: %w", name, err)
		}
		return h.Close()
	})
}

// deleteNamedNS removes the namespace's name; the namespace itself goes when
// nothing uses it any more (no process, socket or handle inside).
func deleteNamedNS(name string) error {
	err := netns.DeleteNamed(name)
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, unix.EINVAL):
		// The file exists but nothing is mounted on it (creation failed
		// half-way): remove the file.
		if err := os.Remove(nsPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return fmt.Errorf("delete network namespace %s: %w", name, err)
}

// handleAt opens a netlink handle inside the namespace. Only NETLINK_ROUTE:
// asking for xfrm too fails where that module is not loaded.
func handleAt(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nil
}

// disableIPv6 keeps an underlay interface quiet (no router solicitations or
// MLD). It is best effort: a kernel without IPv6 has nothing to disable.
func disableIPv6(ns, ifname string) {
	_ = inNS(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", []byte("1\n"), 0)
	})
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, ifname string, p netip.Prefix) error {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %w", ifname, err)
	}
	a, err := netlink.ParseAddr(p.String())
	if err == nil {
		err = h.AddrAdd(l, a)
	}
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", p, ifname, err)
	}
	return nil
}

// routeDev returns the interface the namespace's kernel would send a packet
// to dst through.
func routeDev(ns string, dst netip.Addr) (string, error) {
	h, err := handleAt(ns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	rs, err := h.RouteGet(dst.AsSlice())
	if err != nil {
		return "", fmt.Errorf("route to %s in %s: %w", dst, ns, err)
	}
	if len(rs) == 0 || rs[0].LinkIndex == 0 {
		return "", fmt.Errorf("no route to %s in %s", dst, ns)
	}
	l, err := h.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// hostPrefixes lists the IPv4 destinations routed in this (the root)
// namespace, in every table, default routes aside.
func hostPrefixes() ([]netip.Prefix, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		if bits == 0 {
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), bits).Masked())
	}
	return out, nil
}
