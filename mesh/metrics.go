package mesh

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics exposes the agent on --metrics-addr for Prometheus. Gauges and the
// device counters come from a status the agent loop builds for the scrape
// (asked through fresh, bounded by a timeout); if the loop is busy the last
// one is served, with dcmesh_status_timestamp_seconds telling its age. The
// agent's own counters (reconciles, their errors, route repairs, rotations)
// are counted where they happen. Every name is documented in
// docs/METRICS.md; the names follow Prometheus' conventions: times are
// Unix timestamps (_timestamp_seconds), not ages; states are one-hot
// families with every state present, never a label on a 0/1 series.
type metrics struct {
	reg             *prometheus.Registry
	snapshot        atomic.Pointer[control.Status]
	fresh           func(context.Context) (*control.Status, error)
	reconcile       prometheus.Histogram
	reconcileErrors prometheus.Counter
	routeRepairs    *prometheus.CounterVec
	rotations       *prometheus.CounterVec
}

// BuildInfo names the build in dcmesh_build_info.
type BuildInfo struct {
	Version   string // the release, or "dev"
	GoVersion string // runtime.Version()
	Revision  string // the VCS commit, or "unknown"
}

// readBuildInfo completes version with what the Go toolchain stamped into
// the binary.
func readBuildInfo(version string) BuildInfo {
	bi := BuildInfo{Version: version, GoVersion: runtime.Version(), Revision: "unknown"}
	if bi.Version == "" {
		bi.Version = "dev"
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				bi.Revision = s.Value
			}
		}
	}
	return bi
}

func newMetrics(build BuildInfo) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reconcile = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dcmesh_reconcile_duration_seconds",
		Help:    "Time to compute and apply the desired WireGuard peers and routes.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1},
	})
	m.reconcileErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dcmesh_reconcile_errors_total",
		Help: "Reconciles that left something unapplied (a route conflict, a netlink or WireGuard error, each logged); retried at the next check.",
	})
	m.routeRepairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dcmesh_route_repairs_total",
		Help: "Routes of ours put back after someone deleted or changed them, by kind (tunnel, fail_closed).",
	}, []string{"kind"})
	for _, k := range []string{routeKindTunnel, routeKindFailClosed} {
		m.routeRepairs.WithLabelValues(k)
	}
	m.rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dcmesh_rotations_total",
		Help: "Key rotations of this site by result: complete (every peer cut over), incomplete (some did not confirm), failed (did not start).",
	}, []string{"result"})
	for _, r := range []control.RotateResult{control.RotateComplete, control.RotateIncomplete, control.RotateFailed} {
		m.rotations.WithLabelValues(string(r))
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dcmesh_build_info",
		Help:        "Always 1; labels name the agent's build.",
		ConstLabels: prometheus.Labels{"version": build.Version, "goversion": build.GoVersion, "revision": build.Revision},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(m.reconcile, m.reconcileErrors, m.routeRepairs, m.rotations, buildInfo, (*snapshotCollector)(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// The label values of dcmesh_routes_desired, _programmed and
// dcmesh_route_repairs_total.
const (
	routeKindTunnel     = "tunnel"
	routeKindFailClosed = "fail_closed"
)

// peerStates and rotationPhases are the values of the one-hot families
// dcmesh_peer_state and dcmesh_key_rotation_phase, every one always present
// (so that a state change moves a value, not a series).
var (
	peerStates     = []control.PeerState{control.PeerUp, control.PeerStale, control.PeerDown}
	rotationPhases = []wg.RotationPhase{wg.PhaseStable, wg.PhasePrepared, wg.PhaseSwitching, wg.PhaseSwitched}
)

// peerLabels: "site" is the peer's node name (control.PeerStatus.Name:
// the site for gateway 0, "fra1.1" for gateway 1), so that the series of
// one-gateway sites stay as they were and each gateway has its own.
var peerLabels = []string{"site", "public_key", "role"}

var (
	descInfo      = prometheus.NewDesc("dcmesh_info", "Always 1; labels describe the agent.", []string{"site", "interface", "backend", "public_key"}, nil)
	descHandshake = prometheus.NewDesc("dcmesh_peer_last_handshake_timestamp_seconds", "When the last WireGuard handshake with the peer completed (0: never, as wg show latest-handshakes says).", peerLabels, nil)
	descRx        = prometheus.NewDesc("dcmesh_peer_receive_bytes_total", "Bytes received from the peer, as the WireGuard device counts them.", peerLabels, nil)
	descTx        = prometheus.NewDesc("dcmesh_peer_transmit_bytes_total", "Bytes sent to the peer, as the WireGuard device counts them.", peerLabels, nil)
	descPeerUp    = prometheus.NewDesc("dcmesh_peer_up", "1 if the peer's state is up, 0 if stale or down (dcmesh_peer_state says which; docs/STATUS.md).", peerLabels, nil)
	descPeerState = prometheus.NewDesc("dcmesh_peer_state", "1 for the peer's state (up, stale, down), 0 for the others.", append(slices.Clone(peerLabels), "state"), nil)
	descProbeRTT  = prometheus.NewDesc("dcmesh_peer_probe_rtt_seconds", "Smoothed round-trip time of the in-tunnel probes (absent for unprobed peers).", peerLabels, nil)
	descProbeLoss = prometheus.NewDesc("dcmesh_peer_probe_loss_ratio", "Share of in-tunnel probes lost over the last 10 s (absent for unprobed peers).", peerLabels, nil)
	descPeerRoute = prometheus.NewDesc("dcmesh_peer_routes_programmed", "1 if every allowed prefix of the peer has its tunnel and fail-closed route.", peerLabels, nil)
	descInGroup   = prometheus.NewDesc("dcmesh_peer_in_group", "1 while the peer, a gateway of a site with several, is a member of its site's nexthop group (absent for one-gateway sites).", peerLabels, nil)
	descKeySince  = prometheus.NewDesc("dcmesh_key_current_since_timestamp_seconds", "When this site's current WireGuard key became current.", nil, nil)
	descKeyEpoch  = prometheus.NewDesc("dcmesh_key_epoch", "Completed key rotations of this site.", nil, nil)
	descNextRot   = prometheus.NewDesc("dcmesh_key_next_rotation_timestamp_seconds", "When the next scheduled rotation starts (absent if none).", nil, nil)
	descRotPhase  = prometheus.NewDesc("dcmesh_key_rotation_phase", "1 for this site's key rotation phase (stable, prepared, switching, switched), 0 for the others.", []string{"phase"}, nil)
	descRejected  = prometheus.NewDesc("dcmesh_records_rejected_total", "Site records, acks and lists refused, by reason.", []string{"reason"}, nil)
	descRoutesD   = prometheus.NewDesc("dcmesh_routes_desired", "Routes the agent wants, by kind (tunnel, fail_closed).", []string{"kind"}, nil)
	descRoutesP   = prometheus.NewDesc("dcmesh_routes_programmed", "Routes of ours the kernel holds that the agent wants, by kind.", []string{"kind"}, nil)
	descMembers   = prometheus.NewDesc("dcmesh_gossip_members", "Gossip members by state (alive, dead, left).", []string{"state"}, nil)
	descStreams   = prometheus.NewDesc("dcmesh_gossip_streams_refused_total", "Inbound gossip streams closed before memberlist read them, by reason.", []string{"reason"}, nil)
	descMalformed = prometheus.NewDesc("dcmesh_gossip_malformed_total", "Gossip datagrams and streams not sealed with this cluster's key.", nil, nil)
	descDropped   = prometheus.NewDesc("dcmesh_gossip_dropped_total", "Received gossip payloads dropped because the inbox budget was spent, by kind.", []string{"kind"}, nil)
	descSquatters = prometheus.NewDesc("dcmesh_gossip_squatters_refused_total", "Announcements of a certified site's name from another address, refused.", nil, nil)
	descUncert    = prometheus.NewDesc("dcmesh_gossip_uncertified_nodes", "Gossip nodes alive that are no certified site.", nil, nil)
	descSkipped   = prometheus.NewDesc("dcmesh_records_skipped_total", "Received records, lists and states recognised as refused before and not checked again.", nil, nil)
	descCtlRef    = prometheus.NewDesc("dcmesh_control_connections_refused_total", "Control-socket connections closed at the connection cap.", nil, nil)
	descSnapshot  = prometheus.NewDesc("dcmesh_status_timestamp_seconds", "When the values above were read.", nil, nil)
)

type snapshotCollector metrics

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descHandshake, descRx, descTx, descPeerUp, descPeerState, descProbeRTT, descProbeLoss,
		descPeerRoute, descInGroup, descKeySince, descKeyEpoch, descNextRot, descRotPhase, descRejected, descRoutesD, descRoutesP, descMembers,
		descStreams, descMalformed, descDropped, descSquatters, descUncert, descSkipped, descCtlRef, descSnapshot} {
		ch <- d
	}
	describeTrust(ch)
	describeUplinks(ch)
	describeGossipKey(ch)
	describeDrain(ch)
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	if c.fresh != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if st, err := c.fresh(ctx); err == nil {
			c.snapshot.Store(st)
		}
		cancel()
	}
	if st := c.snapshot.Load(); st != nil {
		collectStatus(ch, st)
	}
}

// emit sends const metrics of one type.
type emit func(d *prometheus.Desc, v float64, labels ...string)

func emitter(ch chan<- prometheus.Metric, t prometheus.ValueType) emit {
	return func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
}

// collectStatus turns a status into the snapshot's metrics.
func collectStatus(ch chan<- prometheus.Metric, st *control.Status) {
	g, ctr := emitter(ch, prometheus.GaugeValue), emitter(ch, prometheus.CounterValue)
	g(descInfo, 1, st.Site, st.Interface, st.Backend, st.PublicKey)
	for _, p := range st.Peers {
		collectPeer(g, ctr, p)
	}
	collectUplinks(ch, st)
	g(descKeySince, unixSeconds(st.Key.Since))
	g(descKeyEpoch, float64(st.Key.Epoch))
	if st.Key.NextRotation != nil {
		g(descNextRot, unixSeconds(*st.Key.NextRotation))
	}
	for _, ph := range rotationPhases {
		g(descRotPhase, oneIf(st.Key.RotationPhase == string(ph)), string(ph))
	}
	// Every reason, zero included, so that alerts can use rate() from the
	// first scrape.
	for _, r := range trust.Reasons {
		ctr(descRejected, float64(st.RecordsRejected[string(r)]), string(r))
	}
	g(descRoutesD, float64(st.Routes.Desired), routeKindTunnel)
	g(descRoutesD, float64(st.Routes.FailClosedDesired), routeKindFailClosed)
	g(descRoutesP, float64(st.Routes.Programmed), routeKindTunnel)
	g(descRoutesP, float64(st.Routes.FailClosedProgrammed), routeKindFailClosed)
	for _, s := range control.MemberStates {
		g(descMembers, float64(st.Gossip.MembersByState[s]), string(s))
	}
	collectUntrusted(g, ctr, st.Untrusted)
	collectTrust(ch, st)
	collectGossipKey(ch, st)
	collectDrain(ch, st)
	g(descSnapshot, unixSeconds(st.GeneratedAt))
}

func collectPeer(g, ctr emit, p control.PeerStatus) {
	l := []string{p.Name(), p.PublicKey, string(p.Role)}
	hs := 0.0
	if p.LastHandshake != nil {
		hs = unixSeconds(*p.LastHandshake)
	}
	g(descHandshake, hs, l...)
	ctr(descRx, float64(p.RxBytes), l...)
	ctr(descTx, float64(p.TxBytes), l...)
	g(descPeerUp, oneIf(p.State == control.PeerUp), l...)
	for _, s := range peerStates {
		g(descPeerState, oneIf(p.State == s), append(slices.Clone(l), string(s))...)
	}
	if p.Probe != nil {
		g(descProbeRTT, p.Probe.RTTMillis/1000, l...)
		g(descProbeLoss, p.Probe.Loss, l...)
	}
	g(descPeerRoute, oneIf(p.RoutesProgrammed), l...)
	if p.InGroup != nil {
		g(descInGroup, oneIf(*p.InGroup), l...)
	}
}

func collectUntrusted(g, ctr emit, u control.UntrustedStatus) {
	for _, r := range control.StreamRefusalReasons {
		ctr(descStreams, float64(u.GossipStreamsRefused[r]), r)
	}
	for _, k := range control.DropKinds {
		ctr(descDropped, float64(u.GossipDropped[k]), k)
	}
	ctr(descMalformed, float64(u.GossipMalformed))
	ctr(descSquatters, float64(u.GossipSquatters))
	g(descUncert, float64(u.UncertifiedNodes))
	ctr(descSkipped, float64(u.RecordsSkipped))
	ctr(descCtlRef, float64(u.ControlRefused))
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unixSeconds is t as a Prometheus timestamp, to the millisecond; 0 for
// the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

// serve listens on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string, logErr func(msg string, args ...any)) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, config.Optionf("MetricsAddr", " %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logErr("metrics endpoint stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}
