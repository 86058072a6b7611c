package control

import (
	"net/netip"
	"time"
)

// The answers of GET /v1/status and /v1/health, as the agent builds them and
// every client reads them. docs/STATUS.md documents every field; the JSON
// names are the contract.

// StatusSchema versions the status and health JSON. It changes only when a
// field changes meaning or disappears; new fields may appear at any time.
const StatusSchema = 1

// PeerState is a peer's state in status and health (docs/STATUS.md; the
// agent's rule decides it).
type PeerState string

const (
	PeerUp    PeerState = "up"    // the in-tunnel probes are answered (or, unprobed, a recent handshake)
	PeerStale PeerState = "stale" // probes unanswered, but WireGuard still has a session
	PeerDown  PeerState = "down"  // no handshake yet, or none for longer than a live pair goes without
)

// Role says which of a site's keys a peer is.
type Role string

const (
	RoleCurrent Role = "current" // the key that carries the site's prefixes
	RoleNext    Role = "next"    // pre-installed during the site's rotation: carries nothing yet
)

// Source says where the agent learnt of a peer.
type Source string

const (
	SourceStatic  Source = "static"  // the configuration's peers
	SourceGossip  Source = "gossip"  // a signed site record
	SourceUnknown Source = "unknown" // on the device, but neither (set by hand)
)

// MemberState is a gossip member's state, and a peer's gossip state.
type MemberState string

const (
	MemberAlive MemberState = "alive"
	MemberDead  MemberState = "dead" // failed, or left without a goodbye record
	MemberLeft  MemberState = "left" // said goodbye with a signed record
	// For peers only: a gossip site the membership does not list, and
	// static peers (which are not in gossip).
	MemberUnknown MemberState = "unknown"
	MemberStatic  MemberState = "static"
)

// MemberStates are the states members are counted by, in display order.
var MemberStates = []MemberState{MemberAlive, MemberDead, MemberLeft}

// ProbeState is an in-tunnel probe session's state.
type ProbeState string

const (
	ProbeUp        ProbeState = "up"
	ProbeInit      ProbeState = "init"
	ProbeDown      ProbeState = "down"
	ProbeAdminDown ProbeState = "admin_down" // the peer's agent stopped its probes
)

// PhaseStable is KeyStatus.RotationPhase when no rotation is under way (the
// other phases are prepared, switching and switched).
const PhaseStable = "stable"

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
	// Trust is this site's trust material and its expiry (gossip sites
	// only; null for a static-only site).
	Trust *TrustStatus `json:"trust"`
	// Drain is this gateway's planned-maintenance state (`dcmesh drain`).
	Drain DrainStatus `json:"drain"`
}

// UntrustedStatus counts what the agent refused or dropped of input it does
// not trust, since it started: from the underlay (gossip streams and
// datagrams, with or without the gossip key) and from local clients. None of
// it changes what the agent believes; the counts say someone is trying.
type UntrustedStatus struct {
	// GossipStreamsRefused: inbound gossip streams closed before memberlist
	// read them, by reason (StreamRefusalReasons).
	GossipStreamsRefused map[string]uint64 `json:"gossip_streams_refused"`
	// GossipMalformed: datagrams and streams that were not gossip sealed
	// with this cluster's key.
	GossipMalformed uint64 `json:"gossip_malformed"`
	// GossipDropped: received payloads dropped because the agent's inbox
	// budget was spent, by kind (DropKinds).
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

// The keys of UntrustedStatus's maps, every one always present.
var (
	StreamRefusalReasons = []string{"too_many", "per_source", "too_large", "budget", "timeout", "malformed", "unauthenticated"}
	DropKinds            = []string{"states", "messages", "joins"}
)

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
	RotationPhase string     `json:"rotation_phase"` // PhaseStable, prepared, switching, switched
	LastResult    string     `json:"last_result"`
}

// GossipStatus describes the membership view.
type GossipStatus struct {
	Enabled        bool                `json:"enabled"`
	MembersByState map[MemberState]int `json:"members_by_state"`
	Members        []Member            `json:"members"`
	Key            *GossipKeyStatus    `json:"key,omitempty"`
}

// Member is one gossip member as this site sees it.
type Member struct {
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	State MemberState    `json:"state"` // alive, dead or left
}

// PeerStatus is one WireGuard peer: what the device reports plus what the
// agent knows about it.
type PeerStatus struct {
	// Site is the site the key belongs to; Gateway which of its gateways
	// (0 for a one-gateway site and for static peers); Node the gateway's
	// node name (trust.GatewayID.String: the site name for gateway 0,
	// "fra1.1" for gateway 1), the peer's name in status, logs and metrics.
	Site                string     `json:"site"`
	Gateway             uint8      `json:"gateway"`
	Node                string     `json:"node"`
	Source              Source     `json:"source"`
	Role                Role       `json:"role"`
	PublicKey           string     `json:"public_key"`
	Endpoint            string     `json:"endpoint"`
	AllowedIPs          []string   `json:"allowed_ips"`
	LastHandshake       *time.Time `json:"last_handshake"`
	HandshakeAgeSeconds *int64     `json:"handshake_age_seconds"`
	RxBytes             int64      `json:"rx_bytes"`
	TxBytes             int64      `json:"tx_bytes"`
	State               PeerState  `json:"state"`
	// Probe is what the in-tunnel probes say; null for static peers, a
	// pre-installed next key, and before the first handshake.
	Probe            *ProbeStatus `json:"probe"`
	GossipState      MemberState  `json:"gossip_state"` // alive, dead, left, unknown; static for static peers
	RoutesProgrammed bool         `json:"routes_programmed"`
	// Uplinks are the site's endpoints and which one is in use; null for
	// static peers and a pre-installed next key.
	Uplinks *UplinkStatus `json:"uplinks"`
	// Shadowed lists routes of others that take traffic for one of this
	// peer's prefixes away from the tunnel; empty when none does.
	Shadowed []ShadowedRoute `json:"shadowed"`
	// Draining: the peer's record says its gateway is drained for
	// maintenance (it still carries what reaches it).
	Draining bool `json:"draining"`
	// Interface is the WireGuard interface this site holds the peer on:
	// the configured one for static peers and gateway 0 of a site, its
	// slot's ("dcm0g1") for gateway N.
	Interface string `json:"interface"`
	// InGroup, for a gateway of a site with several: whether the site's
	// nexthop group has it as a member now (healthy, not draining and
	// active, or a standby while no active gateway of the site is
	// healthy); null for the peers of one-gateway sites and static peers.
	InGroup *bool `json:"in_group"`
}

// UplinkStatus is a gossip site's endpoints as this site uses them.
type UplinkStatus struct {
	// Endpoints are the site's endpoints in its order of preference.
	Endpoints []string `json:"endpoints"`
	// InUse is the one this site sends to (the device may follow the
	// peer's packets elsewhere: that is Endpoint).
	InUse string `json:"in_use"`
	// Failovers counts switches away from an endpoint that stopped
	// answering since the agent started.
	Failovers uint64 `json:"failovers"`
	// Phase is settled, trying (a fallback after a failure) or returning
	// (a trial of the preferred endpoint after the hold).
	Phase string `json:"phase"`
}

// ShadowedRoute is a route of someone else's that takes traffic for one of
// a peer's prefixes: traffic to it does not enter the tunnel.
type ShadowedRoute struct {
	// Prefix is the peer's prefix that is shadowed.
	Prefix string `json:"prefix"`
	// Route is the shadowing route as `ip route` would show it.
	Route    string `json:"route"`
	Dst      string `json:"dst"`
	Table    int    `json:"table"`
	Protocol string `json:"protocol"`
	// Dev lists the interfaces it sends to (empty for blackhole,
	// unreachable and prohibit routes).
	Dev []string `json:"dev"`
}

// ProbeStatus is what the in-tunnel probes say of a peer.
type ProbeStatus struct {
	// State is the session state as reported, with the anti-flap hold.
	State ProbeState `json:"state"`
	Since time.Time  `json:"since"`
	// RTTMillis is the smoothed round-trip time through the tunnel,
	// milliseconds (0 before the first sample).
	RTTMillis float64 `json:"rtt_ms"`
	// Loss is the share of probes lost over the last 10 s while up.
	Loss float64 `json:"loss"`
	// Downs counts the times the session went down.
	Downs uint64 `json:"downs"`
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

// TrustStatus is this site's trust material: its certificate, the pinned
// CAs, and the certificate each peer's record carries, each with its expiry
// as the agent's thresholds (health.certificate_warn, _critical) classify it.
type TrustStatus struct {
	Certificate CertificateStatus `json:"certificate"`
	CertFile    string            `json:"cert_file"`
	CAFile      string            `json:"ca_file"`
	// CAs are the pinned CAs, as in CAFile (two during a CA rollover).
	CAs []CertificateStatus `json:"cas"`
	// Peers are the remote sites' certificates, by site name.
	Peers           []CertificateStatus `json:"peers"`
	WarnSeconds     int64               `json:"warn_seconds"`
	CriticalSeconds int64               `json:"critical_seconds"`
}

// ExpiryState is how close a certificate is to its not-after.
type ExpiryState string

const (
	ExpiryHealthy  ExpiryState = "healthy"
	ExpiryDegraded ExpiryState = "degraded" // within health.certificate_warn
	ExpiryCritical ExpiryState = "critical" // within health.certificate_critical, or expired
)

// CertificateStatus is one certificate's identity and validity.
type CertificateStatus struct {
	// Subject is the site name of a site certificate, a CA's common name.
	Subject string `json:"subject"`
	Serial  string `json:"serial"` // hex
	// IssuerID is the id (trust.CAID) of the pinned CA that signed it, or
	// a CA's own id; empty when no pinned CA did.
	IssuerID    string      `json:"issuer_id"`
	NotBefore   time.Time   `json:"not_before"`
	NotAfter    time.Time   `json:"not_after"`
	LeftSeconds int64       `json:"left_seconds"` // 0 or less once expired
	State       ExpiryState `json:"state"`
	Message     string      `json:"message"`
}

// Name is the peer's name as status shows it: its node name, else (a
// status from an older agent) its site.
func (p PeerStatus) Name() string {
	if p.Node != "" {
		return p.Node
	}
	return p.Site
}
