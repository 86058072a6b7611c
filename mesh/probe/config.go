package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// DefaultPort is the UDP port probes use on the overlay addresses. It is
// deliberately none of the IANA BFD ports (3784 control, 3785 echo, 4784
// multihop, 6784 LAG, 7784 seamless BFD): FRR's bfdd and GoBGP bind those on
// the wildcard address, and a gateway that also runs BFD towards its fabric
// would make dcmesh's bind on its overlay address fail with "address in
// use". It sits next to them so that a capture or an ACL reads as
// BFD-family, and below Linux's ephemeral range (32768-60999), so no
// outgoing socket ever holds it. Both ends must use the same port.
const DefaultPort = 3786

// Limits that Validate enforces.
const (
	// MinInterval is the floor issue 12 sets: 50 ms × 3 is 150 ms to
	// detect, about what a loaded host can schedule reliably.
	MinInterval = 50 * time.Millisecond
	// MaxInterval bounds a failure detector that is meant to be fast:
	// beyond 10 s, WireGuard's own keepalive and handshake clocks say as
	// much.
	MaxInterval = 10 * time.Second
)

// Config configures a Prober. Start from DefaultConfig: New uses every field
// as given (a zero Hold means no hold, a zero RTTInterval no RTT).
type Config struct {
	// Local is this gateway's overlay address: the socket binds to it and
	// probes leave from it. Required. The socket binds with IP_FREEBIND,
	// so the address need not be configured yet when Run starts.
	Local netip.Addr
	// Port is the UDP port on both ends.
	Port uint16
	// Interval is both the desired minimum transmit interval and the
	// required minimum receive interval advertised to every peer. The
	// interval a pair actually uses is the larger of one side's desired
	// TX and the other's required RX (RFC 5880 §6.8.2).
	Interval time.Duration
	// Multiplier is the detect multiplier advertised: a peer declares this
	// side down after this many intervals of silence.
	Multiplier uint8
	// Hold is the anti-flap hold: a session that was reported up and went
	// down is reported up again only after its BFD state has stayed Up for
	// Hold. Zero reports it at once.
	Hold time.Duration
	// RTTInterval is how often a Poll Sequence measures the round-trip
	// time of a session that is up. Zero disables RTT measurement.
	RTTInterval time.Duration
	// LossWindow is the sliding window over which PeerState.Loss is
	// computed.
	LossWindow time.Duration
	// CheckTTL drops received packets whose IP TTL (hop limit) is not 255
	// (the GTSM check of RFC 5881 §5), where the platform reports it
	// (Linux). Probes are sent with TTL 255 and WireGuard does not
	// decrement it, so only a packet forwarded by a router on the way -
	// a host behind the remote gateway spoofing the gateway's overlay
	// address - fails the check.
	CheckTTL bool
	// Logger receives state changes at Info and drops at Debug; nil
	// discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults, each with its reason:
//
//   - Port DefaultPort (3786): see DefaultPort.
//   - Interval 200 ms, Multiplier 3: detection within 0.6 s, inside issue
//     12's 1 s budget with room for route programming. The lab saw a
//     spurious flap at 100 ms on a 2-core host at load average 4.3 and
//     recommends 200-300 ms on shared hosts, so 100 ms × 3 (0.3 s) is the
//     fast profile, not the default.
//   - Hold 2 s: ten intervals; long enough that a path losing every few
//     probes stays out, short enough that a repaired gateway carries
//     traffic again before anyone notices (the lab's hold_up).
//   - RTTInterval 2 s: one extra Final packet per peer every 2 s (+10 % of
//     the packets at 200 ms), fresh for any metrics scrape interval.
//   - LossWindow 10 s: 50 probes at 200 ms, so one lost probe is 2 %;
//     recent enough to reflect the path now.
//   - CheckTTL true: GTSM costs nothing and closes the spoofing case above.
func DefaultConfig() Config {
	return Config{
		Port:        DefaultPort,
		Interval:    200 * time.Millisecond,
		Multiplier:  3,
		Hold:        2 * time.Second,
		RTTInterval: 2 * time.Second,
		LossWindow:  10 * time.Second,
		CheckTTL:    true,
	}
}

// Validate reports the first invalid field, named, with the fix.
func (c Config) Validate() error {
	switch {
	case !c.Local.IsValid():
		return errors.New("probe config: Local is required: this gateway's overlay address, e.g. 10.255.0.1")
	case c.Local.Zone() != "":
		return fmt.Errorf("probe config: Local %s has a zone: use the overlay address without one", c.Local)
	case !c.Local.IsGlobalUnicast() && !c.Local.IsLoopback():
		return fmt.Errorf("probe config: Local %s is not a unicast address: use this gateway's overlay address", c.Local)
	case c.Port == 0:
		return fmt.Errorf("probe config: Port is 0: use DefaultPort (%d) or another free UDP port, the same on every gateway", DefaultPort)
	case c.Interval < MinInterval || c.Interval > MaxInterval:
		return fmt.Errorf("probe config: Interval %v is out of range: use %v to %v (default 200ms)", c.Interval, MinInterval, MaxInterval)
	case c.Interval%time.Microsecond != 0:
		return fmt.Errorf("probe config: Interval %v is finer than the protocol's microseconds: round it, e.g. %v", c.Interval, c.Interval.Round(time.Millisecond))
	case c.Multiplier < 2:
		return fmt.Errorf("probe config: Multiplier %d: use 2 to 255 (default 3); 1 would declare a peer down after a single lost probe", c.Multiplier)
	case c.Hold < 0:
		return fmt.Errorf("probe config: Hold %v is negative: use 0 (report up at once) or more (default 2s)", c.Hold)
	case c.RTTInterval < 0 || (c.RTTInterval > 0 && c.RTTInterval < c.Interval):
		return fmt.Errorf("probe config: RTTInterval %v: use 0 (no RTT) or at least Interval (%v); default 2s", c.RTTInterval, c.Interval)
	case c.LossWindow < 10*c.Interval:
		return fmt.Errorf("probe config: LossWindow %v is under 10 intervals (%v): use at least that (default 10s)", c.LossWindow, 10*c.Interval)
	}
	return nil
}

// Target is a remote gateway to probe: Addr is its overlay address, routed
// into the tunnel. Name labels it in logs and snapshots.
type Target struct {
	Name string
	Addr netip.Addr
}

// validateTargets checks a SetTargets argument against the configuration.
func validateTargets(c *Config, ts []Target) error {
	seen := make(map[netip.Addr]int, len(ts))
	for i, t := range ts {
		label := fmt.Sprintf("probe target %d (%s)", i, t.Name)
		a := t.Addr
		switch {
		case !a.IsValid():
			return fmt.Errorf("%s: Addr is required: the remote gateway's overlay address", label)
		case a.Is4In6() || a.Zone() != "":
			return fmt.Errorf("%s: Addr %s: write the plain address, without a v4-in-v6 form or a zone", label, a)
		case a.Is4() != c.Local.Is4():
			return fmt.Errorf("%s: Addr %s and Local %s are of different address families: a Prober speaks one; run one per family", label, a, c.Local)
		case a == c.Local:
			return fmt.Errorf("%s: Addr %s is this Prober's own Local address", label, a)
		case !a.IsGlobalUnicast() && !a.IsLoopback():
			return fmt.Errorf("%s: Addr %s is not a unicast address", label, a)
		}
		if j, dup := seen[a]; dup {
			return fmt.Errorf("%s: Addr %s is also target %d: list each gateway once", label, a, j)
		}
		seen[a] = i
	}
	return nil
}
