package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// Options configures an Agent.
type Options struct {
	// ConfigPath is the YAML configuration; config.DefaultConfigPath if empty.
	ConfigPath string
	// WireGuard overrides the configuration's backend when not empty
	// (--wireguard).
	WireGuard string
	// Logger receives the agent's logs; slog.Default() if nil.
	Logger *slog.Logger
	// MetricsAddr, if set, serves Prometheus metrics on /metrics there
	// (--metrics-addr).
	MetricsAddr string
	// Version names the build in dcmesh_build_info ("dev" if empty).
	Version string
}

// Agent runs one site. Create it with NewAgent, run it with Run, ask it to
// re-read its configuration with Reload.
type Agent struct {
	opts   Options
	log    *slog.Logger
	reload chan struct{}
	kick   chan struct{}
	// ingestMore asks the loop for another turn on received gossip
	ingestMore chan struct{}
	api        chan apiCall
	metrics    *metrics        // nil without --metrics-addr
	ctl        *control.Server // the control socket, for its counters
}

// NewAgent returns an agent; nothing happens until Run.
func NewAgent(opts Options) *Agent {
	if opts.ConfigPath == "" {
		opts.ConfigPath = config.DefaultConfigPath
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Agent{
		opts:       opts,
		log:        opts.Logger,
		reload:     make(chan struct{}, 1),
		kick:       make(chan struct{}, 1),
		ingestMore: make(chan struct{}, 1),
		api:        make(chan apiCall),
	}
}

// Reload asks the running agent to re-read its configuration and key file
// (SIGHUP). It never blocks; requests made while one is pending coalesce.
func (a *Agent) Reload() { notify(a.reload) }

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run starts the site and keeps it reconciled until ctx is done or a leave
// or down request ends it. On return the embedded device, if any, is closed;
// a kernel link is left running with its sessions, and the fail-closed
// routes stay (unless `down --purge` asked otherwise).
func (a *Agent) Run(ctx context.Context) (err error) {
	rt, stop, err := a.start(ctx)
	defer func() { err = errors.Join(err, stop()) }()
	if err != nil {
		return err
	}
	return a.loop(ctx, rt)
}

// loop is the agent's single goroutine: every change to the runtime
// happens here, one event at a time.
func (a *Agent) loop(ctx context.Context, rt *siteRuntime) error {
	ticker := time.NewTicker(rt.cfg.ResyncInterval)
	defer ticker.Stop()
	var inbox <-chan gossip.Message
	var joins <-chan string
	var refresh <-chan time.Time
	if rt.gossip != nil {
		inbox, joins = rt.gossip.Inbox(), rt.gossip.Joins()
		t := time.NewTicker(rt.cfg.Trust.RecordRefresh)
		defer t.Stop()
		refresh = t.C
	}
	gkTick := time.NewTicker(gossipKeyTick)
	defer gkTick.Stop()
	rotTimer := time.NewTimer(time.Hour)
	defer rotTimer.Stop()
	armRotation := func() {
		rotTimer.Stop()
		if due := rt.rot.TimerDue(); !due.IsZero() {
			rotTimer.Reset(max(time.Until(due), 0))
		}
	}
	armRotation()
	for !rt.stop {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping", "backend", string(rt.dev.Backend()), "kept", keptOnStop(rt.dev.Backend()))
			return nil
		case <-rt.dev.Done():
			return fmt.Errorf("the embedded WireGuard device %s stopped unexpectedly (its link or control socket was deleted); traffic to the remote sites is now refused by the fail-closed routes until the agent restarts", rt.cfg.Interface)
		case name := <-rt.slotStopped:
			return fmt.Errorf("the embedded WireGuard device %s stopped unexpectedly (its link or control socket was deleted); traffic to the remote sites is now refused by the fail-closed routes until the agent restarts", name)
		case <-a.reload:
			if a.applyReload(rt) {
				ticker.Reset(rt.cfg.ResyncInterval)
			}
			continue
		case name := <-joins:
			a.greet(rt, name)
			continue
		case <-refresh:
			if err := a.publish(rt); err != nil {
				a.log.Error("cannot refresh this site's record", "err", err)
			}
			continue
		case <-a.kick:
			a.logReconcileError(a.reconcile(rt))
		case <-ticker.C:
			a.logReconcileError(a.reconcile(rt))
			a.checkShadowing(rt)
			a.retryStateWrites(rt)
		case m := <-inboxWhenIdle(inbox, rt.in):
			a.onGossip(rt, m)
			a.ingestTurn(rt, len(inbox))
		case <-a.ingestMore:
			a.ingestTurn(rt, len(inbox))
		case <-rt.probeChanges():
			if !a.onProbeChange(rt) {
				continue
			}
		case <-rt.uplinkTimerC():
			a.stepUplinks(rt)
			continue
		case <-rotTimer.C:
			rt.rot.OnTimer()
		case <-gossipKeyTicker(rt, gkTick):
			a.tickGossipKey(rt)
		case k := <-rt.rot.CutOverEvents():
			rt.rot.OnCutOver(k)
			a.logReconcileError(a.reconcile(rt))
		case call := <-a.api:
			call.reply <- call.fn(rt)
		}
		// Any of these may start or end a wait of a rotation (a reconcile
		// may start confirming a peer's new key).
		armRotation()
	}
	return nil
}

// onProbeChange steps the uplinks and, when a remote site has several
// gateways, reconciles (its group follows its probes at once); it reports
// whether it reconciled.
func (a *Agent) onProbeChange(rt *siteRuntime) bool {
	a.stepUplinks(rt)
	if !rt.probeDriven {
		return false
	}
	a.logReconcileError(a.reconcile(rt))
	return true
}

func keptOnStop(b wg.Backend) string {
	if b == wg.BackendKernel {
		return "kernel link, sessions and routes"
	}
	return "fail-closed routes"
}

// teardown closes the device and, for `down --purge`, removes the link and
// every route of ours.
func (a *Agent) teardown(rt *siteRuntime) error {
	var errs []error
	if err := rt.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close WireGuard device: %w", err))
	}
	errs = append(errs, rt.closeSlotDevices(rt.purge))
	if rt.purge {
		if err := wg.DeleteLink(rt.cfg.Interface); err != nil {
			errs = append(errs, err)
		}
		gone, err := rt.net.Purge(rt.cfg.RouteTable)
		if err != nil {
			errs = append(errs, err)
		}
		a.log.Info("purged", "interface", rt.cfg.Interface, "routes_removed", len(gone))
	}
	return errors.Join(errs...)
}

// Purge removes the WireGuard interface of cfg and every route of ours in its
// table, for `dcmesh down --purge` when the agent is not running.
func Purge(cfg *config.Config) (int, error) {
	if err := wg.DeleteLink(cfg.Interface); err != nil {
		return 0, err
	}
	if err := purgeSlotLinks(cfg.Interface); err != nil {
		return 0, err
	}
	nl, err := netconfig.OpenHandle() // nexthop objects too
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	gone, err := netconfig.New(nl, nil).Purge(cfg.RouteTable)
	return len(gone), err
}
