package mesh

import (
	"context"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Whether a peer is up is measured through its tunnel: every gossip site
// runs BFD-format probes (mesh/probe) with every other one, between overlay
// addresses, so they travel inside WireGuard like the traffic they stand
// for. WireGuard's own signals cannot say it: on an idle pair only one side
// sends keepalives (each side's keepalive timer restarts on what it
// receives), and a handshake is up to three minutes old on a live pair.
//
// A probe session starts only once the pair has completed a handshake:
// probes are data, and data from both sides at once would make both
// initiate, defeating the stagger of first handshakes (firstHandshakeDelay)
// and costing WireGuard's 5 s retry. Static peers are not probed (they may
// be plain WireGuard routers, which would never answer): their state comes
// from the handshake age alone.

// probeGrace is how long a new probe session may take to come up before its
// silence counts: it starts at one packet a second (RFC 5880 §6.8.3).
const probeGrace = 5 * time.Second

// startProber opens the probes on this site's overlay address. The prober
// stops with ctx.
func (a *Agent) startProber(ctx context.Context, rt *siteRuntime) error {
	h := rt.cfg.Health
	pc := probe.DefaultConfig()
	pc.Local = rt.cfg.OverlayAddress.Addr()
	pc.Port, pc.Interval, pc.Multiplier, pc.Hold = h.Port, h.Interval, h.Multiplier, h.Hold
	pc.Logger = a.log.With("component", "probe")
	p, err := probe.New(pc)
	if err != nil {
		return err
	}
	rt.prober, rt.probing = p, map[string]time.Time{}
	go func() {
		if err := p.Run(ctx); err != nil {
			a.log.Error("in-tunnel probes stopped; peer states fall back to handshake age", "err", err)
		}
	}()
	return nil
}

// setProbeTargets probes every remote gateway whose current key has
// completed a handshake (dev is every slot's device as just read), by node
// name, and keeps probing a gateway until it is gone.
func (rt *siteRuntime) setProbeTargets(sites []records.Site, dev *wgtypes.Device) {
	if rt.prober == nil || dev == nil {
		return
	}
	shook := map[wg.PublicKey]bool{}
	for _, p := range dev.Peers {
		if !p.LastHandshakeTime.IsZero() {
			shook[wg.PublicKey(p.PublicKey)] = true
		}
	}
	local := rt.cfg.OverlayAddress.Addr()
	now := time.Now()
	var targets []probe.Target
	wanted := map[string]bool{}
	for _, s := range sites {
		if !s.Overlay.IsValid() || s.Overlay.Is4() != local.Is4() {
			continue
		}
		node := s.Node() // the site's name for gateway 0
		if _, ok := rt.probing[node]; !ok {
			if !shook[s.PublicKey] && (s.Next.IsZero() || !shook[s.Next]) {
				continue
			}
			rt.probing[node] = now
		}
		wanted[node] = true
		targets = append(targets, probe.Target{Name: node, Addr: s.Overlay})
	}
	for name := range rt.probing {
		if !wanted[name] {
			delete(rt.probing, name)
		}
	}
	_ = rt.prober.SetTargets(targets) // names and addresses come from verified certificates
}

// probeStates returns the prober's view by node name (records.Site.Node:
// the site's name for gateway 0; empty without a prober).
func (rt *siteRuntime) probeStates() map[string]probe.PeerState {
	out := map[string]probe.PeerState{}
	if rt.prober == nil {
		return out
	}
	for _, s := range rt.prober.Snapshot() {
		out[s.Name] = s
	}
	return out
}

// rekeyTimeout is WireGuard's REKEY_TIMEOUT.
const rekeyTimeout = 5 * time.Second

// peerState classifies a peer. pr is its probe session, if one runs, and
// probingSince when it was started.
//
//   - up: the probes are answered; without probes, a handshake recent
//     enough for a live pair (below).
//   - stale: the probes go unanswered (after the session's first
//     probeGrace), but WireGuard still has a session: the peer's agent may
//     be down while its kernel tunnel still forwards, or the path loses
//     most packets.
//   - down: no handshake yet, or none for longer than a live pair ever goes
//     without one.
//
// A live pair with persistent keepalive k on either side completes a
// handshake at least every REJECT_AFTER_TIME (180 s) + k + REKEY_TIMEOUT: a
// session is renewed before it expires as soon as either side sends, and a
// keepalive is sent after k of silence. Without keepalive (k = 0) an idle
// pair has no session to speak of, so only the 180 s count.
func peerState(now, lastHandshake time.Time, keepalive time.Duration, pr *probe.PeerState, probingSince time.Time) control.PeerState {
	session := !lastHandshake.IsZero() && now.Sub(lastHandshake) <= rejectAfterTime
	if pr != nil {
		if pr.State == probe.StateUp {
			return control.PeerUp
		}
		if pr.Downs > 0 || now.Sub(probingSince) > probeGrace {
			if session {
				return control.PeerStale
			}
			return control.PeerDown
		}
	}
	limit := rejectAfterTime
	if keepalive > 0 {
		limit += keepalive + rekeyTimeout
	}
	if lastHandshake.IsZero() || now.Sub(lastHandshake) > limit {
		return control.PeerDown
	}
	return control.PeerUp
}

func probeStatus(s probe.PeerState) *control.ProbeStatus {
	return &control.ProbeStatus{State: control.ProbeState(s.State.String()), Since: s.Since.UTC(), RTTMillis: float64(s.SRTT.Microseconds()) / 1000,
		Loss: s.Loss, Downs: s.Downs}
}
