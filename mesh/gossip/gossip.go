package gossip

import (
	"container/list"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile selects memberlist's timing.
type Profile string

const (
	// ProfileWAN is memberlist's DefaultWANConfig: probes every 5 s, dead
	// after about 30 s of suspicion. The default: sites are far apart.
	ProfileWAN Profile = "wan"
	// ProfileLAN is DefaultLANConfig: probes every second.
	ProfileLAN Profile = "lan"
)

// Config configures a Gossip node.
type Config struct {
	// NodeName is the gateway's node name (trust.GatewayID.String: the
	// enrolled site name for gateway 0, "fra1.1" for gateway 1).
	NodeName string
	// Bind is the local address and port for gossip (TCP and UDP).
	Bind netip.AddrPort
	// Advertise is the address other sites use; Bind if zero.
	Advertise netip.AddrPort
	// SecretKey is the 32-byte cluster gossip key (AES-256-GCM): the primary
	// key at start. InstallKey, UseKey and RemoveKey change the keyring later
	// (a node restarted during a rotation installs the other key right after
	// New, before Run).
	SecretKey []byte
	// Label keeps clusters that share a key apart.
	Label string
	// Profile selects timing; ProfileWAN if empty.
	Profile Profile
	// Seeds are "IP:PORT" addresses to join.
	Seeds []string
	// RejoinInterval is how often seeds and known peers that are not alive
	// members are joined again. Default 30 s.
	RejoinInterval time.Duration
	// KnownPeersFile keeps the addresses of certified sites, for restarts
	// while the seeds are unreachable. Optional.
	KnownPeersFile string
	Logger         *slog.Logger
	// Limits bounds inbound streams; zero fields take the defaults.
	Limits StreamLimits
	// Transport, if set, replaces the UDP/TCP transport memberlist would
	// open on Bind; Bind and Advertise must then name the address it
	// listens on. Nil in production. It exists for measurements: the
	// gossip scale benchmark (scale_test.go) wraps memberlist's own
	// NetTransport to count the bytes each node sends and receives, and
	// binds port 0 to run a thousand nodes on loopback without port races.
	// Either way the transport is wrapped in the screening one (transport.go).
	Transport memberlist.Transport
}

// DefaultRejoinInterval is short enough that a healed partition merges
// within a minute, long enough to cost nothing.
const DefaultRejoinInterval = 30 * time.Second

// Message is one payload received from the cluster.
type Message struct {
	// Kind is MsgState for a push/pull state, MsgUser for broadcasts and
	// direct messages.
	Kind MsgKind
	Data []byte
}

// MsgKind tells Messages apart.
type MsgKind uint8

const (
	MsgUser MsgKind = iota + 1
	MsgState
)

// Member is one node in the membership view.
type Member struct {
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	State string         `json:"state"` // alive or dead (failed or left)
}

// Gossip is a running memberlist node.
type Gossip struct {
	cfg   Config
	log   *slog.Logger
	logs  *rateLog // this package's messages about refused input
	mlogs *rateLog // memberlist's
	ml    *memberlist.Memberlist
	guard *guard
	queue *memberlist.TransmitLimitedQueue
	inbox *inbox
	joins chan string

	localState    atomic.Pointer[[]byte]
	roster        atomic.Pointer[roster]
	inputs        inputCounters
	joinsDropped  atomic.Uint64
	squatters     atomic.Uint64
	conflicts     atomic.Uint64
	uncertRefused atomic.Uint64

	// mu guards what follows. It is taken inside memberlist's callbacks
	// (under memberlist's node lock), so nothing holding it calls memberlist.
	mu           sync.Mutex
	known        map[string]string // node name → "IP:PORT", persisted: the roster once set
	rosterSet    bool
	forgotten    map[string]bool
	view         map[string]Member // from events: certified names, alive others
	uncert       int               // alive in view, not certified
	pending      map[string]*list.Element
	pendingOrder *list.List // of pendingJoin, oldest first

	// keyMu serialises keyring changes; ring is what the screening
	// transport reads, mlKeyring memberlist's own (keyring.go).
	keyMu     sync.Mutex
	ring      *keyRing
	mlKeyring *memberlist.Keyring

	saveMu     sync.Mutex
	savedKnown []byte // what the known-peers file holds
	stopOnce   sync.Once
	left       atomic.Bool
}

// New starts a memberlist node. It does not join anyone yet: call Run.
func New(cfg Config) (*Gossip, error) {
	mc, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &Gossip{cfg: cfg, log: cfg.Logger, logs: newRateLog(cfg.Logger),
		mlogs: newRateLog(cfg.Logger.With("component", "memberlist")),
		inbox: newInbox(), joins: make(chan string, inboxSize),
		known: map[string]string{}, forgotten: map[string]bool{}, view: map[string]Member{},
		pending: map[string]*list.Element{}, pendingOrder: list.New()}
	if err := g.initKeys(cfg.SecretKey); err != nil {
		return nil, err
	}
	g.cfg.SecretKey = nil // the keyrings hold the keys from here on; a removed key must not linger
	g.roster.Store(&roster{byName: map[string]netip.AddrPort{}, ips: map[netip.Addr]bool{}})
	empty := []byte{}
	g.localState.Store(&empty)
	g.loadKnown()
	mlog := log.New(&logWriter{r: g.mlogs, malformed: &g.inputs.reported}, "", 0)
	if err := g.openTransport(mc, mlog); err != nil {
		g.stopLogs()
		return nil, err
	}

	g.configure(mc, mlog)
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return g.ml.NumMembers() },
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = g.guard.Shutdown()
		g.stopLogs()
		return nil, fmt.Errorf("start gossip on %s: %w", g.cfg.Bind, err)
	}
	g.ml = ml
	return g, nil
}

// withDefaults fills in cfg's defaults, checks what it must have (key,
// addresses, profile) and returns the memberlist profile to start from.
func (cfg *Config) withDefaults() (*memberlist.Config, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if len(cfg.SecretKey) != 32 {
		return nil, fmt.Errorf("gossip key must be 32 bytes (AES-256), got %d", len(cfg.SecretKey))
	}
	if !cfg.Bind.IsValid() {
		return nil, errors.New("gossip bind address missing")
	}
	if !cfg.Advertise.IsValid() {
		cfg.Advertise = cfg.Bind
	}
	if cfg.Advertise.Addr().IsUnspecified() {
		return nil, fmt.Errorf("gossip address %s is unspecified: set an explicit address other sites can reach", cfg.Advertise)
	}
	switch cfg.Profile {
	case ProfileWAN, "":
		return memberlist.DefaultWANConfig(), nil
	case ProfileLAN:
		return memberlist.DefaultLANConfig(), nil
	default:
		return nil, fmt.Errorf("unknown gossip profile %q: use wan or lan", cfg.Profile)
	}
}

// configure sets memberlist's configuration: names, addresses, keyring,
// transport and the delegates that tie it to g.
func (g *Gossip) configure(mc *memberlist.Config, mlog *log.Logger) {
	cfg := g.cfg
	mc.Name = cfg.NodeName
	mc.BindAddr = g.cfg.Bind.Addr().String()
	mc.BindPort = int(g.cfg.Bind.Port())
	mc.AdvertiseAddr = g.cfg.Advertise.Addr().String()
	mc.AdvertisePort = int(g.cfg.Advertise.Port())
	// The keyring is shared with the screening transport: both must accept
	// the same keys (keyring.go).
	mc.Keyring = g.mlKeyring
	mc.Label = cfg.Label
	// RequireNodeNames would refuse to join a bare IP:PORT, and seeds come as
	// addresses (`dcmesh init --join`). Known peers are joined as NAME/ADDR,
	// which makes memberlist check the name of the node it reaches.
	mc.RequireNodeNames = false
	mc.Transport = g.guard
	mc.Delegate = &delegate{g: g}
	mc.Events = &events{g: g}
	mc.Alive = admission{g: g}
	mc.Conflict = admission{g: g}
	// A dead node's name goes to the next address that claims it alive: the
	// admission check lets only a certified site's own address claim its
	// name, so this is how the real site takes its name back from a squatter
	// (which the transport cuts off, so it is soon dead).
	mc.DeadNodeReclaimTime = time.Millisecond
	mc.Logger = mlog
}

// openTransport wraps the configured transport, or memberlist's own
// NetTransport on Bind, in the screening one.
func (g *Gossip) openTransport(mc *memberlist.Config, mlog *log.Logger) error {
	inner := g.cfg.Transport
	if inner == nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{g.cfg.Bind.Addr().String()}, BindPort: int(g.cfg.Bind.Port()), Logger: mlog})
		if err != nil {
			return fmt.Errorf("start gossip on %s: %w", g.cfg.Bind, err)
		}
		if g.cfg.Bind.Port() == 0 {
			port := uint16(nt.GetAutoBindPort())
			if g.cfg.Advertise.Port() == 0 {
				g.cfg.Advertise = netip.AddrPortFrom(g.cfg.Advertise.Addr(), port)
			}
			g.cfg.Bind = netip.AddrPortFrom(g.cfg.Bind.Addr(), port)
		}
		inner = nt
	}
	lim := g.cfg.Limits.withDefaults(mc.TCPTimeout)
	g.guard = newGuard(inner, lim, screener{label: g.cfg.Label, ring: g.ring},
		&g.inputs, g.logs, g.certifiedIP, g.rosterAddr)
	return nil
}

// certifiedIP tells whether a connection from ip gets the certified share
// of the stream limits: a certified site's address, or this node's.
func (g *Gossip) certifiedIP(ip netip.Addr) bool {
	return ip == g.cfg.Advertise.Addr() || ip == g.cfg.Bind.Addr() || g.roster.Load().ips[ip]
}

func (g *Gossip) rosterAddr(name string) (netip.AddrPort, bool) {
	a, ok := g.roster.Load().byName[name]
	return a, ok
}

func (g *Gossip) stopLogs() {
	g.logs.stop()
	g.mlogs.stop()
}

// Inbox delivers received payloads. The agent must drain it; receiving a
// Message releases its share of the inbox budget (see the package comment).
func (g *Gossip) Inbox() <-chan Message { return g.inbox.ch }

// Joins delivers the name of every certified site that joins (or comes
// back), once it is certified. The agent sends it its own record directly:
// a node that refused a record for its own local reasons does not relay it,
// so the originator must.
func (g *Gossip) Joins() <-chan string { return g.joins }

// SendTo sends msg over TCP to the certified site name, at the gossip
// address of its record: memberlist's view of who has that name is not
// consulted.
func (g *Gossip) SendTo(name string, msg []byte) error {
	addr, ok := g.rosterAddr(name)
	if !ok {
		return fmt.Errorf("gossip: %s is not a certified site: no verified record gives its gossip address", name)
	}
	return g.ml.SendReliable(rosterNode(name, addr), msg)
}

func rosterNode(name string, addr netip.AddrPort) *memberlist.Node {
	return &memberlist.Node{Name: name, Addr: addr.Addr().AsSlice(), Port: addr.Port()}
}

// QueuedBroadcasts is how many broadcasts still wait for their last
// retransmission (a gauge for metrics; the scale benchmark waits for it to
// reach zero before it measures the steady state).
func (g *Gossip) QueuedBroadcasts() int { return g.queue.NumQueued() }

// Dropped counts payloads dropped because the inbox budget was spent, by
// kind, and join notifications the agent did not take in time.
func (g *Gossip) Dropped() DropStats {
	d := g.inbox.dropped()
	d.Joins = g.joinsDropped.Load()
	return d
}

// Refused counts inbound streams (and replies to ours) refused before
// memberlist read them, by reason.
func (g *Gossip) Refused() StreamStats { return g.guard.stats() }

// Malformed counts garbage received: datagrams and streams that are not
// gossip sealed with the cluster key in the shape memberlist sends (no or
// another label, not encrypted or not with this key, truncated, too slow,
// too large, unexpected structure), and input errors memberlist itself
// reported. Streams refused only for lack of capacity are not counted here
// (see Refused).
func (g *Gossip) Malformed() uint64 {
	c := &g.inputs
	return c.packets.Load() + c.reported.Load() + c.streams[reasonMalformed].Load() +
		c.streams[reasonUnauthenticated].Load() + c.streams[reasonTooLarge].Load() + c.streams[reasonTimeout].Load()
}

// SetLocalState sets what push/pull sends to other nodes.
func (g *Gossip) SetLocalState(b []byte) {
	cp := slices.Clone(b)
	g.localState.Store(&cp)
}

// Broadcast queues msg for gossip to every node. A later broadcast with the
// same name replaces a queued earlier one (a newer record of a site makes the
// older pointless).
func (g *Gossip) Broadcast(name string, msg []byte) {
	g.queue.QueueBroadcast(&broadcast{name: name, msg: slices.Clone(msg)})
}

// MaxBroadcastSize is the largest payload that fits in one gossip packet
// with the cluster's encryption and label overhead; larger payloads must go
// through SendToAll (TCP).
const MaxBroadcastSize = 1100

// SendToAll sends msg over TCP to every certified site that memberlist has
// alive (or suspect) at its certified address, this one excepted. It is for
// payloads too large to broadcast, and for urgent ones (a leave). Sites not
// reached that way — dead, or their name held by a squatter for now — are
// skipped rather than dialled: each would cost a TCP timeout, one after
// another; push/pull and broadcasts reach them later.
func (g *Gossip) SendToAll(msg []byte) error {
	ro := g.roster.Load()
	var errs []error
	for _, n := range g.ml.Members() { // memberlist's: alive and suspect nodes
		addr := addrPort(n)
		if n.Name == g.cfg.NodeName || !ro.certified(n.Name, addr) {
			continue
		}
		if err := g.ml.SendReliable(rosterNode(n.Name, addr), msg); err != nil {
			errs = append(errs, fmt.Errorf("send to %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Leave announces this node's departure to the cluster and waits up to
// timeout for it to spread. Idempotent.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.left.Swap(true) {
		return nil
	}
	return g.ml.Leave(timeout)
}

// Shutdown stops the node without telling anyone: to the others it will look
// like a failure, which never removes routes. Idempotent.
func (g *Gossip) Shutdown() error {
	var err error
	g.stopOnce.Do(func() {
		g.saveKnown()
		err = g.ml.Shutdown()
		g.stopLogs()
	})
	return err
}

// ---- memberlist plumbing ----

func (g *Gossip) deliver(kind MsgKind, b []byte) { g.inbox.put(kind, b) }

type delegate struct{ g *Gossip }

func (d *delegate) NodeMeta(limit int) []byte { return nil }
func (d *delegate) NotifyMsg(b []byte)        { d.g.deliver(MsgUser, b) }
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}
func (d *delegate) LocalState(join bool) []byte            { return *d.g.localState.Load() }
func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.g.deliver(MsgState, buf) }

type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Name() string { return b.name }
func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

func addrPort(n *memberlist.Node) netip.AddrPort {
	a, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(a.Unmap(), n.Port)
}
