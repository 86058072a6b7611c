package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Planned maintenance of a gateway (`dcmesh drain` / `undrain`): the agent
// publishes its record with Drain set, so peers take it out of their
// nexthop groups, and moves its own tunnel routes one metric better
// (route_metric - 1) so that the site's routers export them degraded
// (AS-path prepend and GRACEFUL_SHUTDOWN) while the kernel still prefers
// them over the fail-closed routes. The state is kept in the state
// directory: a restart stays drained until `undrain`.
var (
	EndpointDrain   = Endpoint[DrainRequest, DrainReply]{"POST", "/v1/drain"}
	EndpointUndrain = Endpoint[Empty, DrainReply]{"POST", "/v1/undrain"}
)

// Drain drains the gateway and, with r.Wait, waits until it carries
// nothing (or r.Timeout).
func (c *Client) Drain(ctx context.Context, r DrainRequest) (DrainReply, error) {
	return Call(ctx, c, EndpointDrain, r)
}

// Undrain returns the gateway to service.
func (c *Client) Undrain(ctx context.Context) (DrainReply, error) {
	return Call(ctx, c, EndpointUndrain, Empty{})
}

// DrainRequest is the body of POST /v1/drain.
type DrainRequest struct {
	// Wait until every WireGuard peer of this gateway has carried nothing
	// but probes and keepalives for Settle, up to Timeout.
	Wait    bool          `json:"wait"`
	Timeout time.Duration `json:"timeout"`
	Settle  time.Duration `json:"settle"`
	// Force a Wait on the last gateway of its site in service (the agent
	// refuses it otherwise: ErrLastInService). Omitted when false, so that
	// a request without it still reaches an agent older than the field
	// (the agent refuses unknown fields).
	Force bool `json:"force,omitempty"`
}

// Bounds of DrainRequest's durations; 0 means the default.
const (
	DefaultDrainWait   = 5 * time.Minute
	MinDrainWait       = time.Second
	MaxDrainWait       = 2 * time.Hour
	DefaultDrainSettle = 5 * time.Second
	MinDrainSettle     = time.Second
	MaxDrainSettle     = 10 * time.Minute
)

// Validate refuses durations out of range, naming the field.
func (r DrainRequest) Validate() error {
	if err := checkOptional("timeout", r.Timeout, MinDrainWait, MaxDrainWait, DefaultDrainWait); err != nil {
		return err
	}
	if err := checkOptional("settle", r.Settle, MinDrainSettle, MaxDrainSettle, DefaultDrainSettle); err != nil {
		return err
	}
	if r.Force && !r.Wait {
		return errors.New("force: applies to --wait only (drain without --wait never waits, so there is nothing to force)")
	}
	if r.Wait && r.SettleFor() > r.WaitFor() {
		return fmt.Errorf("settle: %s is longer than the timeout %s: the wait could never succeed; use a shorter settle or a longer timeout", r.SettleFor(), r.WaitFor())
	}
	return nil
}

// WaitFor is how long the agent waits (Timeout, or DefaultDrainWait).
func (r DrainRequest) WaitFor() time.Duration { return orDefault(r.Timeout, DefaultDrainWait) }

// SettleFor is how long every peer must stay idle (Settle, or
// DefaultDrainSettle).
func (r DrainRequest) SettleFor() time.Duration { return orDefault(r.Settle, DefaultDrainSettle) }

// ResponseWithin lets the answer to `drain --wait` take as long as the
// wait (LongPoll).
func (r DrainRequest) ResponseWithin() time.Duration { return longPoll(r.Wait, r.WaitFor()) }

// DrainResult says where a drain or undrain stands.
type DrainResult string

const (
	DrainDraining  DrainResult = "draining"  // drained; not waited for (no --wait)
	DrainIdle      DrainResult = "idle"      // drained, and every peer idle for the settle time
	DrainBusy      DrainResult = "busy"      // drained, but Busy still carried traffic at the timeout
	DrainUndrained DrainResult = "undrained" // back in service
)

// DrainReply says how a drain or undrain went.
type DrainReply struct {
	Result DrainResult `json:"result"`
	// Drained is the state now; Since when it was drained (null when not).
	Drained bool       `json:"drained"`
	Since   *time.Time `json:"since"`
	// Changed: this call changed the state (false: it already was so).
	Changed bool `json:"changed"`
	// Busy lists the peers that still carried data beyond probes and
	// keepalives at the timeout (DrainBusy only), busiest first.
	Busy []DrainPeer `json:"busy"`
	// Siblings are the other gateways of this site the agent knows of, by
	// index; [] when it knows none. nil in an answer of an agent older
	// than the field (it says nothing about them).
	Siblings []Sibling `json:"siblings"`
	// LastInService: no sibling is in service (none known, or every one
	// drained or down), so peers keep sending to this gateway drained,
	// nothing moves away, and stopping it takes the site off the backbone.
	LastInService bool `json:"last_in_service"`
}

// Sibling is another gateway of this site as this gateway sees it: from
// its signed record and the gossip membership (siblings are no WireGuard
// peers, so there are no probes to them).
type Sibling struct {
	Node    string       `json:"node"`
	Gateway uint8        `json:"gateway"`
	State   SiblingState `json:"state"`
	// Reason says why a sibling is down; "" otherwise.
	Reason string `json:"reason"`
}

// SiblingState is what a sibling does for the site's traffic.
type SiblingState string

const (
	SiblingInService SiblingState = "in_service" // carries traffic
	SiblingStandby   SiblingState = "standby"    // weight 0: takes the traffic over when no active gateway is left, so in service
	SiblingDrained   SiblingState = "drained"    // drained for maintenance
	SiblingDown      SiblingState = "down"       // gone from gossip, said goodbye, record expired, or certificate not valid
)

// InService says whether peers move traffic to the sibling when this
// gateway drains.
func (s Sibling) InService() bool { return s.State == SiblingInService || s.State == SiblingStandby }

// String is the sibling in a message: "fra1.1 drained", "fra1.2 down
// (gossip: dead)".
func (s Sibling) String() string {
	d := s.Node + " " + strings.ReplaceAll(string(s.State), "_", " ")
	if s.Reason != "" {
		d += " (" + s.Reason + ")"
	}
	return d
}

// ErrLastInService is the refusal of a Wait on the last gateway of its
// site in service without Force (LastInService): the wait would only end
// at its timeout, and the answer would not be "it can be stopped".
var ErrLastInService = errors.New("this is the last gateway of its site in service")

// DrainPeer is a peer that still carries traffic: its node name, its
// data rates beyond probes and keepalives over the last sample, in bytes
// per second as WireGuard counts them, and how long it has been idle so
// far (less than the settle time).
type DrainPeer struct {
	Site        string  `json:"site"`
	RxPerSec    float64 `json:"rx_bytes_per_second"`
	TxPerSec    float64 `json:"tx_bytes_per_second"`
	IdleSeconds float64 `json:"idle_seconds"`
}

// DrainStatus is this gateway's drain state in status.
type DrainStatus struct {
	Drained bool       `json:"drained"`
	Since   *time.Time `json:"since"`
}

// drainHealth makes a drained gateway degraded, never critical: it is
// maintenance someone asked for, and the reason says how to end it.
func drainHealth(d DrainStatus, now time.Time) []string {
	if !d.Drained {
		return nil
	}
	since := ""
	if d.Since != nil {
		since = fmt.Sprintf(" for %s", now.Sub(*d.Since).Round(time.Second))
	}
	return []string{fmt.Sprintf("this gateway is drained for maintenance%s: peers send it nothing new and its fabric export is degraded (dcmesh undrain returns it to service)", since)}
}
