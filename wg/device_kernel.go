package wg

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelDevice is a netlink link of type "wireguard". The agent owns its
// configuration but not its lifetime: Close leaves it running.
type kernelDevice struct{ name string }

func openKernel(name string, mtu int, log *slog.Logger) (Device, error) {
	link, err := netlink.LinkByName(name)
	if err == nil {
		if t := link.Type(); t != "wireguard" {
			return nil, fmt.Errorf("interface %s exists and is a %q link, not WireGuard: delete it or choose another interface name", name, t)
		}
		log.Info("adopting existing kernel WireGuard link; its sessions are kept", "interface", name)
		return &kernelDevice{name: name}, nil
	}
	var notFound netlink.LinkNotFoundError
	if !errors.As(err, &notFound) {
		return nil, fmt.Errorf("look up interface %s: %w", name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("create wireguard link %s: %w (%w; load the wireguard module or use --wireguard userspace)", name, ErrKernelUnsupported, err)
		}
		return nil, fmt.Errorf("create wireguard link %s: %w", name, err)
	}
	log.Info("created kernel WireGuard link", "interface", name, "mtu", mtu)
	return &kernelDevice{name: name}, nil
}

func (d *kernelDevice) Name() string          { return d.name }
func (d *kernelDevice) Backend() Backend      { return BackendKernel }
func (d *kernelDevice) Up() error             { return nil } // netconfig sets the link up
func (d *kernelDevice) Done() <-chan struct{} { return nil }
func (d *kernelDevice) Close() error          { return nil }

// DeleteLink removes a WireGuard interface of either backend, for
// `dcmesh down --purge` and tests. A missing link is not an error.
func DeleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("look up interface %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}
