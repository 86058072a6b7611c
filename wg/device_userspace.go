package wg

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// userspaceDevice is wireguard-go embedded in the agent: a TUN link plus the
// UAPI socket in /var/run/wireguard/NAME.sock, which is where wgctrl and
// `wg show` find it. It lives exactly as long as the agent process.
type userspaceDevice struct {
	name string
	dev  *device.Device
	uapi net.Listener
	log  *slog.Logger

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	doneOnce  sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

func openUserspace(name string, mtu int, log *slog.Logger) (_ Device, reterr error) {
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN device %s for the embedded WireGuard: %w", name, err)
	}
	defer func() {
		if reterr != nil {
			_ = tdev.Close()
		}
	}()
	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("open WireGuard control socket for %s (another agent using this interface name?): %w", name, err)
	}
	uapi, err := ipc.UAPIListen(name, uapiFile)
	if err != nil {
		_ = uapiFile.Close()
		return nil, fmt.Errorf("listen on WireGuard control socket for %s: %w", name, err)
	}
	wglog := log.With("component", "wireguard-go")
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{
		Verbosef: func(format string, args ...any) { wglog.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { wglog.Warn(fmt.Sprintf(format, args...)) },
	})
	d := &userspaceDevice{name: name, dev: dev, uapi: uapi, log: log, done: make(chan struct{})}
	d.wg.Add(2)
	go d.serveUAPI()
	go func() {
		defer d.wg.Done()
		<-dev.Wait()
		d.markDone()
	}()
	log.Info("started embedded WireGuard device", "interface", name, "mtu", mtu)
	return d, nil
}

func (d *userspaceDevice) markDone() { d.doneOnce.Do(func() { close(d.done) }) }

// serveUAPI hands every control connection (wgctrl, `wg`) to wireguard-go.
// If the socket goes away while the device runs (someone deleted it), the
// device can no longer be configured: Done reports it so the agent stops
// rather than silently losing control of its peers.
func (d *userspaceDevice) serveUAPI() {
	defer d.wg.Done()
	for {
		c, err := d.uapi.Accept()
		if err != nil {
			if !d.closing.Load() {
				d.log.Error("WireGuard control socket stopped", "interface", d.name, "err", err)
				d.markDone()
			}
			return
		}
		go d.dev.IpcHandle(c)
	}
}

func (d *userspaceDevice) Name() string          { return d.name }
func (d *userspaceDevice) Backend() Backend      { return BackendUserspace }
func (d *userspaceDevice) Up() error             { return d.dev.Up() }
func (d *userspaceDevice) Done() <-chan struct{} { return d.done }

func (d *userspaceDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closing.Store(true)
		d.closeErr = d.uapi.Close()
		d.dev.Close() // closes the TUN: the link and its routes go with it
		d.wg.Wait()
	})
	return d.closeErr
}
