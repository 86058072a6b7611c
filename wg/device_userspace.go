package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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

func openUserspace(opts DeviceOptions, log *slog.Logger) (_ Device, reterr error) {
	name, mtu := opts.Name, opts.MTU
	if opts.BuffersPerPool != 0 && opts.BuffersPerPool < MinBuffersPerPool {
		return nil, fmt.Errorf("embedded WireGuard: %d buffers per pool is below the %d the device holds for its reader and receivers", opts.BuffersPerPool, MinBuffersPerPool)
	}
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
	if opts.MemoryLimit > 0 {
		debug.SetMemoryLimit(opts.MemoryLimit)
	}
	var gate *gatedTUN
	var tdevForDevice tun.Device = tdev
	if opts.BuffersPerPool > 0 {
		gate = newGatedTUN(tdev)
		tdevForDevice = gate
	}
	wglog := log.With("component", "wireguard-go")
	dev := device.NewDevice(tdevForDevice, conn.NewDefaultBind(), &device.Logger{
		Verbosef: func(format string, args ...any) {
			if wglog.Enabled(context.Background(), slog.LevelDebug) { // no formatting for nothing
				wglog.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { wglog.Warn(fmt.Sprintf(format, args...)) },
	})
	if gate != nil {
		if err := gate.bound(dev, opts.BuffersPerPool); err != nil {
			dev.Close()
			_ = uapi.Close()
			return nil, err
		}
	}
	d := &userspaceDevice{name: name, dev: dev, uapi: uapi, log: log, done: make(chan struct{})}
	d.wg.Add(2)
	go d.serveUAPI()
	go func() {
		defer d.wg.Done()
		<-dev.Wait()
		d.markDone()
	}()
	log.Info("started embedded WireGuard device", "interface", name, "mtu", mtu, "buffers_per_pool", opts.BuffersPerPool, "memory_limit", opts.MemoryLimit)
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

// MinBuffersPerPool is the smallest pool bound the embedded device accepts:
// its TUN reader and its two UDP receivers (IPv4, IPv6) each hold a batch of
// conn.IdealBatchSize buffers for good, and at least one more batch must be
// able to move.
const MinBuffersPerPool = 4 * conn.IdealBatchSize

// gatedTUN holds the device's first TUN read and its link events until the
// pools are bounded: until then nothing but the reader's first batch has
// been taken from them, so the count of items in use is known exactly.
type gatedTUN struct {
	tun.Device
	reading  chan struct{} // closed when the reader first calls Read
	readOnce sync.Once
	gate     chan struct{} // closed once the pools are bounded
	events   chan tun.Event
}

func newGatedTUN(t tun.Device) *gatedTUN {
	g := &gatedTUN{Device: t, reading: make(chan struct{}), gate: make(chan struct{}), events: make(chan tun.Event, 1)}
	go func() {
		defer close(g.events)
		<-g.gate
		for e := range t.Events() {
			g.events <- e
		}
	}()
	return g
}

func (g *gatedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	g.readOnce.Do(func() { close(g.reading) })
	<-g.gate
	return g.Device.Read(bufs, sizes, offset)
}

func (g *gatedTUN) Events() <-chan tun.Event { return g.events }

// bound waits for the reader's first Read, bounds the pools and opens the
// gate. If the device stopped first, the gate opens without a bound.
func (g *gatedTUN) bound(dev *device.Device, n int) error {
	defer close(g.gate)
	select {
	case <-g.reading:
	case <-dev.Wait():
		return errors.New("embedded WireGuard device stopped while starting")
	case <-time.After(10 * time.Second):
		return errors.New("embedded WireGuard device did not start reading its TUN within 10s")
	}
	// The reader took one batch of elements and message buffers before its
	// first Read (device.RoutineReadFromTUN); nothing else has run yet: the
	// link is down, its events are held, no peer exists.
	batch := uint32(dev.BatchSize())
	return boundPools(dev, uint32(n), map[string]uint32{"messageBuffers": batch, "outboundElements": batch})
}

// wgPoolNames are the fields of device.Device's pool struct, each a
// *device.WaitPool created with max device.PreallocatedBuffersPerPool.
var wgPoolNames = []string{"inboundElementsContainer", "outboundElementsContainer", "messageBuffers", "inboundElements", "outboundElements"}

// boundPools sets max (and the count in use, from inUse) of every pool of
// dev: the effect of building wireguard-go with PreallocatedBuffersPerPool
// = n. Those fields are unexported, so this relies on the module version in
// go.mod; TestBoundPoolsMatchesWireGuardGo fails when an upgrade changes
// them, and here a change is an error rather than a silently missing bound.
func boundPools(dev *device.Device, n uint32, inUse map[string]uint32) error {
	layout := func(what string) error {
		return fmt.Errorf("cannot bound the embedded WireGuard device's buffer pools: this wireguard-go version has no %s (set the bound to 0 to run without it)", what)
	}
	pools := reflect.ValueOf(dev).Elem().FieldByName("pool")
	if !pools.IsValid() || pools.Kind() != reflect.Struct {
		return layout("Device.pool struct")
	}
	waitPoolPtr := reflect.TypeOf((*device.WaitPool)(nil))
	u32 := reflect.TypeOf(uint32(0))
	for _, name := range wgPoolNames {
		f := pools.FieldByName(name)
		if !f.IsValid() || f.Type() != waitPoolPtr {
			return layout("pool field " + name)
		}
		p := *(**device.WaitPool)(unsafe.Pointer(f.UnsafeAddr()))
		pv := reflect.ValueOf(p).Elem()
		lock, count, max := pv.FieldByName("lock"), pv.FieldByName("count"), pv.FieldByName("max")
		if !lock.IsValid() || lock.Type() != reflect.TypeOf(sync.Mutex{}) ||
			!count.IsValid() || count.Type() != u32 || !max.IsValid() || max.Type() != u32 {
			return layout("WaitPool lock, count and max")
		}
		mu := (*sync.Mutex)(unsafe.Pointer(lock.UnsafeAddr()))
		mu.Lock()
		if *(*uint32)(unsafe.Pointer(max.UnsafeAddr())) != 0 {
			mu.Unlock()
			return fmt.Errorf("cannot bound the embedded WireGuard device's buffer pools: pool %s is already bounded", name)
		}
		*(*uint32)(unsafe.Pointer(count.UnsafeAddr())) = inUse[name]
		*(*uint32)(unsafe.Pointer(max.UnsafeAddr())) = n
		mu.Unlock()
	}
	return nil
}
