package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// StatusSchema versions the status and health JSON. It changes only when a
// field changes meaning or disappears; new fields may appear at any time.
// docs/STATUS.md documents every field.
const StatusSchema = 1

// PeerStateName is a peer's state in status and health (docs/STATUS.md;
// the rule is peerState's).
type PeerStateName string

const (
	PeerUp    PeerStateName = "up"    // the in-tunnel probes are answered (or, unprobed, a recent handshake)
	PeerStale PeerStateName = "stale" // probes unanswered, but WireGuard still has a session
	PeerDown  PeerStateName = "down"  // no handshake yet, or none for longer than a live pair goes without
)

// rejectAfterTime is WireGuard's session lifetime: a handshake older than
// this means no usable session.
const rejectAfterTime = 180 * time.Second

// Status is the answer of GET /v1/status (`dcmesh status --json`).
type Status struct {
	Schema          int               `json:"schema"`
	GeneratedAt     time.Time         `json:"generated_at"`
	Site            string            `json:"site"`
	Interface       string            `json:"interface"`
	Backend         string            `json:"backend"`
	ListenPort      int               `json:"listen_port"`
	PublicKey       string            `json:"public_key"`
	Key             KeyStatus         `json:"key"`
	Gossip          GossipStatus      `json:"gossip"`
	Peers           []PeerStatus      `json:"peers"`
	Routes          RouteStatus       `json:"routes"`
	RecordsRejected map[string]uint64 `json:"records_rejected"`
	StateDir        StateDirStatus    `json:"state_dir"`
	Untrusted       UntrustedStatus   `json:"untrusted_input"`
}

// UntrustedStatus counts what the agent refused or dropped of input it does
// not trust, since it started: from the underlay (gossip streams and
// datagrams, with or without the gossip key) and from local clients. None of
// it changes what the agent believes; the counts say someone is trying.
type UntrustedStatus struct {
	// GossipStreamsRefused: inbound gossip streams closed before memberlist
	// read them, by reason (too_many, per_source, too_large, budget,
	// timeout, malformed, unauthenticated).
	GossipStreamsRefused map[string]uint64 `json:"gossip_streams_refused"`
	// GossipMalformed: datagrams and streams that were not gossip sealed
	// with this cluster's key.
	GossipMalformed uint64 `json:"gossip_malformed"`
	// GossipDropped: received payloads dropped because the agent's inbox
	// budget was spent (states, messages, joins).
	GossipDropped map[string]uint64 `json:"gossip_dropped"`
	// GossipSquatters: announcements of a certified site's name from
	// another address than its record gives, refused.
	GossipSquatters uint64 `json:"gossip_squatters_refused"`
	// UncertifiedNodes: gossip nodes alive now that are no certified site
	// (they are not members: not counted, not sent to, not remembered).
	UncertifiedNodes int `json:"uncertified_nodes"`
	// RecordsSkipped: records, lists and states recognised as refused
	// before, so not decoded or checked again (their rejections are still
	// counted in records_rejected).
	RecordsSkipped uint64 `json:"records_skipped"`
	// ControlRefused: control-socket connections closed because the
	// connection cap was reached.
	ControlRefused uint64 `json:"control_connections_refused"`
}

// StateDirStatus says whether the state directory can be written.
type StateDirStatus struct {
	Path string `json:"path"`
	// Problems lists failed writes and a filesystem too full to rewrite
	// the state files; empty when all is well. Any entry is critical: a
	// site that cannot persist its sequence number stops refreshing its
	// record, and peers drop it after trust.record_expiry.
	Problems []string `json:"problems"`
}

// KeyStatus describes this site's WireGuard key and its rotation.
type KeyStatus struct {
	Epoch         uint64     `json:"epoch"`
	Since         time.Time  `json:"since"`
	AgeSeconds    int64      `json:"age_seconds"`
	NextRotation  *time.Time `json:"next_rotation"`
	RotationPhase string     `json:"rotation_phase"`
	LastResult    string     `json:"last_result"`
}

// GossipStatus describes the membership view.
type GossipStatus struct {
	Enabled        bool            `json:"enabled"`
	MembersByState map[string]int  `json:"members_by_state"`
	Members        []gossip.Member `json:"members"`
}

// PeerStatus is one WireGuard peer: what the device reports plus what the
// agent knows about it.
type PeerStatus struct {
	Site                string        `json:"site"`
	Source              string        `json:"source"` // static or gossip
	Role                string        `json:"role"`   // current, or next: pre-installed during the site's rotation
	PublicKey           string        `json:"public_key"`
	Endpoint            string        `json:"endpoint"`
	AllowedIPs          []string      `json:"allowed_ips"`
	LastHandshake       *time.Time    `json:"last_handshake"`
	HandshakeAgeSeconds *int64        `json:"handshake_age_seconds"`
	RxBytes             int64         `json:"rx_bytes"`
	TxBytes             int64         `json:"tx_bytes"`
	State               PeerStateName `json:"state"` // up, stale, down: see peerState
	// Probe is what the in-tunnel probes say; null for static peers, a
	// pre-installed next key, and before the first handshake.
	Probe            *ProbeStatus `json:"probe"`
	GossipState      string       `json:"gossip_state"` // alive, dead, left, unknown; static for static peers
	RoutesProgrammed bool         `json:"routes_programmed"`
}

// RouteStatus compares the routes the agent wants with those of ours the
// kernel holds.
type RouteStatus struct {
	Table                int `json:"table"`
	Desired              int `json:"desired"`
	Programmed           int `json:"programmed"`
	FailClosedDesired    int `json:"fail_closed_desired"`
	FailClosedProgrammed int `json:"fail_closed_programmed"`
}

func (a *Agent) untrustedStatus(rt *runtime) UntrustedStatus {
	u := UntrustedStatus{GossipStreamsRefused: map[string]uint64{}, GossipDropped: map[string]uint64{}}
	if rt.gossip != nil {
		r := rt.gossip.Refused()
		u.GossipStreamsRefused = map[string]uint64{"too_many": r.TooMany, "per_source": r.PerSource, "too_large": r.TooLarge,
			"budget": r.Budget, "timeout": r.Timeout, "malformed": r.Malformed, "unauthenticated": r.Unauthenticated}
		d := rt.gossip.Dropped()
		u.GossipDropped = map[string]uint64{"states": d.States, "messages": d.Messages, "joins": d.Joins}
		u.GossipMalformed = rt.gossip.Malformed()
		u.GossipSquatters = rt.gossip.RosterStats().Squatters
		u.UncertifiedNodes = rt.gossip.Uncertified()
	}
	if rt.in != nil {
		u.RecordsSkipped = rt.in.skipped
	}
	if a.ctl != nil {
		c := a.ctl.Stats()
		u.ControlRefused = c.Refused + c.Evicted
	}
	return u
}

// buildStatus reads the device and the kernel and describes everything.
func (a *Agent) buildStatus(rt *runtime) (Status, error) {
	now := time.Now()
	cfg := rt.cfg
	st := Status{
		Schema: StatusSchema, GeneratedAt: now.UTC(), Site: cfg.Site, Interface: cfg.Interface,
		Backend: string(rt.dev.Backend()), ListenPort: cfg.ListenPort, PublicKey: rt.key.Public().String(),
		RecordsRejected: map[string]uint64{},
		Key: KeyStatus{Epoch: rt.rot.Epoch, Since: rt.rot.KeySince.UTC(), AgeSeconds: int64(now.Sub(rt.rot.KeySince).Seconds()),
			RotationPhase: string(rt.rot.Phase), LastResult: rt.rot.LastResult},
		Gossip:   GossipStatus{Enabled: rt.gossip != nil, MembersByState: map[string]int{"alive": 0, "dead": 0, "left": 0}, Members: []gossip.Member{}},
		Peers:    []PeerStatus{},
		StateDir: StateDirStatus{Path: cfg.StateDir, Problems: []string{}},
	}
	if rt.disk != nil {
		st.StateDir.Problems = rt.disk.problems()
	}
	st.Untrusted = a.untrustedStatus(rt)
	if !rt.nextRotation.IsZero() {
		nr := rt.nextRotation.UTC()
		st.Key.NextRotation = &nr
	}
	dev, err := rt.wgc.Device(cfg.Interface)
	if err != nil {
		return st, fmt.Errorf("read WireGuard device: %w", err)
	}
	owned, err := rt.net.OwnedRoutes(cfg.RouteTable)
	if err != nil {
		return st, err
	}
	link := -1
	if l, err := rt.nl.LinkByName(cfg.Interface); err == nil {
		link = l.Attrs().Index
	}
	tunnel, failClosed := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for _, r := range owned {
		if r.Kind == netconfig.KindTunnel && r.Link == link && r.Metric == cfg.RouteMetric {
			tunnel[r.Dst] = true
		}
		if r.Kind == netconfig.KindUnreachable && r.Metric == cfg.RouteMetric+1 {
			failClosed[r.Dst] = true
		}
	}

	members := map[string]string{}
	if rt.gossip != nil {
		st.Gossip.Members = rt.gossip.Members()
		for i, m := range st.Gossip.Members {
			if sr, ok := rt.store.records[m.Name]; ok && sr.Leaving && m.State != "alive" {
				st.Gossip.Members[i].State = "left"
			}
			members[m.Name] = st.Gossip.Members[i].State
			st.Gossip.MembersByState[st.Gossip.Members[i].State]++
		}
		for r, n := range rt.store.rejected {
			st.RecordsRejected[string(r)] = n
		}
	}

	// Who is each key?
	type who struct{ site, source, role string }
	keys := map[wg.PublicKey]who{}
	keepalive := map[wg.PublicKey]time.Duration{}
	for _, p := range cfg.Peers {
		keys[p.PublicKey] = who{p.Name, "static", "current"}
	}
	for _, s := range rt.lastSites {
		keys[s.PublicKey] = who{s.Name, "gossip", "current"}
		if !s.Next.IsZero() {
			role := "next"
			if rt.cutover[s.Next] {
				role = "current"
			}
			keys[s.Next] = who{s.Name, "gossip", role}
		}
	}
	for _, p := range rt.lastWG.Peers {
		keepalive[p.PublicKey] = p.PersistentKeepalive
	}

	probes := rt.probeStates()
	for _, p := range dev.Peers {
		k := wg.PublicKey(p.PublicKey)
		w, ok := keys[k]
		if !ok {
			w = who{site: "", source: "unknown", role: "current"}
		}
		ps := PeerStatus{Site: w.site, Source: w.source, Role: w.role, PublicKey: k.String(),
			RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, AllowedIPs: []string{}}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		if !p.LastHandshakeTime.IsZero() {
			hs := p.LastHandshakeTime.UTC()
			age := int64(now.Sub(hs).Seconds())
			ps.LastHandshake, ps.HandshakeAgeSeconds = &hs, &age
		}
		var pr *probe.PeerState
		if s, ok := probes[w.site]; ok && w.role == "current" && w.source == "gossip" {
			pr = &s
			ps.Probe = probeStatus(s)
		}
		ps.State = peerState(now, p.LastHandshakeTime, keepalive[k], pr, rt.probing[w.site])
		switch {
		case w.source == "static":
			ps.GossipState = "static"
		case members[w.site] != "":
			ps.GossipState = members[w.site]
		default:
			ps.GossipState = "unknown"
		}
		ps.RoutesProgrammed = true
		for _, n := range p.AllowedIPs {
			a, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			pfx := netip.PrefixFrom(a.Unmap(), ones)
			ps.AllowedIPs = append(ps.AllowedIPs, pfx.String())
			if !tunnel[pfx] || !failClosed[pfx] {
				ps.RoutesProgrammed = false
			}
		}
		slices.SortFunc(ps.AllowedIPs, func(a, b string) int {
			pa, pb := netip.MustParsePrefix(a), netip.MustParsePrefix(b)
			if c := pa.Addr().Compare(pb.Addr()); c != 0 {
				return c
			}
			return pa.Bits() - pb.Bits()
		})
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool {
		if st.Peers[i].Site != st.Peers[j].Site {
			return st.Peers[i].Site < st.Peers[j].Site
		}
		return st.Peers[i].Role < st.Peers[j].Role
	})

	d := computeDesired(cfg, rt.key, rt.mtu, rt.lastSites, rt.cutover)
	st.Routes = RouteStatus{Table: cfg.RouteTable, Desired: len(uniquePrefixes(d.Net.Routes)), FailClosedDesired: len(uniquePrefixes(d.Net.FailClosed))}
	for _, p := range uniquePrefixes(d.Net.Routes) {
		if tunnel[p] {
			st.Routes.Programmed++
		}
	}
	for _, p := range uniquePrefixes(d.Net.FailClosed) {
		if failClosed[p] {
			st.Routes.FailClosedProgrammed++
		}
	}
	return st, nil
}

func uniquePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Health is the answer of GET /v1/health (`dcmesh health --json`).
type Health struct {
	Schema   int      `json:"schema"`
	Site     string   `json:"site"`
	Status   string   `json:"status"`    // healthy, degraded, critical
	ExitCode int      `json:"exit_code"` // 0, 1, 2
	Reasons  []string `json:"reasons"`
}

// Health statuses and the exit codes `dcmesh health` returns for them.
const (
	Healthy  = "healthy"  // 0
	Degraded = "degraded" // 1
	Critical = "critical" // 2
)

// EvaluateHealth applies the documented criteria (docs/STATUS.md) to a
// status:
//
//	critical: peers exist and none is up; or fail-closed routes missing
//	          (traffic for a remote site could leave in cleartext);
//	degraded: a peer stale or down; tunnel routes missing; no peers at all;
//	          the key overdue for rotation (older than 1.5 × interval); a
//	          rotation stuck in one phase for longer than stuckAfter;
//	healthy:  otherwise.
func EvaluateHealth(st Status, interval, stuckAfter time.Duration, now time.Time) Health {
	h := Health{Schema: StatusSchema, Site: st.Site, Reasons: []string{}}
	var critical, degraded []string
	current, up := 0, 0
	for _, p := range st.Peers {
		if p.Role == "next" {
			continue // a pre-installed key carries nothing until the cut-over
		}
		current++
		name := p.Site
		if name == "" {
			name = p.PublicKey[:8]
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
		critical = append(critical, fmt.Sprintf("no peer is up (0 of %d)", current))
	}
	if st.Routes.FailClosedProgrammed < st.Routes.FailClosedDesired {
		critical = append(critical, fmt.Sprintf("fail-closed routes missing: %d of %d programmed (traffic for a remote site could follow another route in cleartext)",
			st.Routes.FailClosedProgrammed, st.Routes.FailClosedDesired))
	}
	for _, p := range st.StateDir.Problems {
		critical = append(critical, "state directory: "+p+" (this site cannot refresh its record, and peers drop it after trust.record_expiry: free space there; the agent retries by itself)")
	}
	if st.Routes.Programmed < st.Routes.Desired {
		degraded = append(degraded, fmt.Sprintf("tunnel routes missing: %d of %d programmed", st.Routes.Programmed, st.Routes.Desired))
	}
	if interval > 0 && st.Key.NextRotation != nil && time.Duration(st.Key.AgeSeconds)*time.Second > interval*3/2 {
		degraded = append(degraded, fmt.Sprintf("key overdue: %s old, rotation interval %s", time.Duration(st.Key.AgeSeconds)*time.Second, interval))
	}
	if st.Key.RotationPhase != "" && st.Key.RotationPhase != string(wg.PhaseStable) && stuckAfter > 0 {
		degraded = append(degraded, fmt.Sprintf("key rotation in phase %s", st.Key.RotationPhase))
	}
	switch {
	case len(critical) > 0:
		h.Status, h.ExitCode = Critical, 2
	case len(degraded) > 0:
		h.Status, h.ExitCode = Degraded, 1
	default:
		h.Status, h.ExitCode = Healthy, 0
	}
	h.Reasons = append(append(h.Reasons, critical...), degraded...)
	return h
}

// FormatStatus renders a status as the table `dcmesh status` prints.
func FormatStatus(st Status, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "site %s: interface %s (%s WireGuard), port %d, key %s\n", st.Site, st.Interface, st.Backend, st.ListenPort, st.PublicKey)
	k := st.Key
	fmt.Fprintf(&b, "key: epoch %d, %s old", k.Epoch, roundAge(time.Duration(k.AgeSeconds)*time.Second))
	if k.NextRotation != nil {
		fmt.Fprintf(&b, ", next rotation in %s", roundAge(k.NextRotation.Sub(now)))
	}
	fmt.Fprintf(&b, ", rotation %s", k.RotationPhase)
	if k.LastResult != "" {
		fmt.Fprintf(&b, " (last: %s)", k.LastResult)
	}
	b.WriteString("\n")
	if st.Gossip.Enabled {
		var parts []string
		for _, s := range []string{"alive", "dead", "left"} {
			if n := st.Gossip.MembersByState[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, s))
			}
		}
		fmt.Fprintf(&b, "gossip: %s members\n", strings.Join(parts, ", "))
	} else {
		b.WriteString("gossip: off (static peers only)\n")
	}
	fmt.Fprintf(&b, "routes (table %d): %d/%d tunnel, %d/%d fail-closed programmed\n",
		st.Routes.Table, st.Routes.Programmed, st.Routes.Desired, st.Routes.FailClosedProgrammed, st.Routes.FailClosedDesired)
	if len(st.RecordsRejected) > 0 {
		var parts []string
		for r, n := range st.RecordsRejected {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(&b, "records rejected: %s\n", strings.Join(parts, ", "))
	}
	for _, p := range st.StateDir.Problems {
		fmt.Fprintf(&b, "state directory: %s\n", p)
	}
	b.WriteString("\n")
	rows := [][]string{{"PEER", "STATE", "HANDSHAKE", "RX", "TX", "ENDPOINT", "ROUTES", "GOSSIP", "KEY", "ALLOWED IPS"}}
	for _, p := range st.Peers {
		name := p.Site
		if name == "" {
			name = "(unknown)"
		}
		if p.Role == "next" {
			name += " (next key)"
		}
		hs := "never"
		if p.HandshakeAgeSeconds != nil {
			hs = roundAge(time.Duration(*p.HandshakeAgeSeconds)*time.Second) + " ago"
		}
		routes := "ok"
		if !p.RoutesProgrammed {
			routes = "MISSING"
		}
		if len(p.AllowedIPs) == 0 {
			routes = "-"
		}
		ep := p.Endpoint
		if ep == "" {
			ep = "-"
		}
		rows = append(rows, []string{name, string(p.State), hs, bytesIEC(p.RxBytes), bytesIEC(p.TxBytes), ep, routes, p.GossipState, p.PublicKey[:8] + "…", strings.Join(p.AllowedIPs, ", ")})
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c + strings.Repeat(" ", widths[i]-len([]rune(c))+2))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
