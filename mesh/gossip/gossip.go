// Package gossip carries dcmesh's signed site records between sites with
// hashicorp/memberlist: discovery, push/pull anti-entropy, named broadcasts and
// direct messages, encrypted with the cluster's gossip key.
//
// It moves opaque bytes. Whether a payload is believed is for package trust
// and the agent to decide: memberlist's security model trusts whoever holds
// the gossip key, so gossip gives connectivity, not authority. Membership
// state (alive, suspect, dead) is reported but never acted on here: liveness
// is not authority, and the data plane keeps running through a control-plane
// partition.
//
// Callbacks from memberlist never block: received payloads are copied into a
// bounded queue that the agent drains (Inbox); the push/pull state is a
// precomputed snapshot (SetLocalState).
//
// A node that was declared dead is never probed again by memberlist, so a
// partition would be permanent. Run re-joins the configured seeds and the
// known-peers file periodically, and keeps that file up to date so a site
// restarted while isolated still finds its cluster.
package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dcmesh/dcmesh/wg"
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
	// NodeName is the enrolled site name.
	NodeName string
	// Bind is the local address and port for gossip (TCP and UDP).
	Bind netip.AddrPort
	// Advertise is the address other sites use; Bind if zero.
	Advertise netip.AddrPort
	// SecretKey is the 32-byte cluster gossip key (AES-256-GCM).
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
	// KnownPeersFile keeps the addresses of members seen, for restarts while
	// the seeds are unreachable. Optional.
	KnownPeersFile string
	Logger         *slog.Logger
	// Transport, if set, replaces the UDP/TCP transport memberlist would
	// open on Bind; Bind and Advertise must then name the address it
	// listens on. Nil in production. It exists for measurements: the
	// gossip scale benchmark (scale_test.go) wraps memberlist's own
	// NetTransport to count the bytes each node sends and receives, and
	// binds port 0 to run a thousand nodes on loopback without port races.
	Transport memberlist.Transport
}

// DefaultRejoinInterval is short enough that a healed partition merges
// within a minute, long enough to cost nothing.
const DefaultRejoinInterval = 30 * time.Second

// inboxSize bounds the queue of received payloads. When it is full, new
// payloads are dropped (and counted): push/pull repeats everything, so a drop
// only delays convergence.
const inboxSize = 1024

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
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	inbox chan Message
	joins chan string

	localState atomic.Pointer[[]byte]
	dropped    atomic.Uint64

	mu    sync.Mutex
	known map[string]string // node name → "IP:PORT", persisted
	view  map[string]Member // from events: memberlist's Members() omits dead nodes

	saveMu     sync.Mutex
	savedKnown []byte // what the known-peers file holds
	stopOnce   sync.Once
	left       atomic.Bool
}

// New starts a memberlist node. It does not join anyone yet: call Run.
func New(cfg Config) (*Gossip, error) {
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
	g := &Gossip{cfg: cfg, log: cfg.Logger, inbox: make(chan Message, inboxSize), joins: make(chan string, inboxSize),
		known: map[string]string{}, view: map[string]Member{}}
	empty := []byte{}
	g.localState.Store(&empty)
	g.loadKnown()

	var mc *memberlist.Config
	switch cfg.Profile {
	case ProfileWAN, "":
		mc = memberlist.DefaultWANConfig()
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
	default:
		return nil, fmt.Errorf("unknown gossip profile %q: use wan or lan", cfg.Profile)
	}
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.Bind.Addr().String()
	mc.BindPort = int(cfg.Bind.Port())
	mc.AdvertiseAddr = cfg.Advertise.Addr().String()
	mc.AdvertisePort = int(cfg.Advertise.Port())
	mc.SecretKey = slices.Clone(cfg.SecretKey)
	mc.Label = cfg.Label
	// RequireNodeNames would refuse to join a bare IP:PORT, and seeds come as
	// addresses (`dcmesh init --join`). Known peers are joined as NAME/ADDR,
	// which makes memberlist check the name of the node it reaches.
	mc.RequireNodeNames = false
	mc.Transport = cfg.Transport // nil: memberlist opens its own on Bind
	mc.Delegate = &delegate{g: g}
	mc.Events = &events{g: g}
	mc.Logger = log.New(&logWriter{log: cfg.Logger.With("component", "memberlist")}, "", 0)
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return g.ml.NumMembers() },
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	return g, nil
}

// Inbox delivers received payloads. The agent must drain it.
func (g *Gossip) Inbox() <-chan Message { return g.inbox }

// Joins delivers the name of every other node that joins (or comes back).
// The agent sends it its own record directly: a node that refused a record
// for its own local reasons does not relay it, so the originator must.
func (g *Gossip) Joins() <-chan string { return g.joins }

// SendTo sends msg over TCP to the named member.
func (g *Gossip) SendTo(name string, msg []byte) error {
	for _, n := range g.ml.Members() {
		if n.Name == name {
			return g.ml.SendReliable(n, msg)
		}
	}
	return fmt.Errorf("gossip member %s unknown", name)
}

// QueuedBroadcasts is how many broadcasts still wait for their last
// retransmission (a gauge for metrics; the scale benchmark waits for it to
// reach zero before it measures the steady state).
func (g *Gossip) QueuedBroadcasts() int { return g.queue.NumQueued() }

// Dropped counts payloads dropped because the inbox was full.
func (g *Gossip) Dropped() uint64 { return g.dropped.Load() }

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

// SendToAll sends msg over TCP to every alive member but this one. It is for
// payloads too large to broadcast, and for urgent ones (a leave).
func (g *Gossip) SendToAll(msg []byte) error {
	var errs []error
	for _, n := range g.ml.Members() { // memberlist's: alive and suspect nodes
		if n.Name == g.cfg.NodeName {
			continue
		}
		if err := g.ml.SendReliable(n, msg); err != nil {
			errs = append(errs, fmt.Errorf("send to %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Members returns every node seen, this one included, sorted by name, with
// state "alive" or "dead" (failed, or left: memberlist does not say which).
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.view))
	for _, m := range g.view {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Run joins the seeds and known peers, then re-joins those that are not alive
// members every RejoinInterval and keeps the known-peers file current, until
// ctx is done. It does not leave or shut down: see Leave and Shutdown.
//
// Until it has reached anyone, it retries sooner — after 1 s, doubling up to
// RejoinInterval — so sites started together, before their seeds listen,
// meet within seconds rather than a whole interval later.
func (g *Gossip) Run(ctx context.Context) {
	wait := min(time.Second, g.cfg.RejoinInterval)
	for {
		g.rejoin(ctx)
		g.saveKnown()
		if g.ml.NumMembers() > 1 {
			wait = g.cfg.RejoinInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, g.cfg.RejoinInterval)
	}
}

const (
	// rejoinContacts is how many addresses a rejoin must reach: each
	// contact is a full push/pull that merges the whole membership, so one
	// heals a partition; a second covers a contact that is itself cut off.
	rejoinContacts = 2
	// rejoinAttempts bounds the addresses tried per round. Joining every
	// known peer that is not alive, one after another, each a push/pull of
	// every record, is what kept a 1,000-site benchmark from converging.
	rejoinAttempts = 8
)

// rejoin contacts seeds and known peer addresses that are not alive members
// — seeds first, then known peers in random order — until rejoinContacts
// answered or rejoinAttempts were tried. memberlist never probes dead
// nodes, so without this a healed partition would stay split.
func (g *Gossip) rejoin(ctx context.Context) {
	alive := map[string]bool{}
	for _, m := range g.Members() {
		if m.State == "alive" {
			alive[m.Addr.String()] = true
		}
	}
	self := g.cfg.Advertise.String()
	var targets []string
	seen := map[string]bool{}
	for _, a := range g.cfg.Seeds {
		if !alive[a] && a != self && !seen[a] {
			targets = append(targets, a)
			seen[a] = true
		}
	}
	var known []string
	g.mu.Lock()
	for name, a := range g.known {
		if !alive[a] && a != self && !seen[a] {
			known = append(known, name+"/"+a)
			seen[a] = true
		}
	}
	g.mu.Unlock()
	rand.Shuffle(len(known), func(i, j int) { known[i], known[j] = known[j], known[i] })
	targets = append(targets, known...)
	if len(targets) == 0 {
		return
	}
	contacted, tried := 0, 0
	for _, t := range targets {
		if contacted >= rejoinContacts || tried >= rejoinAttempts || ctx.Err() != nil {
			break
		}
		tried++
		if n, err := g.ml.Join([]string{t}); err == nil && n > 0 {
			contacted++
		}
	}
	if contacted == 0 {
		g.log.Debug("gossip join found nobody", "tried", targets[:tried])
		return
	}
	g.log.Debug("gossip joined", "contacted", contacted, "tried", tried, "candidates", len(targets))
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
	})
	return err
}

// ---- known peers ----

func (g *Gossip) loadKnown() {
	if g.cfg.KnownPeersFile == "" {
		return
	}
	raw, err := os.ReadFile(g.cfg.KnownPeersFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			g.log.Warn("cannot read known gossip peers; using the seeds only", "file", g.cfg.KnownPeersFile, "err", err)
		}
		return
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil {
		g.log.Warn("known gossip peers file is corrupt; ignoring it", "file", g.cfg.KnownPeersFile, "err", err)
		return
	}
	for name, a := range known {
		if _, err := netip.ParseAddrPort(a); err == nil && name != g.cfg.NodeName {
			g.known[name] = a
		}
	}
}

func (g *Gossip) saveKnown() {
	if g.cfg.KnownPeersFile == "" {
		return
	}
	g.saveMu.Lock() // Run and Shutdown both save
	defer g.saveMu.Unlock()
	g.mu.Lock()
	raw, err := json.MarshalIndent(g.known, "", "  ")
	g.mu.Unlock()
	if err == nil && bytes.Equal(raw, g.savedKnown) {
		return // unchanged: no write, no fsync every interval
	}
	if err == nil {
		err = wg.WriteFileAtomic(g.cfg.KnownPeersFile, append(raw, '\n'), 0o600)
	}
	if err == nil {
		g.savedKnown = raw
	}
	if err != nil {
		g.log.Warn("cannot save known gossip peers", "file", g.cfg.KnownPeersFile, "err", err)
	}
}

// observe records a membership event.
func (g *Gossip) observe(n *memberlist.Node, state string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.view[n.Name] = Member{Name: n.Name, Addr: addrPort(n), State: state}
	if n.Name != g.cfg.NodeName && state == "alive" {
		g.known[n.Name] = addrPort(n).String()
	}
}

// Forget drops a node that is gone for good (a signed leave, a revoked
// certificate) from the known peers: otherwise every agent would try to
// re-join it every RejoinInterval, forever. Members still lists it (the
// agent shows it as left). A node that comes back alive is learnt again.
func (g *Gossip) Forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.known, name)
}

// ---- memberlist plumbing ----

func (g *Gossip) deliver(kind MsgKind, b []byte) {
	select {
	case g.inbox <- Message{Kind: kind, Data: slices.Clone(b)}:
	default:
		g.dropped.Add(1)
	}
}

type delegate struct{ g *Gossip }

func (d *delegate) NodeMeta(limit int) []byte { return nil }
func (d *delegate) NotifyMsg(b []byte)        { d.g.deliver(MsgUser, b) }
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}
func (d *delegate) LocalState(join bool) []byte            { return *d.g.localState.Load() }
func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.g.deliver(MsgState, buf) }

type events struct{ g *Gossip }

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.g.observe(n, "alive")
	if n.Name != e.g.cfg.NodeName {
		select {
		case e.g.joins <- n.Name:
		default:
			e.g.dropped.Add(1)
		}
	}
	e.g.log.Info("gossip member joined", "member", n.Name, "addr", addrPort(n).String())
}
func (e *events) NotifyLeave(n *memberlist.Node) {
	// Failure or departure: reported, never acted on. Peers and routes stay.
	e.g.observe(n, "dead")
	e.g.log.Info("gossip member left or failed (its tunnel and routes stay)", "member", n.Name)
}
func (e *events) NotifyUpdate(n *memberlist.Node) { e.g.observe(n, "alive") }

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

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelWarn // memberlist reports every unreachable peer as an error
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)
