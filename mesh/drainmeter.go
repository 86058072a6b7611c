package mesh

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
)

// `drain --wait` decides that the gateway carries nothing from the
// WireGuard byte counters of its peers: what they count beyond the
// in-tunnel probes (counted by the prober, so known exactly) and
// keepalives, over the settle time, must stay within what those and a
// handshake can explain. Sizes are as WireGuard counts them: the whole
// message, header and tag included, without UDP or IP.
const (
	wgKeepaliveBytes = 32  // a data message with no payload
	wgHandshakeBytes = 148 // an initiation, the largest handshake message
	wgCookieBytes    = 64  // a cookie reply, under load
	wgOverhead       = 32  // data message header (16) + tag (16)
	// rekeyAfterTime is how often a live pair makes a new handshake.
	rekeyAfterTime = 120 * time.Second
	// probeSkew is how many probes the prober's count and WireGuard's may
	// differ by at a sample (a probe counted by one just before the
	// sample, by the other just after).
	probeSkew = 2
)

// probeWireBytes is one probe as WireGuard counts it: a BFD control packet
// in UDP in IPv4 or IPv6, padded to 16 bytes, plus the data message's
// header and tag.
func probeWireBytes(overlay netip.Addr) uint64 {
	ip := 20
	if overlay.Is6() && !overlay.Is4In6() {
		ip = 40
	}
	inner := ip + 8 + probe.PacketLen
	return uint64((inner+15)/16*16 + wgOverhead)
}

// drainCounters is one peer's counters at a sample.
type drainCounters struct {
	at                  time.Time
	rxBytes, txBytes    uint64
	probeRx, probeTx    uint64
	persistentKeepalive time.Duration // 0: none
}

// drainSample is every peer of the gateway at one moment, by node name.
type drainSample map[string]drainCounters

// drainMeter follows the counters of every peer across samples.
type drainMeter struct {
	settle     time.Duration
	probeBytes uint64
	peers      map[string]*drainPeerMeter
}

type drainPeerMeter struct {
	since, last drainCounters // since: the start of the idle window
	rxRate      float64       // bytes/s beyond probes over the last sample
	txRate      float64
}

func newDrainMeter(settle time.Duration, probeBytes uint64) *drainMeter {
	return &drainMeter{settle: settle, probeBytes: probeBytes, peers: map[string]*drainPeerMeter{}}
}

// allowance is how many bytes one direction may count over d, beyond
// probes, for an idle peer: the probe skew, keepalives (persistent ones,
// and the passive one WireGuard sends after receiving), and a handshake
// with a cookie per rekey interval.
func (m *drainMeter) allowance(d, keepalive time.Duration) uint64 {
	keepalives := uint64(2)
	if keepalive > 0 {
		keepalives += uint64(d / keepalive)
	}
	handshakes := 1 + uint64(d/rekeyAfterTime)
	return probeSkew*m.probeBytes + keepalives*wgKeepaliveBytes + handshakes*(wgHandshakeBytes+wgCookieBytes)
}

// excess is what a direction counted from a to b beyond its probes (0 if
// the counters went backwards: a peer re-added with fresh counters).
func excess(bytesA, bytesB, probesA, probesB, probeBytes uint64) uint64 {
	if bytesB < bytesA || probesB < probesA {
		return 0
	}
	explained := (probesB - probesA) * probeBytes
	if d := bytesB - bytesA; d > explained {
		return d - explained
	}
	return 0
}

// observe adds a sample. A peer busy since its idle window started starts
// a new window now; a peer that is gone is forgotten (it carries nothing).
func (m *drainMeter) observe(s drainSample) {
	for name := range m.peers {
		if _, ok := s[name]; !ok {
			delete(m.peers, name)
		}
	}
	for name, c := range s {
		p, ok := m.peers[name]
		if !ok || c.rxBytes < p.last.rxBytes || c.txBytes < p.last.txBytes {
			m.peers[name] = &drainPeerMeter{since: c, last: c}
			continue
		}
		if dt := c.at.Sub(p.last.at).Seconds(); dt > 0 {
			p.rxRate = float64(excess(p.last.rxBytes, c.rxBytes, p.last.probeRx, c.probeRx, m.probeBytes)) / dt
			p.txRate = float64(excess(p.last.txBytes, c.txBytes, p.last.probeTx, c.probeTx, m.probeBytes)) / dt
		}
		p.last = c
		allowed := m.allowance(c.at.Sub(p.since.at), c.persistentKeepalive)
		rx := excess(p.since.rxBytes, c.rxBytes, p.since.probeRx, c.probeRx, m.probeBytes)
		tx := excess(p.since.txBytes, c.txBytes, p.since.probeTx, c.probeTx, m.probeBytes)
		if rx > allowed || tx > allowed {
			p.since = c
		}
	}
}

// busy lists the peers not yet idle for the settle time, busiest first.
func (m *drainMeter) busy() []control.DrainPeer {
	var out []control.DrainPeer
	for name, p := range m.peers {
		if p.last.at.Sub(p.since.at) < m.settle {
			out = append(out, control.DrainPeer{Site: name, RxPerSec: p.rxRate, TxPerSec: p.txRate, IdleSeconds: p.last.at.Sub(p.since.at).Seconds()})
		}
	}
	slices.SortFunc(out, func(a, b control.DrainPeer) int {
		return cmp.Or(cmp.Compare(b.RxPerSec+b.TxPerSec, a.RxPerSec+a.TxPerSec), cmp.Compare(a.Site, b.Site))
	})
	return out
}
