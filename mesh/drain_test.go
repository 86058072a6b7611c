package mesh

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

// The drain state survives a restart: saved drained, loaded drained with
// its time; saved undrained, the file is gone and loads as in service.
func TestDrainStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drain.json")
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if d, err := loadDrain(path, now); err != nil || d.on {
		t.Fatalf("no file: %+v %v, want in service", d, err)
	}
	since := now.Add(-time.Hour)
	if err := saveDrain(path, drainState{on: true, since: since}); err != nil {
		t.Fatal(err)
	}
	wgtest.AssertMode(t, path, 0o600)
	d, err := loadDrain(path, now)
	if err != nil || !d.on || !d.since.Equal(since) {
		t.Fatalf("after drain: %+v %v, want drained since %s", d, err, since)
	}
	if err := saveDrain(path, drainState{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("undrained, the file is still there: %v", err)
	}
	if d, err := loadDrain(path, now); err != nil || d.on {
		t.Fatalf("after undrain: %+v %v", d, err)
	}
	if err := saveDrain(path, drainState{}); err != nil {
		t.Fatalf("undrain twice: %v", err)
	}
}

// A drain file that cannot be read leaves the gateway drained, and says
// so naming the file and the fix: never back in service by surprise.
func TestDrainStateFileCorruptStaysDrained(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drain.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d, err := loadDrain(path, now)
	if !d.on || !d.since.Equal(now) {
		t.Errorf("corrupt file: %+v, want drained since now", d)
	}
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "dcmesh undrain") {
		t.Errorf("err = %v, want one naming the file and dcmesh undrain", err)
	}
}

// Drained, the tunnel routes are one metric better and the fail-closed
// routes stay at metric+1; in service nothing changes.
func TestDrainedNet(t *testing.T) {
	n := netconfig.Config{Link: "dcm0", Metric: 100, Routes: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}}
	if got := drainedNet(n, drainState{}); got.Metric != 100 || got.FailClosedMetric != 0 {
		t.Errorf("in service: metric %d, fail-closed %d", got.Metric, got.FailClosedMetric)
	}
	if got := drainedNet(n, drainState{on: true}); got.Metric != 99 || got.FailClosedMetric != 101 {
		t.Errorf("drained: metric %d, fail-closed %d, want 99 and 101", got.Metric, got.FailClosedMetric)
	}
}

// Probes as WireGuard counts them: 24 bytes of BFD in UDP in IPv4 (52,
// padded to 64) or IPv6 (72, padded to 80), plus 32 of header and tag.
func TestProbeWireBytes(t *testing.T) {
	if got := probeWireBytes(netip.MustParseAddr("10.255.0.1")); got != 96 {
		t.Errorf("IPv4: %d, want 96", got)
	}
	if got := probeWireBytes(netip.MustParseAddr("fd00:ff::1")); got != 112 {
		t.Errorf("IPv6: %d, want 112", got)
	}
}

// sampler makes samples of one peer: probes at 5/s both ways, a
// keepalive now and then, and whatever data the test adds.
type sampler struct {
	t0             time.Time
	at             time.Duration
	rx, tx         uint64
	probeRx, probe uint64
}

func (s *sampler) step(d time.Duration, dataRx, dataTx uint64) drainSample {
	s.at += d
	n := uint64(d / (200 * time.Millisecond))
	s.probeRx += n
	s.probe += n
	s.rx += n*96 + dataRx
	s.tx += n*96 + dataTx
	return drainSample{"ams1": {at: s.t0.Add(s.at), rxBytes: s.rx, txBytes: s.tx, probeRx: s.probeRx, probeTx: s.probe, persistentKeepalive: 25 * time.Second}}
}

func TestDrainMeter(t *testing.T) {
	m := newDrainMeter(2*time.Second, 96)
	s := &sampler{t0: time.Unix(1700000000, 0)}
	m.observe(s.step(0, 0, 0))
	if b := m.busy(); len(b) != 1 || b[0].Site != "ams1" {
		t.Fatalf("first sample: busy %v, want ams1 (not yet idle for the settle time)", b)
	}
	// A stream of 10 kB/s each way keeps it busy, with its rate.
	for range 12 {
		m.observe(s.step(250*time.Millisecond, 2500, 2500))
	}
	b := m.busy()
	if len(b) != 1 || b[0].RxPerSec < 9000 || b[0].RxPerSec > 11000 || b[0].TxPerSec < 9000 {
		t.Fatalf("streaming: busy %+v, want ams1 at about 10000 B/s", b)
	}
	// Then only probes, a keepalive and a handshake: idle after 2 s.
	for i := range 7 {
		var extra uint64
		switch i {
		case 2:
			extra = 32 // a keepalive
		case 4:
			extra = 148 // a handshake initiation
		}
		m.observe(s.step(250*time.Millisecond, extra, 0))
	}
	if b := m.busy(); len(b) != 1 || b[0].IdleSeconds < 1.7 || b[0].IdleSeconds > 1.8 {
		t.Fatalf("1.75 s quiet: busy %+v, want still ams1, idle 1.75 s", b)
	}
	m.observe(s.step(250*time.Millisecond, 0, 0))
	if b := m.busy(); len(b) != 0 {
		t.Fatalf("2 s of probes and keepalives only: busy %+v, want none", b)
	}
	// A ping a second (128 bytes each way) is traffic, not idleness.
	m2 := newDrainMeter(5*time.Second, 96)
	s2 := &sampler{t0: s.t0}
	m2.observe(s2.step(0, 0, 0))
	for i := range 40 {
		var ping uint64
		if i%4 == 0 {
			ping = 128
		}
		m2.observe(s2.step(250*time.Millisecond, ping, ping))
	}
	if b := m2.busy(); len(b) != 1 {
		t.Errorf("a ping a second for 10 s: busy %v, want ams1", b)
	}
	// A peer gone from the device carries nothing.
	m2.observe(drainSample{})
	if b := m2.busy(); len(b) != 0 {
		t.Errorf("peer removed: busy %v", b)
	}
}
