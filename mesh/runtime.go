package mesh

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/rotation"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// siteRuntime is what a running agent holds. Only the loop goroutine
// touches it.
type siteRuntime struct {
	cfg *config.Config
	mtu int
	dev wg.Device // slot 0's: cfg.Interface
	// slots are the devices of remote gateway slots 1.. (slots.go),
	// opened by openSlot (nil: wg.OpenDevice; tests give fakes)
	slots    []*slotDevice
	openSlot func(wg.DeviceOptions) (wg.Device, error)
	// slotStopped names a slot's embedded device that stopped (slots.go)
	slotStopped chan string
	wgc         wg.Client
	nl          *netconfig.Handle // with nexthop objects and sysctls (gateways)
	net         *netconfig.Manager

	// rot owns the WireGuard key, its rotation, the other sites' rotations
	// and the pre-shared keys (rotate.go).
	rot *rotation.Rotator

	// gossip mode only
	enr       *enroll.Enrollment
	gossip    *gossip.Gossip
	store     *records.Store
	in        *records.Ingest // received gossip (ingest.go)
	gkeys     *gossipKeys     // the gossip key's rotation (gossipkey.go)
	disk      *stateDisk      // whether the state directory can be written
	seq       uint64
	bootID    [16]byte
	own       *trust.SignedRecord
	conflicts string // last logged, to log changes only

	stop  bool // leave or down asked the loop to end
	purge bool

	// firstWanted is when each peer first appeared in the desired state
	// (nil before the first reconcile; zero for peers already on the
	// device at start).
	firstWanted map[wg.PublicKey]time.Time
	// in-tunnel probes (health.go): nil for static-only sites
	prober  *probe.Prober
	probing map[string]time.Time // site → when its probe session started
	uplinks *uplinks             // endpoint failover (uplinks_agent.go)
	// shadow: routes of others that take a remote prefix (shadow.go)
	shadow shadowState
	// the last desired WireGuard state (every slot's peers) and sites, for
	// status
	lastWG    wg.Config
	lastSites []records.Site
	// lastInGroup: desiredState.InGroup of the last reconcile, for status
	lastInGroup map[string]bool
	// probeDriven: some remote site has several gateways, so its group
	// follows the probes (a probe change reconciles)
	probeDriven bool
	// routeLedger tells route repairs from changes (route_repairs.go)
	routeLedger routeLedger
	// drain: planned maintenance, kept in the state directory (drain.go)
	drain drainState
}

// newRuntime reads cfg's keys and state: the WireGuard keys and the
// pre-shared keys, and with gossip the enrollment, the site store and the
// sequence number. It opens nothing.
func (a *Agent) newRuntime(cfg *config.Config) (*siteRuntime, error) {
	ks, err := rotation.LoadKeys(cfg)
	if err != nil {
		return nil, err
	}
	psks, err := wg.LoadPresharedKeys(cfg.StateDir.PSK())
	if err != nil {
		return nil, err
	}
	rt := &siteRuntime{cfg: cfg, disk: newStateDisk(cfg.StateDir)}
	if rt.drain, err = loadDrain(cfg.StateDir.Drain(), time.Now()); err != nil {
		a.log.Error("cannot read the drain state", "err", err)
	}
	if rt.drain.on {
		a.log.Warn("this gateway is drained (dcmesh drain): it stays out of service until dcmesh undrain", "since", rt.drain.since)
	}
	rt.rot = rotation.New(cfg, ks, psks, agentEnv{a, rt}, a.log)
	if cfg.Gossip != nil {
		if err := a.setupTrust(rt); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// setupTrust loads the enrollment, the site store and the sequence number.
func (a *Agent) setupTrust(rt *siteRuntime) error {
	cfg := rt.cfg
	enr, err := enroll.Load(cfg, time.Now())
	if err != nil {
		return err
	}
	rt.enr = enr
	if err := os.MkdirAll(string(cfg.StateDir), 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if rt.store, err = records.LoadStore(cfg.StateDir.Records(), a.log, enr.CAs); err != nil {
		return err
	}
	if rt.seq, err = records.LoadSeq(cfg.StateDir.Seq()); err != nil {
		return err
	}
	rt.in = records.NewIngest(rt.store, enr.CAs, func() *trust.Policy { return a.policy(rt) }, a.log)
	rt.in.SetOwn(rt.nodeName(), rt.seq, enr.Cert.Serial, nil)
	_, _ = rand.Read(rt.bootID[:])
	return nil
}

// cleanups undo what start did, last first.
type cleanups []func() error

func (c *cleanups) add(f func() error) { *c = append(*c, f) }

func (c *cleanups) addQuiet(f func()) { c.add(func() error { f(); return nil }) }

func (c *cleanups) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	return errors.Join(errs...)
}

// start brings the site up: the configuration and state (newRuntime), the
// control socket, netlink, the device and its first reconcile, the probes,
// the route watch, gossip, the rotation and the metrics. stop undoes it,
// also when start fails midway.
func (a *Agent) start(ctx context.Context) (rt *siteRuntime, stop func() error, err error) {
	undo := &cleanups{}
	stop = undo.run
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		return nil, stop, err
	}
	if o := a.opts.WireGuard; o != "" {
		if cfg.WireGuard, err = wg.ParseMode(o); err != nil {
			return nil, stop, config.Optionf("WireGuard", ": %w", err)
		}
	}
	if rt, err = a.newRuntime(cfg); err != nil {
		return nil, stop, err
	}
	if err := a.openSite(rt, undo); err != nil {
		return nil, stop, err
	}
	if err := a.startSite(ctx, rt, undo); err != nil {
		return nil, stop, err
	}
	a.log.Info("agent running", "site", cfg.Site, "interface", cfg.Interface, "backend", string(rt.dev.Backend()),
		"public_key", rt.rot.Key().Public().String(), "listen_port", cfg.ListenPort, "mtu", rt.mtu,
		"static_peers", len(cfg.Peers), "gossip", cfg.Gossip != nil, "control", cfg.StateDir.ControlSocket())
	return rt, stop, nil
}

// openSite opens the control socket, netlink, the device and the WireGuard
// control client.
func (a *Agent) openSite(rt *siteRuntime, undo *cleanups) error {
	cfg := rt.cfg
	if err := os.MkdirAll(string(cfg.StateDir), 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	ctl, err := control.Listen(cfg.StateDir.ControlSocket(), a.handler(), control.WithLogger(a.log))
	if err != nil {
		return err
	}
	a.ctl = ctl
	go func() {
		if err := ctl.Serve(); err != nil {
			a.log.Error("control socket stopped", "err", err)
		}
	}()
	undo.addQuiet(func() { ctl.Close() })
	// Only the routing family (OpenHandle): asking for xfrm too fails
	// where it is not loaded.
	if rt.nl, err = netconfig.OpenHandle(); err != nil {
		return err
	}
	undo.addQuiet(rt.nl.Close)
	rt.net = netconfig.New(rt.nl, a.log)
	rt.mtu = a.resolveMTU(cfg, rt.nl)
	if rt.dev, err = wg.OpenDevice(wg.DeviceOptions{Name: cfg.Interface, Mode: cfg.WireGuard, MTU: rt.mtu, Logger: a.log,
		BuffersPerPool: cfg.Userspace.BuffersPerPool, MemoryLimit: cfg.Userspace.MemoryLimit}); err != nil {
		return err
	}
	undo.add(func() error { return a.teardown(rt) })
	wgc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open WireGuard control client: %w", err)
	}
	undo.addQuiet(func() { wgc.Close() })
	rt.wgc = wgc
	rt.rot.SetDevice(wgc)
	return nil
}

// startSite programs the device and starts everything that runs beside the
// loop.
func (a *Agent) startSite(ctx context.Context, rt *siteRuntime, undo *cleanups) error {
	cfg := rt.cfg
	// Records kept from the last run are programmed at once: a restart
	// does not wait for gossip (fail-static).
	if err := a.firstReconcile(rt); err != nil {
		return err
	}
	a.checkShadowing(rt) // then at every resync
	if cfg.Gossip != nil {
		// After the first reconcile: the overlay address is on the link.
		pctx, stopProbes := context.WithCancel(ctx)
		undo.addQuiet(stopProbes) // also when leave or down end the loop
		if err := a.startProber(pctx, rt); err != nil {
			return err
		}
	}
	if err := netconfig.WatchRouteDeletes(ctx, func() { notify(a.kick) }); err != nil {
		a.log.Warn("not watching route deletions; drift is repaired by the periodic check only", "err", err)
	}
	if cfg.Gossip != nil {
		if err := a.startGossip(ctx, rt); err != nil {
			return err
		}
		undo.addQuiet(func() { _ = rt.gossip.Shutdown() })
		rt.rot.Start(rt.enr.Identity)
	}
	rt.rot.StartWatch(ctx)
	// --metrics-addr overrides the configuration's metrics_addr.
	return a.startMetrics(ctx, cmp.Or(a.opts.MetricsAddr, cfg.MetricsAddr))
}

// startMetrics serves metrics on addr, if set.
func (a *Agent) startMetrics(ctx context.Context, addr string) error {
	if addr == "" {
		return nil
	}
	a.metrics = newMetrics(readBuildInfo(a.opts.Version))
	a.metrics.fresh = func(ctx context.Context) (*control.Status, error) {
		st, err := call(ctx, a, a.buildStatus)
		return &st, err
	}
	bound, err := a.metrics.serve(ctx, addr, a.log.Error)
	var oe *config.OptionError
	if errors.As(err, &oe) && a.opts.MetricsAddr == "" {
		return fmt.Errorf("metrics_addr%w", oe.Err) // from the file, not the flag
	}
	if err != nil {
		return err
	}
	a.log.Info("serving Prometheus metrics", "addr", bound.String(), "path", "/metrics")
	return nil
}

// resolveMTU returns the configured MTU or, for auto, the underlay MTU toward
// the peers (static endpoints and gossip seeds) minus the tunnel overhead.
func (a *Agent) resolveMTU(cfg *config.Config, nl netconfig.Netlink) int {
	if cfg.MTU > 0 {
		return cfg.MTU
	}
	var dsts []netip.Addr
	for _, p := range cfg.Peers {
		if p.Endpoint.IsValid() {
			dsts = append(dsts, p.Endpoint.Addr())
		}
	}
	if cfg.Gossip != nil {
		for _, j := range cfg.Gossip.Join {
			if ap, err := netip.ParseAddrPort(j); err == nil {
				dsts = append(dsts, ap.Addr())
			}
		}
	}
	under, links := netconfig.UnderlayMTU(nl, dsts)
	if under == 0 {
		a.log.Info("underlay MTU unknown (no peer or seed routable yet); using the 1500-byte assumption", "mtu", config.FallbackMTU)
		return config.FallbackMTU
	}
	mtu := max(under-config.UnderlayOverhead, 1280)
	a.log.Debug("MTU from underlay", "underlay", links, "underlay_mtu", under, "mtu", mtu)
	return mtu
}
