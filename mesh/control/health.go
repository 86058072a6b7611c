package control

import (
	"fmt"
	"time"
)

// Health is the answer of GET /v1/health (`dcmesh health --json`).
type Health struct {
	Schema   int          `json:"schema"`
	Site     string       `json:"site"`
	Status   HealthStatus `json:"status"`
	ExitCode int          `json:"exit_code"` // HealthStatus.ExitCode
	Reasons  []string     `json:"reasons"`
}

// HealthStatus is a site's health, and `dcmesh health`'s exit code.
type HealthStatus string

const (
	Healthy  HealthStatus = "healthy"  // 0
	Degraded HealthStatus = "degraded" // 1
	Critical HealthStatus = "critical" // 2
	// HealthUnknown is the client's verdict when it could not ask (3);
	// the agent never answers it.
	HealthUnknown HealthStatus = "unknown"
)

// ExitCode is the exit code `dcmesh health` returns for s.
func (s HealthStatus) ExitCode() int {
	switch s {
	case Healthy:
		return 0
	case Degraded:
		return 1
	case Critical:
		return 2
	}
	return 3
}

// EvaluateHealth applies the documented criteria (docs/STATUS.md) to a
// status:
//
//	critical: peers exist and none is up; or fail-closed routes missing
//	          (traffic for a remote site could leave in cleartext); or a
//	          route of others shadows a peer's prefix;
//	degraded: a peer stale or down; tunnel routes missing; no peers at all;
//	          the key overdue for rotation (older than 1.5 × interval); a
//	          rotation stuck in one phase for longer than stuckAfter;
//	          this site's certificate or a pinned CA within
//	          health.certificate_warn of expiry (critical within
//	          health.certificate_critical, or expired: health_trust.go);
//	          this gateway drained for maintenance (drain.go);
//	healthy:  otherwise.
func EvaluateHealth(st Status, interval, stuckAfter time.Duration, now time.Time) Health {
	h := Health{Schema: StatusSchema, Site: st.Site, Reasons: []string{}}
	critical, degraded := peerHealth(st.Peers, now)
	critical = append(critical, shadowHealth(st.Peers)...)
	if st.Routes.FailClosedProgrammed < st.Routes.FailClosedDesired {
		critical = append(critical, fmt.Sprintf("fail-closed routes missing: %d of %d programmed (traffic for a remote site could follow another route in cleartext)",
			st.Routes.FailClosedProgrammed, st.Routes.FailClosedDesired))
	}
	for _, p := range st.StateDir.Problems {
		critical = append(critical, "state directory: "+p+" (this site cannot refresh its record, and peers drop it after trust.record_expiry: free space there; the agent retries by itself)")
	}
	critical, degraded = trustHealth(st.Trust, critical, degraded)
	degraded = append(degraded, gossipKeyHealth(st.Gossip.Key, now)...)
	degraded = append(degraded, drainHealth(st.Drain, now)...)
	if st.Routes.Programmed < st.Routes.Desired {
		degraded = append(degraded, fmt.Sprintf("tunnel routes missing: %d of %d programmed", st.Routes.Programmed, st.Routes.Desired))
	}
	if interval > 0 && st.Key.NextRotation != nil && time.Duration(st.Key.AgeSeconds)*time.Second > interval*3/2 {
		degraded = append(degraded, fmt.Sprintf("key overdue: %s old, rotation interval %s", time.Duration(st.Key.AgeSeconds)*time.Second, interval))
	}
	if st.Key.RotationPhase != "" && st.Key.RotationPhase != PhaseStable && stuckAfter > 0 {
		degraded = append(degraded, fmt.Sprintf("key rotation in phase %s", st.Key.RotationPhase))
	}
	switch {
	case len(critical) > 0:
		h.Status = Critical
	case len(degraded) > 0:
		h.Status = Degraded
	default:
		h.Status = Healthy
	}
	h.ExitCode = h.Status.ExitCode()
	h.Reasons = append(append(h.Reasons, critical...), degraded...)
	return h
}

// AllDownConfirm is how long no peer may be up before health is critical
// when the last of them went down by its probes: a host stalled for a
// second (a loaded machine, a paused VM) takes every probe session down at
// once, and they are back within the probes' hold; paging on that would
// be a false alarm. Each of them is degraded at once meanwhile.
const AllDownConfirm = 5 * time.Second

// peerHealth is what the peers' states say: critical when peers exist and
// none is up (confirmed for AllDownConfirm if the probes just took the last
// ones down), degraded for each one stale or down, and without peers.
func peerHealth(peers []PeerStatus, now time.Time) (critical, degraded []string) {
	current, up := 0, 0
	var lastDown time.Time // the most recent probe down among the peers
	for _, p := range peers {
		if p.Role == RoleNext {
			continue // a pre-installed key carries nothing until the cut-over
		}
		current++
		name := p.Name()
		if name == "" {
			name = p.PublicKey[:8]
		}
		if p.State != PeerUp && p.Probe != nil && p.Probe.Downs > 0 && p.Probe.Since.After(lastDown) {
			lastDown = p.Probe.Since
		}
		switch p.State {
		case PeerUp:
			up++
		case PeerStale:
			degraded = append(degraded, fmt.Sprintf("peer %s stale: the probes through its tunnel go unanswered, though WireGuard still has a session (its agent may be down, or the path loses most packets)", name))
		default:
			if p.LastHandshake == nil {
				degraded = append(degraded, fmt.Sprintf("peer %s down: no handshake yet", name))
			} else {
				degraded = append(degraded, fmt.Sprintf("peer %s down: last handshake %s ago", name, time.Duration(*p.HandshakeAgeSeconds)*time.Second))
			}
		}
	}
	if current == 0 {
		degraded = append(degraded, "no peers: no remote site is configured or known yet")
	} else if up == 0 {
		if since := now.Sub(lastDown); !lastDown.IsZero() && since < AllDownConfirm {
			degraded = append(degraded, fmt.Sprintf("no peer is up (0 of %d) for %s: critical if it lasts %s (a stalled host takes every probe session down at once)",
				current, since.Round(100*time.Millisecond), AllDownConfirm))
		} else {
			critical = append(critical, fmt.Sprintf("no peer is up (0 of %d)", current))
		}
	}
	return critical, degraded
}
