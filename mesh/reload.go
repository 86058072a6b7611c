package mesh

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/rotation"
)

// restartOnly lists the settings a running agent cannot change on SIGHUP,
// and why: a reload that changes one is refused whole, naming each, and the
// running configuration stays. Every other setting applies live. The table
// is checked against config.Config's fields by TestReloadTableCoversEveryField,
// so a new setting has to be put on one side or the other.
var restartOnly = []struct {
	field, why string
	changed    func(old, new *config.Config) bool
	goField    string // the config.Config field, for TestReloadTableCoversEveryField
}{
	{"site", "it is the gossip node's name and the identity of the records", func(o, n *config.Config) bool { return o.Site != n.Site }, "Site"},
	{"interface", "the WireGuard device is created at start", func(o, n *config.Config) bool { return o.Interface != n.Interface }, "Interface"},
	{"wireguard", "the backend is chosen when the device is created", func(o, n *config.Config) bool { return o.WireGuard != n.WireGuard }, "WireGuard"},
	{"state_dir", "it holds the control socket and the open state", func(o, n *config.Config) bool { return o.StateDir != n.StateDir }, "StateDir"},
	{"routes.table", "routes already in the old table would be left behind", func(o, n *config.Config) bool { return o.RouteTable != n.RouteTable }, "RouteTable"},
	{"gossip", "gossip is started or not at start", func(o, n *config.Config) bool { return (o.Gossip == nil) != (n.Gossip == nil) }, "Gossip"},
	{"gossip.address", "the gossip node binds it at start", gossipChanged(func(g *config.GossipConfig) any { return g.Address }), "Gossip.Address"},
	{"gossip.advertise", "memberlist announces it at start", gossipChanged(func(g *config.GossipConfig) any { return g.Advertise }), "Gossip.Advertise"},
	{"gossip.join", "the seeds are handed to the gossip node at start", gossipChanged(func(g *config.GossipConfig) any { return strings.Join(g.Join, " ") }), "Gossip.Join"},
	{"gossip.key_file", "memberlist's keyring is set at start", gossipChanged(func(g *config.GossipConfig) any { return g.KeyFile }), "Gossip.KeyFile"},
	{"gossip.cluster", "the cluster label is set at start", gossipChanged(func(g *config.GossipConfig) any { return g.Cluster }), "Gossip.Cluster"},
	{"gossip.profile", "memberlist's timers are set at start", gossipChanged(func(g *config.GossipConfig) any { return g.Profile }), "Gossip.Profile"},
	{"gossip.rejoin_interval", "the rejoin loop reads it at start", gossipChanged(func(g *config.GossipConfig) any { return g.RejoinInterval }), "Gossip.RejoinInterval"},
	{"trust.record_refresh", "the refresh timer is set at start", func(o, n *config.Config) bool { return o.Trust.RecordRefresh != n.Trust.RecordRefresh }, "Trust.RecordRefresh"},
	{"userspace.buffers_per_pool", "the embedded device's pools are sized when it is created", func(o, n *config.Config) bool { return o.Userspace.BuffersPerPool != n.Userspace.BuffersPerPool }, "Userspace.BuffersPerPool"},
	{"health", "the probes' timers and port are set when they start", func(o, n *config.Config) bool { return probeSettings(o.Health) != probeSettings(n.Health) }, "Health"},
	{"userspace.memory_limit", "the limit is set when the embedded device is created", func(o, n *config.Config) bool { return o.Userspace.MemoryLimit != n.Userspace.MemoryLimit }, "Userspace.MemoryLimit"},
	{"metrics_addr", "the metrics listener is opened at start", func(o, n *config.Config) bool { return o.MetricsAddr != n.MetricsAddr }, "MetricsAddr"},
}

// liveFields are the config.Config fields a reload applies (see restartOnly for the
// others); the names are Go field paths, for the coverage test.
var liveFields = []string{"Path", "ListenPort", "PrivateKeyFile", "OverlayAddress", "LocalPrefixes", "MTU",
	"PersistentKeepalive", "ResyncInterval", "RouteMetric", "Peers", "Endpoint", "Endpoints", "Trust.CAFile", "Trust.CertFile",
	"Trust.IdentityKeyFile", "Trust.RecordExpiry", "Trust.ClockSkew", "Rotation", "GatewayWeight"}

func gossipChanged(get func(*config.GossipConfig) any) func(o, n *config.Config) bool {
	return func(o, n *config.Config) bool {
		return o.Gossip != nil && n.Gossip != nil && get(o.Gossip) != get(n.Gossip)
	}
}

// reloadRefusal says why the running agent cannot switch from old to new
// without a restart, or "" if it can. rotating is whether a key rotation is
// under way: the key file cannot move then (the rotation owns it).
func reloadRefusal(old, new *config.Config, rotating bool) string {
	var why []string
	for _, r := range restartOnly {
		if r.changed(old, new) {
			why = append(why, fmt.Sprintf("%s changed (%s)", r.field, r.why))
		}
	}
	if rotating && old.PrivateKeyFile != new.PrivateKeyFile {
		why = append(why, "private_key_file changed during a key rotation (the rotation writes the new key there)")
	}
	if len(why) == 0 {
		return ""
	}
	return strings.Join(slices.Clip(why), "; ") + ": restart the agent for that"
}

// applyReload swaps in a new configuration if it is valid and does not change
// what only a restart can change. It reports whether it did.
func (a *Agent) applyReload(rt *siteRuntime) bool {
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
	if why := reloadRefusal(rt.cfg, cfg, rt.rot.Rotating()); why != "" {
		return refuse(why)
	}
	// Load everything before changing anything: a refusal leaves the
	// running agent exactly as it was. During a rotation the rotation owns
	// the key files.
	var ks *rotation.KeySet
	if !rt.rot.Rotating() {
		k, err := rotation.LoadKeys(cfg)
		if err != nil {
			return refuse(err)
		}
		ks = &k
	}
	enr := rt.enr
	if rt.enr != nil {
		if enr, err = enroll.Load(cfg, time.Now()); err != nil {
			return refuse(err)
		}
	}
	inputsChanged := recordInputsChanged(rt.cfg, cfg, rt.enr, enr)
	var identity ed25519.PrivateKey
	if enr != nil {
		identity = enr.Identity
	}
	keyChanged := rt.rot.Reload(cfg, ks, identity)
	republish := rt.gossip != nil && (keyChanged || inputsChanged)
	rt.cfg, rt.enr = cfg, enr
	if rt.store != nil {
		rt.store.SetRecordExpiry(cfg.Trust.RecordExpiry)
	}
	if rt.in != nil {
		// What was refused may pass now: the CAs or local prefixes changed.
		rt.in.Reload(enr.CAs)
		var own []byte
		if rt.own != nil {
			own = rt.own.Raw
		}
		rt.in.SetOwn(rt.nodeName(), rt.seq, enr.Cert.Serial, own)
	}
	rt.mtu = a.resolveMTU(cfg, rt.nl)
	a.log.Info("configuration reloaded", "path", cfg.Path, "static_peers", len(cfg.Peers))
	a.logReconcileError(a.reconcile(rt))
	if republish {
		if err := a.publish(rt); err != nil {
			a.log.Error("cannot publish this site's changed record", "err", err)
		}
	}
	return true
}

// recordInputsChanged reports whether a reload changes what this site's
// record says (other than the key): it must then be published at once, not
// at the next refresh an hour later.
func recordInputsChanged(old, new *config.Config, oldEnr, newEnr *enroll.Enrollment) bool {
	if !slices.Equal(old.UplinkEndpoints(), new.UplinkEndpoints()) || !slices.Equal(old.LocalPrefixes, new.LocalPrefixes) || old.GatewayWeight != new.GatewayWeight {
		return true
	}
	return oldEnr != nil && newEnr != nil && !bytes.Equal(oldEnr.Cert.Raw, newEnr.Cert.Raw)
}
