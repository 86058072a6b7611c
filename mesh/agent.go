package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// Options configures an Agent.
type Options struct {
	// ConfigPath is the YAML configuration; DefaultConfigPath if empty.
	ConfigPath string
	// WireGuard overrides the configuration's backend when not empty
	// (--wireguard).
	WireGuard string
	// Logger receives the agent's logs; slog.Default() if nil.
	Logger *slog.Logger
}

// Agent runs one site. Create it with NewAgent, run it with Run, ask it to
// re-read its configuration with Reload.
type Agent struct {
	opts   Options
	log    *slog.Logger
	reload chan struct{}
	kick   chan struct{}
}

// NewAgent returns an agent; nothing happens until Run.
func NewAgent(opts Options) *Agent {
	if opts.ConfigPath == "" {
		opts.ConfigPath = DefaultConfigPath
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Agent{
		opts:   opts,
		log:    opts.Logger,
		reload: make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
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

// runtime is what a running agent holds.
type runtime struct {
	cfg *Config
	key wg.PrivateKey
	mtu int
	dev wg.Device
	wgc wg.Client
	nl  *netlink.Handle
	net *netconfig.Manager
}

// Run starts the site and keeps it reconciled until ctx is done. On return
// the embedded device, if any, is closed; a kernel link is left running with
// its sessions, and the fail-closed routes stay in every case.
func (a *Agent) Run(ctx context.Context) (reterr error) {
	cfg, key, err := a.load()
	if err != nil {
		return err
	}
	if o := a.opts.WireGuard; o != "" {
		if cfg.WireGuard, err = wg.ParseMode(o); err != nil {
			return fmt.Errorf("--wireguard: %w", err)
		}
	}
	rt := &runtime{cfg: cfg, key: key}
	// Only the routing family: asking for xfrm too fails where it is not
	// loaded.
	if rt.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer rt.nl.Close()
	rt.net = netconfig.New(rt.nl, a.log)
	rt.mtu = a.resolveMTU(cfg, rt.nl)

	if rt.dev, err = wg.OpenDevice(wg.DeviceOptions{Name: cfg.Interface, Mode: cfg.WireGuard, MTU: rt.mtu, Logger: a.log}); err != nil {
		return err
	}
	defer func() {
		if err := rt.dev.Close(); err != nil {
			reterr = errors.Join(reterr, fmt.Errorf("close WireGuard device: %w", err))
		}
	}()
	wgc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open WireGuard control client: %w", err)
	}
	defer wgc.Close()
	rt.wgc = wgc

	if err := a.reconcile(rt, true); err != nil {
		return err
	}
	if err := netconfig.WatchRouteDeletes(ctx, func() { notify(a.kick) }); err != nil {
		a.log.Warn("not watching route deletions; drift is repaired by the periodic check only", "err", err)
	}
	a.log.Info("agent running", "site", cfg.Site, "interface", cfg.Interface, "backend", string(rt.dev.Backend()),
		"public_key", key.Public().String(), "listen_port", cfg.ListenPort, "mtu", rt.mtu, "peers", len(cfg.Peers))

	ticker := time.NewTicker(cfg.ResyncInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping", "backend", string(rt.dev.Backend()),
				"kept", keptOnStop(rt.dev.Backend()))
			return nil
		case <-rt.dev.Done():
			return fmt.Errorf("the embedded WireGuard device %s stopped unexpectedly (its link or control socket was deleted); traffic to the remote sites is now refused by the fail-closed routes until the agent restarts", cfg.Interface)
		case <-a.reload:
			if a.applyReload(rt) {
				ticker.Reset(rt.cfg.ResyncInterval)
			}
		case <-a.kick:
			a.logReconcileError(a.reconcile(rt, false))
		case <-ticker.C:
			a.logReconcileError(a.reconcile(rt, false))
		}
	}
}

func keptOnStop(b wg.Backend) string {
	if b == wg.BackendKernel {
		return "kernel link, sessions and routes"
	}
	return "fail-closed routes"
}

// load reads the configuration and the private key it names.
func (a *Agent) load() (*Config, wg.PrivateKey, error) {
	cfg, err := LoadConfig(a.opts.ConfigPath)
	if err != nil {
		return nil, wg.PrivateKey{}, err
	}
	key, err := wg.ReadPrivateKeyFile(cfg.PrivateKeyFile)
	if err != nil {
		return nil, wg.PrivateKey{}, fmt.Errorf("private_key_file: %w", err)
	}
	for i, p := range cfg.Peers {
		if p.PublicKey == key.Public() {
			return nil, wg.PrivateKey{}, fmt.Errorf("config %s: peers[%d].public_key is this site's own public key (from %s)", cfg.Path, i, cfg.PrivateKeyFile)
		}
	}
	return cfg, key, nil
}

// applyReload swaps in a new configuration if it is valid and does not change
// what only a restart can change. It reports whether it did.
func (a *Agent) applyReload(rt *runtime) bool {
	cfg, key, err := a.load()
	if err != nil {
		a.log.Error("reload rejected; keeping the running configuration", "err", err)
		return false
	}
	cfg.WireGuard = rt.cfg.WireGuard // the backend is fixed for the process
	if cfg.Interface != rt.cfg.Interface {
		a.log.Error("reload rejected; keeping the running configuration",
			"err", fmt.Sprintf("interface changed from %s to %s: restart the agent to move to another interface", rt.cfg.Interface, cfg.Interface))
		return false
	}
	rt.cfg, rt.key = cfg, key
	rt.mtu = a.resolveMTU(cfg, rt.nl)
	a.log.Info("configuration reloaded", "path", cfg.Path, "peers", len(cfg.Peers))
	a.logReconcileError(a.reconcile(rt, false))
	return true
}

// resolveMTU returns the configured MTU or, for auto, the underlay MTU toward
// the peers minus the tunnel overhead.
func (a *Agent) resolveMTU(cfg *Config, nl netconfig.Netlink) int {
	if cfg.MTU > 0 {
		return cfg.MTU
	}
	under, links := netconfig.UnderlayMTU(nl, cfg.endpoints())
	if under == 0 {
		a.log.Info("underlay MTU unknown (no peer endpoint routable yet); using the 1500-byte assumption", "mtu", fallbackMTU)
		return fallbackMTU
	}
	mtu := max(under-underlayOverhead, 1280)
	a.log.Debug("MTU from underlay", "underlay", links, "underlay_mtu", under, "mtu", mtu)
	return mtu
}

// reconcile applies the desired state: link and routes first (the link must
// be up before peers are configured), then WireGuard peers.
func (a *Agent) reconcile(rt *runtime, first bool) error {
	start := time.Now()
	d := computeDesired(rt.cfg, rt.key, rt.mtu)
	var errs []error
	nch, err := rt.net.Apply(d.Net)
	if err != nil {
		if first && !onlyConflicts(err) {
			return fmt.Errorf("configure interface %s: %w", rt.cfg.Interface, err)
		}
		errs = append(errs, err)
	}
	if !nch.Empty() {
		a.log.Info("kernel state changed", "changes", nch.String())
	}
	if first {
		if err := rt.dev.Up(); err != nil {
			return fmt.Errorf("bring up WireGuard device %s: %w", rt.cfg.Interface, err)
		}
	}
	wch, err := wg.Apply(rt.wgc, rt.cfg.Interface, d.WG)
	if err != nil {
		if first {
			return err
		}
		errs = append(errs, err)
	}
	if !wch.Empty() {
		a.log.Info("WireGuard peers changed", "added", peerNames(rt.cfg, wch.Added), "updated", peerNames(rt.cfg, wch.Updated),
			"removed", shortKeys(wch.Removed), "private_key_changed", wch.PrivateKey, "listen_port_changed", wch.ListenPort)
	}
	a.log.Debug("reconciled", "took", time.Since(start))
	return errors.Join(errs...)
}

func (a *Agent) logReconcileError(err error) {
	if err != nil {
		a.log.Error("reconcile incomplete; retrying at the next check", "err", err)
	}
}

// onlyConflicts reports whether every error joined in err is a route
// conflict: the agent still starts then, because the other prefixes work.
func onlyConflicts(err error) bool {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			if !errors.Is(e, netconfig.ErrRouteConflict) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, netconfig.ErrRouteConflict)
}

func peerNames(cfg *Config, keys []wg.PublicKey) []string {
	var out []string
	for _, k := range keys {
		name := k.Short()
		for _, p := range cfg.Peers {
			if p.PublicKey == k {
				name = p.Name
			}
		}
		out = append(out, name)
	}
	return out
}

func shortKeys(keys []wg.PublicKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Short())
	}
	return out
}
