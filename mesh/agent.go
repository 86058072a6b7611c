package mesh

import (
	"bytes"
	"context"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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

// runtime is what a running agent holds. Only the Run goroutine touches it.
type runtime struct {
	cfg *config.Config
	key wg.PrivateKey
	mtu int
	dev wg.Device
	wgc wg.Client
	nl  *netlink.Handle
	net *netconfig.Manager

	// gossip mode only
	enr       *enroll.Enrollment
	gossip    *gossip.Gossip
	store     *siteStore
	in        *ingest    // progress through received gossip (ingest.go)
	disk      *stateDisk // whether the state directory can be written
	seq       uint64
	bootID    [16]byte
	own       *trust.SignedRecord
	conflicts string // last logged, to log changes only

	stop  bool // leave or down asked the loop to end
	purge bool

	// firstWanted is when each peer first appeared in the desired state
	// (zero for peers already on the device at start).
	firstWanted map[wg.PublicKey]time.Time

	// key rotation, this site (see rotate.go)
	keys         *wg.KeyStore
	rot          wg.RotationState
	next         wg.PrivateKey // while prepared
	run          *rotationRun
	nextRotation time.Time
	// key rotation, other sites
	cutover  map[wg.PublicKey]bool   // new keys seen handshaking: cut over
	ackedPre map[string]uint64       // site → record sequence acked
	ackedCut map[wg.PublicKey]bool   // cut-overs acked
	siteKeys map[string]wg.PublicKey // current key per site, as last applied
	watch    *cutoverWatch           // cutover.go
	peerRot  *peerRotations          // confirm.go
	// in-tunnel probes (health.go): nil for static-only sites
	prober  *probe.Prober
	probing map[string]time.Time // site → when its probe session started
	// pre-shared keys (psk.go)
	psks      wg.PresharedKeys
	pskFile   string
	pskOffers map[wg.PublicKey]pskOffer
	kem       *mlkem.DecapsulationKey768 // ours, while prepared
	// the last desired WireGuard state and sites, for the fast cut-over
	lastWG    wg.Config
	lastSites []remoteSite
}

// firstHandshakeDelay staggers the first handshake of a new pair. When two
// sites learn each other at the same moment, both initiate; the crossing
// initiations cancel each other and WireGuard retries only after 5 s. So the
// site with the higher public key holds back its keepalive (which is what
// initiates) for this long: longer than a handshake round trip, so that if
// the other side initiated, the session exists by then and nothing crosses.
const firstHandshakeDelay = 500 * time.Millisecond

// Run starts the site and keeps it reconciled until ctx is done or a leave
// or down request ends it. On return the embedded device, if any, is closed;
// a kernel link is left running with its sessions, and the fail-closed
// routes stay (unless `down --purge` asked otherwise).
func (a *Agent) Run(ctx context.Context) (reterr error) {
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		return err
	}
	if o := a.opts.WireGuard; o != "" {
		if cfg.WireGuard, err = wg.ParseMode(o); err != nil {
			return config.Optionf("WireGuard", ": %w", err)
		}
	}
	rt := &runtime{cfg: cfg, in: newIngest(), disk: newStateDisk(cfg.StateDir), cutover: map[wg.PublicKey]bool{},
		ackedPre: map[string]uint64{}, ackedCut: map[wg.PublicKey]bool{}, siteKeys: map[string]wg.PublicKey{}}
	if err := a.loadKeys(rt); err != nil {
		return err
	}
	rt.pskFile, rt.pskOffers = cfg.StateDir.PSK(), map[wg.PublicKey]pskOffer{}
	if rt.psks, err = wg.LoadPresharedKeys(rt.pskFile); err != nil {
		return err
	}
	key := rt.key
	if cfg.Gossip != nil {
		if err := a.setupTrust(rt); err != nil {
			return err
		}
	}
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
	defer ctl.Close()

	// Only the routing family: asking for xfrm too fails where it is not
	// loaded.
	if rt.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer rt.nl.Close()
	rt.net = netconfig.New(rt.nl, a.log)
	rt.mtu = a.resolveMTU(cfg, rt.nl)

	if rt.dev, err = wg.OpenDevice(wg.DeviceOptions{Name: cfg.Interface, Mode: cfg.WireGuard, MTU: rt.mtu, Logger: a.log, BuffersPerPool: cfg.Userspace.BuffersPerPool, MemoryLimit: cfg.Userspace.MemoryLimit}); err != nil {
		return err
	}
	defer func() {
		if err := a.teardown(rt); err != nil {
			reterr = errors.Join(reterr, err)
		}
	}()
	wgc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open WireGuard control client: %w", err)
	}
	defer wgc.Close()
	rt.wgc = wgc

	// Records kept from the last run are programmed at once: a restart
	// does not wait for gossip (fail-static).
	if err := a.reconcile(rt, true); err != nil {
		return err
	}
	if cfg.Gossip != nil {
		// After the first reconcile: the overlay address is on the link.
		pctx, stopProbes := context.WithCancel(ctx)
		defer stopProbes() // also when leave or down end the loop
		if err := a.startProber(pctx, rt); err != nil {
			return err
		}
	}
	if err := netconfig.WatchRouteDeletes(ctx, func() { notify(a.kick) }); err != nil {
		a.log.Warn("not watching route deletions; drift is repaired by the periodic check only", "err", err)
	}
	var inbox <-chan gossip.Message
	var joins <-chan string
	var refresh <-chan time.Time
	if cfg.Gossip != nil {
		if err := a.startGossip(ctx, rt); err != nil {
			return err
		}
		defer rt.gossip.Shutdown()
		inbox = rt.gossip.Inbox()
		joins = rt.gossip.Joins()
		t := time.NewTicker(cfg.Trust.RecordRefresh)
		defer t.Stop()
		refresh = t.C
		a.resumeRotation(rt)
		a.scheduleRotation(rt)
	}
	rotTimer := time.NewTimer(time.Hour)
	defer rotTimer.Stop()
	armRotation := func() {
		rotTimer.Stop()
		if due := rt.rotationTimerDue(); !due.IsZero() {
			rotTimer.Reset(max(time.Until(due), 0))
		}
	}
	armRotation()
	rt.watch = newCutoverWatch(rt.wgc, cfg.Interface)
	go rt.watch.run(ctx, func(msg string, args ...any) { a.log.Warn(msg, args...) })
	a.publishWatch(rt, rt.lastSites)
	if a.opts.MetricsAddr != "" {
		a.metrics = newMetrics()
		a.metrics.fresh = func(ctx context.Context) (*control.Status, error) {
			st, err := call(ctx, a, a.buildStatus)
			return &st, err
		}
		addr, err := a.metrics.serve(ctx, a.opts.MetricsAddr, a.log.Error)
		if err != nil {
			return err
		}
		a.log.Info("serving Prometheus metrics", "addr", addr.String(), "path", "/metrics")
	}
	a.log.Info("agent running", "site", cfg.Site, "interface", cfg.Interface, "backend", string(rt.dev.Backend()),
		"public_key", key.Public().String(), "listen_port", cfg.ListenPort, "mtu", rt.mtu,
		"static_peers", len(cfg.Peers), "gossip", cfg.Gossip != nil, "control", cfg.StateDir.ControlSocket())

	ticker := time.NewTicker(cfg.ResyncInterval)
	defer ticker.Stop()
	for !rt.stop {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping", "backend", string(rt.dev.Backend()), "kept", keptOnStop(rt.dev.Backend()))
			return nil
		case <-rt.dev.Done():
			return fmt.Errorf("the embedded WireGuard device %s stopped unexpectedly (its link or control socket was deleted); traffic to the remote sites is now refused by the fail-closed routes until the agent restarts", cfg.Interface)
		case <-a.reload:
			if a.applyReload(rt) {
				ticker.Reset(rt.cfg.ResyncInterval)
			}
		case <-a.kick:
			a.logReconcileError(a.reconcile(rt, false))
			armRotation() // a reconcile may start confirming a peer's new key
		case <-ticker.C:
			a.logReconcileError(a.reconcile(rt, false))
			a.retryStateWrites(rt)
			armRotation()
		case m := <-inboxWhenIdle(inbox, rt.in):
			a.takeGossip(rt, m)
			a.ingestTurn(rt, len(inbox))
			armRotation()
		case <-a.ingestMore:
			a.ingestTurn(rt, len(inbox))
			armRotation()
		case <-rotTimer.C:
			a.onRotationTimer(rt)
			armRotation()
		case k := <-rt.watch.done:
			a.onCutOver(rt, k)
			armRotation()
		case name := <-joins:
			// Hand the newcomer our record directly; see gossip.Joins.
			if rt.own != nil {
				g, msg := rt.gossip, append([]byte{msgRecord}, rt.own.Raw...)
				go func() {
					if err := g.SendTo(name, msg); err != nil {
						a.log.Debug("could not hand our record to a new member; push/pull will", "member", name, "err", err)
					}
				}()
			}
		case <-refresh:
			if err := a.publish(rt, false); err != nil {
				a.log.Error("cannot refresh this site's record", "err", err)
			}
		case call := <-a.api:
			call.reply <- call.fn(rt)
			armRotation()
		}
	}
	return nil
}

// retryStateWrites checks the state directory's free space and retries the
// writes that failed, so a site whose disk filled up recovers by itself
// when space returns.
func (a *Agent) retryStateWrites(rt *runtime) {
	rt.disk.check()
	if rt.disk.retrySave && rt.store != nil {
		if rt.disk.wrote(config.RecordsFile, rt.store.save()) == nil {
			rt.disk.retrySave = false
			a.log.Info("site records persisted again", "file", rt.cfg.StateDir.Records())
		}
	}
	if rt.disk.retryPublish && rt.gossip != nil {
		if err := a.publish(rt, false); err == nil {
			a.log.Info("this site's record is published again: its state directory can be written", "dir", rt.cfg.StateDir)
		}
	}
}

// inboxWhenIdle is the gossip inbox while no received payload is being
// worked through, else nil: the loop takes the next payload only when it has
// finished the current one, so what waits stays in the gossip layer's
// bounded inbox (ingest.go).
func inboxWhenIdle(inbox <-chan gossip.Message, in *ingest) <-chan gossip.Message {
	if in != nil && in.busy() {
		return nil
	}
	return inbox
}

func keptOnStop(b wg.Backend) string {
	if b == wg.BackendKernel {
		return "kernel link, sessions and routes"
	}
	return "fail-closed routes"
}

// teardown closes the device and, for `down --purge`, removes the link and
// every route of ours.
func (a *Agent) teardown(rt *runtime) error {
	var errs []error
	if err := rt.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close WireGuard device: %w", err))
	}
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
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("open netlink: %w", err)
	}
	defer nl.Close()
	gone, err := netconfig.New(nl, nil).Purge(cfg.RouteTable)
	return len(gone), err
}

// setupTrust loads the enrollment, the site store and the sequence number.
func (a *Agent) setupTrust(rt *runtime) error {
	cfg := rt.cfg
	enr, err := enroll.Load(cfg, time.Now())
	if err != nil {
		return err
	}
	rt.enr = enr
	if err := os.MkdirAll(string(cfg.StateDir), 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if rt.store, err = loadSiteStore(cfg.StateDir.Records(), a.log, enr.CAs); err != nil {
		return err
	}
	if rt.seq, err = loadSeq(cfg.StateDir.Seq()); err != nil {
		return err
	}
	_, _ = rand.Read(rt.bootID[:])
	return nil
}

// startGossip joins the cluster and publishes this site's record.
func (a *Agent) startGossip(ctx context.Context, rt *runtime) error {
	g := rt.cfg.Gossip
	gs, err := gossip.New(gossip.Config{
		NodeName:       rt.cfg.Site,
		Bind:           g.Address,
		Advertise:      g.Advertise,
		SecretKey:      rt.enr.GossipKey,
		Label:          "dcmesh/" + g.Cluster,
		Profile:        gossip.Profile(g.Profile),
		Seeds:          g.Join,
		RejoinInterval: g.RejoinInterval,
		KnownPeersFile: rt.cfg.StateDir.KnownPeers(),
		Logger:         a.log,
	})
	if err != nil {
		return err
	}
	rt.gossip = gs
	// Only certified sites are members gossip sends to, counts and keeps:
	// start with the records kept from the last run.
	gs.SetRoster(rt.store.roster(a.policy(rt)))
	if err := a.publish(rt, false); err != nil {
		return err
	}
	go gs.Run(ctx)
	return nil
}

// Message types on the gossip wire (first byte of a user message).
const (
	msgRecord    byte = 'r'
	msgCRL       byte = 'c'
	msgAck       byte = 'a' // rotation acknowledgements, direct
	msgSwitching byte = 's' // "switching keys now", direct: poll faster
	msgNudge     byte = 'k' // "send me a keepalive", direct (confirm.go)
)

// publish signs a new record of this site (persisting its sequence number
// first, so a crash can never reuse it) and sends it to the cluster.
func (a *Agent) publish(rt *runtime, leaving bool) error {
	now := time.Now()
	seq := trust.NextSeq(rt.seq, now)
	// Never publish a sequence number that is not on disk: after a crash
	// it could be used again. Until the write succeeds (retried at every
	// resync) the site does not refresh its record, and health says so.
	if err := rt.disk.wrote(config.SeqFile, saveSeq(rt.cfg.StateDir.Seq(), seq)); err != nil {
		rt.disk.retryPublish = true
		return fmt.Errorf("persist record sequence: %w", err)
	}
	rt.disk.retryPublish = false
	rt.seq = seq
	rec := trust.Record{
		Site:      rt.cfg.Site,
		Seq:       seq,
		IssuedAt:  now,
		WGCurrent: rt.key.Public(),
		Phase:     trust.PhaseStable,
		Prefixes:  rt.cfg.LocalPrefixes,
		Endpoints: []netip.AddrPort{rt.cfg.Endpoint},
		Gossip:    rt.cfg.Gossip.AdvertiseAddr(),
		BootID:    rt.bootID,
		Leaving:   leaving,
		Cert:      rt.enr.Cert,
	}
	if rt.rot.Phase == wg.PhasePrepared && !rt.next.IsZero() {
		rec.WGNext, rec.Phase = rt.next.Public(), trust.PhasePrepared
		if rt.cfg.Rotation.PSK && !rt.rot.Emergency {
			if rt.kem == nil {
				kem, err := mlkem.GenerateKey768()
				if err != nil {
					return fmt.Errorf("generate ML-KEM key: %w", err)
				}
				rt.kem = kem
			}
			rec.KEM = rt.kem.EncapsulationKey().Bytes()
		}
	}
	if rt.cfg.Rotation.PSK {
		rec.PSKSites = rt.pskSites()
	}
	sr, err := trust.SignRecord(rec, rt.enr.Identity)
	if err != nil {
		return fmt.Errorf("sign this site's record: %w", err)
	}
	rt.own = sr
	a.updateLocalState(rt)
	msg := append([]byte{msgRecord}, sr.Raw...)
	if len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast("record/"+rt.cfg.Site, msg)
	}
	// Gossip is probabilistic and a small cluster with dead members can miss
	// a node for a whole push/pull interval; our own records are rare, so
	// each also goes to every member directly. A goodbye waits for that.
	if leaving {
		if err := rt.gossip.SendToAll(msg); err != nil {
			a.log.Warn("goodbye not delivered to every member directly; gossip will carry it", "err", err)
		}
	} else {
		a.sendToAllAsync(rt, msg, "site record")
	}
	a.log.Debug("published site record", "seq", seq, "leaving", leaving, "bytes", len(sr.Raw))
	return nil
}

func (a *Agent) updateLocalState(rt *runtime) {
	st, err := rt.store.state(rt.own)
	if err != nil {
		a.log.Error("cannot encode gossip state", "err", err)
		return
	}
	rt.gossip.SetLocalState(st)
}

// policy is what remote records are checked against, now.
func (a *Agent) policy(rt *runtime) *trust.Policy {
	cfg := rt.cfg
	local := append(slices.Clone(cfg.LocalPrefixes), netip.PrefixFrom(cfg.OverlayAddress.Addr(), cfg.OverlayAddress.Addr().BitLen()))
	var underlay []netip.Prefix
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	underlay = append(underlay, host(cfg.Endpoint.Addr()))
	if cfg.Gossip != nil {
		underlay = append(underlay, host(cfg.Gossip.Address.Addr()))
		if cfg.Gossip.Advertise.IsValid() {
			underlay = append(underlay, host(cfg.Gossip.Advertise.Addr()))
		}
	}
	for _, p := range cfg.Peers {
		if p.Endpoint.IsValid() {
			underlay = append(underlay, host(p.Endpoint.Addr()))
		}
	}
	underlay = append(underlay, rt.enr.Cert.Underlay...)
	return &trust.Policy{
		CAs: rt.enr.CAs, LocalSite: cfg.Site, LocalPrefixes: local, Underlay: underlay,
		CRL: rt.store.crl, Now: time.Now(), Skew: cfg.Trust.ClockSkew,
	}
}

// offerRecord checks one received record and keeps it if it is news; it
// reports whether the store changed.
func (a *Agent) offerRecord(rt *runtime, raw []byte) bool {
	// Most records gossip delivers are copies of ones held (a push/pull
	// carries every record) or of ones refused before: recognise them
	// before the signature checks.
	h := sha256.Sum256(raw)
	if rt.store.holdsHash(h, raw) || (rt.own != nil && bytes.Equal(raw, rt.own.Raw)) {
		return false
	}
	now := time.Now()
	if reason, ok := rt.in.refused.get(h, now); ok {
		rt.store.rejected[reason]++
		rt.in.skipped++
		return false
	}
	sr, err := trust.DecodeRecordPinned(raw, rt.enr.CAs)
	if err != nil {
		rt.in.refused.put(h, rt.store.reject("(undecodable)", err), now)
		return false
	}
	if sr.Site == rt.cfg.Site && sr.Seq <= rt.seq && sr.Cert.Serial.Cmp(rt.enr.Cert.Serial) == 0 {
		return false // our own record, relayed back
	}
	changed, err := rt.store.consider(sr, a.policy(rt))
	if err != nil {
		rt.in.refused.put(h, rt.store.reject(sr.Site, err), now)
		return false
	}
	if !changed {
		return false
	}
	a.log.Info("site record accepted", "site", sr.Site, "seq", sr.Seq, "wg_key", sr.WGCurrent.Short(), "leaving", sr.Leaving)
	if sr.Leaving {
		rt.gossip.Forget(sr.Site) // gone for good: stop re-joining it
	}
	// Spread it further: memberlist only retransmits what a node queued
	// itself.
	if msg := append([]byte{msgRecord}, raw...); len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast("record/"+sr.Site, msg)
	}
	return true
}

func (a *Agent) offerCRL(rt *runtime, der []byte) bool {
	if rt.store.crl != nil && bytes.Equal(der, rt.store.crl.Raw) {
		return false // the list held, again
	}
	h := sha256.Sum256(der)
	now := time.Now()
	if reason, ok := rt.in.refused.get(h, now); ok {
		rt.store.rejected[reason]++
		rt.in.skipped++
		return false
	}
	crl, err := trust.ParseRevocationList(der, rt.enr.CAs)
	if err != nil {
		rt.in.refused.put(h, rt.store.reject("(revocation list)", err), now)
		return false
	}
	if !a.installCRL(rt, crl) {
		return false
	}
	a.log.Info("revocation list accepted", "number", crl.Number.String(), "revoked", len(crl.Serials))
	a.spreadCRL(rt)
	return true
}

// installCRL keeps crl if it is newer than the one held; the gossip layer
// forgets the sites it revoked.
func (a *Agent) installCRL(rt *runtime, crl *trust.RevocationList) bool {
	held := rt.store.siteNames()
	if !rt.store.setCRL(crl) {
		return false
	}
	for _, name := range held {
		if rt.store.records[name] == nil && rt.gossip != nil {
			rt.gossip.Forget(name) // revoked: stop re-joining it
		}
	}
	return true
}

func (a *Agent) spreadCRL(rt *runtime) {
	msg := append([]byte{msgCRL}, rt.store.crl.Raw...)
	if len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast("crl", msg)
	}
	a.sendToAllAsync(rt, msg, "revocation list")
}

// sendToAllAsync sends msg to every member over TCP without holding up the
// agent loop (an unreachable member costs a TCP timeout).
func (a *Agent) sendToAllAsync(rt *runtime, msg []byte, what string) {
	g := rt.gossip
	go func() {
		if err := g.SendToAll(msg); err != nil {
			a.log.Debug(what+" not delivered to every member directly; gossip will carry it", "err", err)
		}
	}()
}

// commitStore persists the store, refreshes the push/pull state and
// reconciles.
func (a *Agent) commitStore(rt *runtime) {
	if err := rt.disk.wrote(config.RecordsFile, rt.store.save()); err != nil {
		rt.disk.retrySave = true
		a.log.Error("cannot persist site records; retrying at every resync", "err", err)
	} else {
		rt.disk.retrySave = false
	}
	a.updateLocalState(rt)
	a.logReconcileError(a.reconcile(rt, false))
}

// applyReload swaps in a new configuration if it is valid and does not change
// what only a restart can change. It reports whether it did.
func (a *Agent) applyReload(rt *runtime) bool {
	refuse := func(err any) bool {
		a.log.Error("reload rejected; keeping the running configuration", "err", err)
		return false
	}
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		return refuse(err)
	}
	if a.opts.WireGuard != "" {
		cfg.WireGuard = rt.cfg.WireGuard // --wireguard wins over the file, now as at start
	}
	if why := reloadRefusal(rt.cfg, cfg, rt.rot.Phase != wg.PhaseStable); why != "" {
		return refuse(why)
	}
	// Load everything before changing anything: a refusal leaves the
	// running agent exactly as it was.
	key, keys := rt.key, rt.keys
	if rt.rot.Phase == wg.PhaseStable {
		probe := &runtime{cfg: cfg}
		if err := a.loadKeys(probe); err != nil {
			return refuse(err)
		}
		if probe.rot.Phase == wg.PhaseStable {
			key, keys = probe.key, probe.keys
		}
	}
	enr := rt.enr
	if rt.enr != nil {
		if enr, err = enroll.Load(cfg, time.Now()); err != nil {
			return refuse(err)
		}
	}
	republish := rt.gossip != nil && (!key.Equal(rt.key) || recordInputsChanged(rt.cfg, cfg, rt.enr, enr))
	rt.cfg, rt.key, rt.keys, rt.enr = cfg, key, keys, enr
	if rt.in != nil {
		// What was refused may pass now: the CAs or local prefixes changed.
		rt.in.refused.reset()
		rt.in.states.reset()
	}
	rt.mtu = a.resolveMTU(cfg, rt.nl)
	a.log.Info("configuration reloaded", "path", cfg.Path, "static_peers", len(cfg.Peers))
	a.logReconcileError(a.reconcile(rt, false))
	if republish {
		if err := a.publish(rt, false); err != nil {
			a.log.Error("cannot publish this site's changed record", "err", err)
		}
	}
	return true
}

// recordInputsChanged reports whether a reload changes what this site's
// record says (other than the key): it must then be published at once, not
// at the next refresh an hour later.
func recordInputsChanged(old, new *config.Config, oldEnr, newEnr *enroll.Enrollment) bool {
	if old.Endpoint != new.Endpoint || !slices.Equal(old.LocalPrefixes, new.LocalPrefixes) {
		return true
	}
	return oldEnr != nil && newEnr != nil && !bytes.Equal(oldEnr.Cert.Raw, newEnr.Cert.Raw)
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

// reconcile applies the desired state: link and routes first (the link must
// be up before peers are configured), then WireGuard peers.
func (a *Agent) reconcile(rt *runtime, first bool) error {
	start := time.Now()
	var sites []remoteSite
	if rt.store != nil {
		var conflicts []trust.Conflict
		sites, conflicts = rt.store.active(a.policy(rt), rt.cfg.Trust.RecordExpiry)
		if s := fmt.Sprint(conflicts); s != rt.conflicts {
			rt.conflicts = s
			for _, c := range conflicts {
				a.log.Warn("site prefix refused: an older certificate owns it", "site", c.Site, "prefix", c.Prefix.String(), "owner", c.Winner, "reason", string(c.Reason))
			}
		}
	}
	if rt.watch != nil {
		rt.watch.device.Lock()
		defer rt.watch.device.Unlock()
		for _, k := range rt.watch.take() {
			rt.markCutOver(k) // already done on the device: never undo it
		}
	}
	a.offerPSKs(rt, sites)
	if rt.store != nil {
		a.holdSwitches(rt, sites) // confirm.go
	}
	for i := range sites {
		sites[i].PSK, sites[i].NextPSK = rt.psks[sites[i].PublicKey], rt.psks[sites[i].Next]
	}
	d := computeDesired(rt.cfg, rt.key, rt.mtu, sites, rt.cutover)
	// Read once: staggering, the peer diff and the receive marks all need it.
	dev, devErr := rt.wgc.Device(rt.cfg.Interface)
	if devErr != nil {
		devErr = fmt.Errorf("read WireGuard device %s: %w", rt.cfg.Interface, devErr)
	}
	a.staggerFirstHandshakes(rt, &d, dev)
	for _, why := range d.Dropped {
		a.log.Warn("gossip site left out in favour of a static peer", "what", why)
	}
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
	var wch wg.Changes
	err = devErr
	if err == nil {
		wch, err = wg.ApplyTo(rt.wgc, dev, d.WG)
	}
	if err != nil {
		if first {
			return err
		}
		errs = append(errs, err)
	}
	if !wch.Empty() {
		a.log.Info("WireGuard peers changed", "added", peerNames(rt, sites, wch.Added), "updated", peerNames(rt, sites, wch.Updated),
			"removed", shortKeys(wch.Removed), "private_key_changed", wch.PrivateKey, "listen_port_changed", wch.ListenPort)
	}
	rt.lastWG, rt.lastSites = d.WG, sites
	if rt.store != nil && len(errs) == 0 {
		a.prunePSKs(rt, d)
	}
	if dev != nil {
		rt.setProbeTargets(sites, dev)
	}
	if len(errs) == 0 {
		a.afterApply(rt, sites)
	}
	a.publishWatch(rt, sites)
	if rt.gossip != nil {
		rt.gossip.SetRoster(rt.store.roster(a.policy(rt)))
	}
	took := time.Since(start)
	a.log.Debug("reconciled", "took", took)
	if a.metrics != nil {
		a.metrics.reconcile.Observe(took.Seconds())
	}
	return errors.Join(errs...)
}

// staggerFirstHandshakes applies firstHandshakeDelay to d and schedules the
// reconcile that sets the held-back keepalives.
func (a *Agent) staggerFirstHandshakes(rt *runtime, d *desiredState, dev *wgtypes.Device) {
	now := time.Now()
	if rt.firstWanted == nil {
		// The first reconcile. Peers already on the device kept their
		// sessions (an adopted kernel link). The gossip sites all come from
		// the records kept from the last run: each still holds a session
		// with us that a new embedded device no longer has, so it will not
		// initiate, and holding ours back would lose its traffic to us for
		// firstHandshakeDelay. Static peers keep the stagger (a new cluster
		// starting together).
		rt.firstWanted = map[wg.PublicKey]time.Time{}
		if dev != nil {
			for _, p := range dev.Peers {
				rt.firstWanted[wg.PublicKey(p.PublicKey)] = time.Time{}
			}
		}
		for _, p := range d.WG.Peers {
			if !slices.ContainsFunc(rt.cfg.Peers, func(s config.StaticPeer) bool { return s.PublicKey == p.PublicKey }) {
				rt.firstWanted[p.PublicKey] = time.Time{}
			}
		}
	}
	self := rt.key.Public()
	wanted := map[wg.PublicKey]bool{}
	// A peer with a session has had its first handshake: holding its
	// keepalive back would only toggle it (a rotated key, cut over at its
	// handshake, is such a peer).
	session := map[wg.PublicKey]bool{}
	if dev != nil {
		for _, p := range dev.Peers {
			session[wg.PublicKey(p.PublicKey)] = !p.LastHandshakeTime.IsZero()
		}
	}
	held := false
	for i := range d.WG.Peers {
		p := &d.WG.Peers[i]
		wanted[p.PublicKey] = true
		t, ok := rt.firstWanted[p.PublicKey]
		if !ok {
			t = now
			rt.firstWanted[p.PublicKey] = now
		}
		if p.PersistentKeepalive > 0 && !session[p.PublicKey] && bytes.Compare(self[:], p.PublicKey[:]) > 0 && now.Sub(t) < firstHandshakeDelay {
			p.PersistentKeepalive = 0
			held = true
		}
	}
	for k := range rt.firstWanted {
		if !wanted[k] {
			delete(rt.firstWanted, k)
		}
	}
	if held {
		time.AfterFunc(firstHandshakeDelay, func() { notify(a.kick) })
	}
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

// peerNames names peers by site where known, else by short key.
func peerNames(rt *runtime, sites []remoteSite, keys []wg.PublicKey) []string {
	var out []string
	for _, k := range keys {
		name := k.Short()
		for _, p := range rt.cfg.Peers {
			if p.PublicKey == k {
				name = p.Name
			}
		}
		for _, s := range sites {
			if s.PublicKey == k {
				name = s.Name
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
