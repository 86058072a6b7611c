package mesh

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics exposes the agent on --metrics-addr for Prometheus. Gauges and the
// device counters come from a status the agent loop builds for the scrape
// (asked through fresh, bounded by a timeout); if the loop is busy the last
// one is served, with dcmesh_status_timestamp_seconds telling its age. Every
// name is documented in docs/METRICS.md.
type metrics struct {
	reg       *prometheus.Registry
	snapshot  atomic.Pointer[control.Status]
	fresh     func(context.Context) (*control.Status, error)
	reconcile prometheus.Histogram
	rotations *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reconcile = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dcmesh_reconcile_duration_seconds",
		Help:    "Time to compute and apply the desired WireGuard peers and routes.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1},
	})
	m.rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dcmesh_rotations_total",
		Help: "Key rotations of this site by result: complete (every peer cut over), incomplete (some did not confirm), failed (did not start).",
	}, []string{"result"})
	for _, r := range []control.RotateResult{control.RotateComplete, control.RotateIncomplete, control.RotateFailed} {
		m.rotations.WithLabelValues(string(r))
	}
	m.reg.MustRegister(m.reconcile, m.rotations, (*snapshotCollector)(m))
	return m
}

var (
	descInfo      = prometheus.NewDesc("dcmesh_info", "Always 1; labels describe the agent.", []string{"site", "interface", "backend", "public_key"}, nil)
	descHandshake = prometheus.NewDesc("dcmesh_peer_handshake_age_seconds", "Seconds since the last WireGuard handshake with the peer (absent before the first).", []string{"site", "public_key", "role"}, nil)
	descRx        = prometheus.NewDesc("dcmesh_peer_receive_bytes_total", "Bytes received from the peer, as the WireGuard device counts them.", []string{"site", "public_key", "role"}, nil)
	descTx        = prometheus.NewDesc("dcmesh_peer_transmit_bytes_total", "Bytes sent to the peer, as the WireGuard device counts them.", []string{"site", "public_key", "role"}, nil)
	descPeerUp    = prometheus.NewDesc("dcmesh_peer_up", "1 if the peer's state is up, 0 if stale or down (see docs/STATUS.md).", []string{"site", "public_key", "role", "state"}, nil)
	descProbeRTT  = prometheus.NewDesc("dcmesh_peer_probe_rtt_seconds", "Smoothed round-trip time of the in-tunnel probes (absent for unprobed peers).", []string{"site", "public_key", "role"}, nil)
	descProbeLoss = prometheus.NewDesc("dcmesh_peer_probe_loss_ratio", "Share of in-tunnel probes lost over the last 10 s (absent for unprobed peers).", []string{"site", "public_key", "role"}, nil)
	descPeerRoute = prometheus.NewDesc("dcmesh_peer_routes_programmed", "1 if every allowed prefix of the peer has its tunnel and fail-closed route.", []string{"site", "public_key", "role"}, nil)
	descKeyAge    = prometheus.NewDesc("dcmesh_key_age_seconds", "Age of this site's current WireGuard key.", nil, nil)
	descKeyEpoch  = prometheus.NewDesc("dcmesh_key_epoch", "Completed key rotations of this site.", nil, nil)
	descNextRot   = prometheus.NewDesc("dcmesh_key_next_rotation_timestamp_seconds", "When the next scheduled rotation starts (absent if none).", nil, nil)
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
	for _, d := range []*prometheus.Desc{descInfo, descHandshake, descRx, descTx, descPeerUp, descProbeRTT, descProbeLoss, descPeerRoute, descKeyAge,
		descKeyEpoch, descNextRot, descRejected, descRoutesD, descRoutesP, descMembers, descStreams, descMalformed,
		descDropped, descSquatters, descUncert, descSkipped, descCtlRef, descSnapshot} {
		ch <- d
	}
	describeUplinks(ch)
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	if c.fresh != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if st, err := c.fresh(ctx); err == nil {
			c.snapshot.Store(st)
		}
		cancel()
	}
	st := c.snapshot.Load()
	if st == nil {
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctr := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	g(descInfo, 1, st.Site, st.Interface, st.Backend, st.PublicKey)
	for _, p := range st.Peers {
		if p.HandshakeAgeSeconds != nil {
			g(descHandshake, float64(*p.HandshakeAgeSeconds), p.Site, p.PublicKey, string(p.Role))
		}
		ctr(descRx, float64(p.RxBytes), p.Site, p.PublicKey, string(p.Role))
		ctr(descTx, float64(p.TxBytes), p.Site, p.PublicKey, string(p.Role))
		up := 0.0
		if p.State == control.PeerUp {
			up = 1
		}
		g(descPeerUp, up, p.Site, p.PublicKey, string(p.Role), string(p.State))
		if p.Probe != nil {
			g(descProbeRTT, p.Probe.RTTMillis/1000, p.Site, p.PublicKey, string(p.Role))
			g(descProbeLoss, p.Probe.Loss, p.Site, p.PublicKey, string(p.Role))
		}
		routes := 0.0
		if p.RoutesProgrammed {
			routes = 1
		}
		g(descPeerRoute, routes, p.Site, p.PublicKey, string(p.Role))
	}
	collectUplinks(ch, st)
	g(descKeyAge, float64(st.Key.AgeSeconds))
	g(descKeyEpoch, float64(st.Key.Epoch))
	if st.Key.NextRotation != nil {
		g(descNextRot, float64(st.Key.NextRotation.Unix()))
	}
	// Every reason, zero included, so that alerts can use rate() from the
	// first scrape.
	for _, r := range trust.Reasons {
		ctr(descRejected, float64(st.RecordsRejected[string(r)]), string(r))
	}
	g(descRoutesD, float64(st.Routes.Desired), "tunnel")
	g(descRoutesD, float64(st.Routes.FailClosedDesired), "fail_closed")
	g(descRoutesP, float64(st.Routes.Programmed), "tunnel")
	g(descRoutesP, float64(st.Routes.FailClosedProgrammed), "fail_closed")
	for _, s := range control.MemberStates {
		g(descMembers, float64(st.Gossip.MembersByState[s]), string(s))
	}
	u := st.Untrusted
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
	g(descSnapshot, float64(st.GeneratedAt.UnixMilli())/1000)
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
