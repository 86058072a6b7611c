package wg

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// boundPools relies on unexported fields of the wireguard-go version in
// go.mod. This test fails when an upgrade changes them, and checks that a
// bounded pool makes its users wait and counts the reader's first batch.
func TestBoundPoolsMatchesWireGuardGo(t *testing.T) {
	const n = MinBuffersPerPool
	// No link events: the device stays down, so only its TUN reader takes
	// buffers (an up device's UDP receivers take a batch each).
	gate := newGatedTUN(&quietTUN{Device: tuntest.NewChannelTUN().TUN(), events: make(chan tun.Event)})
	dev := device.NewDevice(gate, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	if err := gate.bound(dev, n); err != nil {
		t.Fatal(err)
	}
	batch := uint32(dev.BatchSize())
	pools := reflect.ValueOf(dev).Elem().FieldByName("pool")
	for _, name := range wgPoolNames {
		p := pools.FieldByName(name).Elem()
		if max := p.FieldByName("max").Uint(); max != n {
			t.Errorf("pool %s: max %d, want %d", name, max, n)
		}
	}
	if c := pools.FieldByName("messageBuffers").Elem().FieldByName("count").Uint(); c != uint64(batch) {
		t.Errorf("message buffers in use %d, want the reader's batch %d", c, batch)
	}

	// Take what is left; one more must wait until one is put back.
	var held []*[device.MaxMessageSize]byte
	for range n - int(batch) {
		held = append(held, dev.GetMessageBuffer())
	}
	got := make(chan struct{})
	go func() {
		dev.PutMessageBuffer(dev.GetMessageBuffer())
		close(got)
	}()
	select {
	case <-got:
		t.Fatalf("got message buffer %d of a pool bounded to %d", n+1, n)
	case <-time.After(100 * time.Millisecond):
	}
	dev.PutMessageBuffer(held[0])
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a put buffer did not release the waiting get")
	}
	for _, b := range held[1:] {
		dev.PutMessageBuffer(b)
	}
}

type quietTUN struct {
	tun.Device
	events    chan tun.Event
	closeOnce sync.Once
}

func (q *quietTUN) Events() <-chan tun.Event { return q.events }

func (q *quietTUN) Close() error {
	q.closeOnce.Do(func() { close(q.events) })
	return q.Device.Close()
}

func TestOpenUserspaceRejectsTooFewBuffers(t *testing.T) {
	_, err := OpenDevice(DeviceOptions{Name: "dcmbuftest0", Mode: ModeUserspace, BuffersPerPool: MinBuffersPerPool - 1})
	if err == nil {
		t.Fatal("accepted")
	}
}
