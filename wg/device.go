package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Mode selects how OpenDevice provides a WireGuard device.
type Mode string

const (
	// ModeAuto uses the kernel module when the kernel has one and the embedded
	// wireguard-go device otherwise.
	ModeAuto Mode = "auto"
	// ModeKernel requires the kernel module.
	ModeKernel Mode = "kernel"
	// ModeUserspace always uses the embedded wireguard-go device.
	ModeUserspace Mode = "userspace"
)

// ParseMode parses "auto", "kernel" or "userspace"; the empty string is auto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeKernel, ModeUserspace:
		return m, nil
	}
	return "", fmt.Errorf("unknown WireGuard mode %q: want auto, kernel or userspace", s)
}

// Backend names the implementation behind an open Device.
type Backend string

const (
	BackendKernel    Backend = "kernel"
	BackendUserspace Backend = "userspace"
)

// Device is an open WireGuard interface. Whatever the backend, it is
// configured through wgctrl (see Apply) and shown by `wg show`; addresses,
// MTU and routes are set on its link by package netconfig.
type Device interface {
	// Name is the interface name.
	Name() string
	// Backend tells which implementation runs the device.
	Backend() Backend
	// Up is called once the link is up, before peers are configured: a first
	// handshake sent while the device is down is lost and retried only after
	// WireGuard's 5 s rekey timeout.
	Up() error
	// Done is closed if the device stops on its own (the embedded device
	// failed or its link was deleted). It is nil for the kernel backend.
	Done() <-chan struct{}
	// Close releases the device. The embedded device is destroyed with its
	// link and sessions; a kernel link is left running with its sessions so
	// that a restarted agent adopts it without a new handshake. Close is
	// idempotent.
	Close() error
}

// DeviceOptions configures OpenDevice.
type DeviceOptions struct {
	Name   string
	Mode   Mode
	MTU    int // initial MTU of a new link; 0 means 1420
	Logger *slog.Logger
	// BuffersPerPool, if positive, bounds each of the embedded device's
	// packet pools (message buffers of 64 KiB, queue elements and their
	// containers) to that many items in use at once: what wireguard-go's
	// device.PreallocatedBuffersPerPool does on Android and iOS. On Linux that
	// is a compile-time 0 (no bound), so the pools grow with every packet in
	// flight; a full pool makes its users wait, which pushes back on the
	// sender. 0 leaves the pools unbounded. It must leave room for the
	// buffers the device's reader and receivers hold for good
	// (MinBuffersPerPool). The pools are shared by all peers: packets staged
	// for a peer without a session (up to 128 TUN read batches) count
	// against the bound, and if they fill it, the TUN reader waits, for
	// every peer, until that peer gets a session or gives up its handshake
	// attempts (90 s). The bound is set on this device only.
	BuffersPerPool int
	// MemoryLimit, if positive, is set as the process's Go soft memory limit
	// (runtime/debug.SetMemoryLimit) when the embedded device is used; 0
	// leaves it alone. It is process-wide: a process runs one embedded
	// device.
	MemoryLimit int64
}

// ErrKernelUnsupported means the running kernel cannot create WireGuard links
// (no module). In ModeAuto OpenDevice falls back to the embedded device.
var ErrKernelUnsupported = errors.New("the kernel has no WireGuard support")

// OpenDevice creates the interface, or adopts an existing kernel WireGuard link
// of that name (an agent restart must not break sessions).
func OpenDevice(opts DeviceOptions) (Device, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := validInterfaceName(opts.Name); err != nil {
		return nil, err
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	switch opts.Mode {
	case ModeKernel:
		return openKernel(opts.Name, opts.MTU, log)
	case ModeUserspace:
		return openUserspace(opts, log)
	case ModeAuto, "":
		d, err := openKernel(opts.Name, opts.MTU, log)
		if errors.Is(err, ErrKernelUnsupported) {
			log.Info("kernel WireGuard unavailable; using the embedded wireguard-go device", "interface", opts.Name, "reason", err)
			return openUserspace(opts, log)
		}
		return d, err
	}
	return nil, fmt.Errorf("unknown WireGuard mode %q", opts.Mode)
}

// validInterfaceName applies the kernel's rules (IFNAMSIZ 16 with the NUL).
func validInterfaceName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return fmt.Errorf("invalid interface name %q: 1 to 15 characters", name)
	}
	if strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("invalid interface name %q: no '/', ':' or whitespace", name)
	}
	return nil
}
