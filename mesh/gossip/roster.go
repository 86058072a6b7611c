package gossip

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/memberlist"
)

const (
	// maxUncertified bounds the nodes outside the roster memberlist admits
	// alive at once: enough for a new cluster, all of whose sites join
	// before anyone holds their records, without letting a key holder fill
	// memberlist (and every push/pull) with ghosts.
	maxUncertified = 1024
	// maxPendingJoins bounds the uncertified nodes remembered to report in
	// Joins once their record arrives; the oldest is forgotten first.
	maxPendingJoins = 1024
)

// RosterStats counts what the roster refused.
type RosterStats struct {
	// Squatters counts announcements of a certified name from an address
	// other than its record's, refused.
	Squatters uint64
	// Conflicts counts memberlist keeping an earlier claimant of a name
	// over a new address (until that one is dead).
	Conflicts uint64
	// Unreached counts packets and connections not sent to a certified name
	// at an address its record does not give.
	Unreached uint64
	// UncertifiedRefused counts new uncertified nodes refused because
	// maxUncertified were alive.
	UncertifiedRefused uint64
}

// roster is an immutable set of certified sites.
type roster struct {
	byName map[string]netip.AddrPort
	ips    map[netip.Addr]bool
}

func (r *roster) certified(name string, addr netip.AddrPort) bool {
	want, ok := r.byName[name]
	return ok && want == addr
}

var (
	errSquatter           = errors.New("another address than the certified site's record gives")
	errTooManyUncertified = errors.New("too many uncertified nodes")
)

// SetRoster replaces the set of certified sites: name → the gossip address
// (IP:port) from that site's signed, verified record. Safe for concurrent use,
// cheap, never blocks.
func (g *Gossip) SetRoster(r map[string]netip.AddrPort) {
	ro := &roster{byName: make(map[string]netip.AddrPort, len(r)), ips: make(map[netip.Addr]bool, len(r))}
	for name, a := range r {
		if name == "" || !a.IsValid() {
			continue
		}
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		ro.byName[name] = a
		ro.ips[a.Addr()] = true
	}
	g.roster.Store(ro)
	var emit []string
	g.mu.Lock()
	g.rosterSet = true
	for name := range g.forgotten {
		if _, ok := ro.byName[name]; !ok {
			delete(g.forgotten, name)
		}
	}
	g.rebuildKnown(ro)
	g.uncert = 0
	for name, m := range g.view {
		if m.State != "alive" && name != g.cfg.NodeName && !ro.certifiedName(name) {
			delete(g.view, name) // a dead stranger: nothing to show
			continue
		}
		if g.isUncertified(ro, m) {
			g.uncert++
		}
	}
	for e := g.pendingOrder.Front(); e != nil; {
		next := e.Next()
		p := e.Value.(pendingJoin)
		if ro.certified(p.name, p.addr) {
			if m, ok := g.view[p.name]; ok && m.State == "alive" && m.Addr == p.addr {
				emit = append(emit, p.name)
			}
			g.pendingOrder.Remove(e)
			delete(g.pending, p.name)
		}
		e = next
	}
	g.mu.Unlock()
	for _, name := range emit {
		g.emitJoin(name)
	}
}

func (r *roster) certifiedName(name string) bool { _, ok := r.byName[name]; return ok }

// Uncertified is how many nodes other than this one memberlist has alive
// that are not certified sites at their certified address.
func (g *Gossip) Uncertified() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.uncert
}

// RosterStats returns what the roster refused so far.
func (g *Gossip) RosterStats() RosterStats {
	return RosterStats{Squatters: g.squatters.Load(), Conflicts: g.conflicts.Load(),
		Unreached: g.inputs.unreach.Load(), UncertifiedRefused: g.uncertRefused.Load()}
}

// Members returns this node and every certified site, sorted by name, with
// state "alive" if memberlist has it alive at its certified address, else
// "dead" (failed, left — memberlist does not say which —, not seen yet, or
// only seen at another address).
func (g *Gossip) Members() []Member {
	ro := g.roster.Load()
	self := g.cfg.NodeName
	g.mu.Lock()
	me, ok := g.view[self]
	if !ok {
		me = Member{Name: self, Addr: g.cfg.Advertise, State: "alive"}
	}
	out := make([]Member, 0, len(ro.byName)+1)
	out = append(out, me)
	for name, addr := range ro.byName {
		if name == self {
			continue
		}
		state := "dead"
		if m, ok := g.view[name]; ok && m.Addr == addr && m.State == "alive" {
			state = "alive"
		}
		out = append(out, Member{Name: name, Addr: addr, State: state})
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (g *Gossip) isUncertified(ro *roster, m Member) bool {
	return m.State == "alive" && m.Name != g.cfg.NodeName && !ro.certified(m.Name, m.Addr)
}

// observe records a membership event; g.mu held.
func (g *Gossip) observe(name string, addr netip.AddrPort, state string) {
	ro := g.roster.Load()
	old, had := g.view[name]
	m := Member{Name: name, Addr: addr, State: state}
	if had && g.isUncertified(ro, old) {
		g.uncert--
	}
	if g.isUncertified(ro, m) {
		g.uncert++
	}
	if state != "alive" && name != g.cfg.NodeName && !ro.certifiedName(name) {
		delete(g.view, name) // bounded: only alive strangers are kept
		return
	}
	g.view[name] = m
}

func (g *Gossip) rebuildKnown(ro *roster) {
	g.known = make(map[string]string, len(ro.byName))
	for name, a := range ro.byName {
		if name != g.cfg.NodeName && !g.forgotten[name] {
			g.known[name] = a.String()
		}
	}
}

type pendingJoin struct {
	name string
	addr netip.AddrPort
}

// addPending remembers a node that joined before it was certified; g.mu held.
func (g *Gossip) addPending(name string, addr netip.AddrPort) {
	if e, ok := g.pending[name]; ok {
		g.pendingOrder.Remove(e)
	}
	g.pending[name] = g.pendingOrder.PushBack(pendingJoin{name, addr})
	for g.pendingOrder.Len() > maxPendingJoins {
		e := g.pendingOrder.Front()
		delete(g.pending, e.Value.(pendingJoin).name)
		g.pendingOrder.Remove(e)
	}
}

func (g *Gossip) removePending(name string) {
	if e, ok := g.pending[name]; ok {
		g.pendingOrder.Remove(e)
		delete(g.pending, name)
	}
}

func (g *Gossip) emitJoin(name string) {
	select {
	case g.joins <- name:
	default:
		g.joinsDropped.Add(1)
	}
}

// ---- memberlist callbacks: all under memberlist's node lock, none blocks ----

// admission is memberlist's AliveDelegate and ConflictDelegate.
type admission struct{ g *Gossip }

func (a admission) NotifyAlive(n *memberlist.Node) error {
	g := a.g
	if n.Name == g.cfg.NodeName {
		return nil // memberlist refutes claims to our own name
	}
	addr := addrPort(n)
	if want, ok := g.roster.Load().byName[n.Name]; ok {
		if want == addr {
			return nil
		}
		g.squatters.Add(1)
		g.logs.log(slog.LevelWarn, "squatter", "gossip: refused a node claiming a certified site's name from another address",
			"member", n.Name, "addr", addr.String(), "certified", want.String())
		return errSquatter
	}
	g.mu.Lock()
	m, seen := g.view[n.Name]
	full := g.uncert >= maxUncertified && !(seen && m.State == "alive")
	g.mu.Unlock()
	if full {
		g.uncertRefused.Add(1)
		g.logs.log(slog.LevelWarn, "uncertified-full", "gossip: refused an uncertified node: too many alive",
			"member", n.Name, "addr", addr.String(), "limit", maxUncertified)
		return errTooManyUncertified
	}
	return nil
}

func (a admission) NotifyConflict(existing, other *memberlist.Node) {
	a.g.conflicts.Add(1)
	a.g.logs.log(slog.LevelInfo, "conflict", "gossip: two nodes claim one name; memberlist keeps the first until it is dead",
		"member", existing.Name, "kept", addrPort(existing).String(), "other", addrPort(other).String())
}

type events struct{ g *Gossip }

func (e *events) NotifyJoin(n *memberlist.Node) {
	g, addr := e.g, addrPort(n)
	self := n.Name == g.cfg.NodeName
	g.mu.Lock()
	g.observe(n.Name, addr, "alive")
	cert := !self && g.roster.Load().certified(n.Name, addr)
	switch {
	case cert:
		g.removePending(n.Name)
		if g.forgotten[n.Name] {
			delete(g.forgotten, n.Name) // back: learnt again
			g.known[n.Name] = addr.String()
		}
	case !self:
		g.addPending(n.Name, addr)
	}
	g.mu.Unlock()
	switch {
	case cert:
		g.emitJoin(n.Name)
		g.log.Info("gossip member joined", "member", n.Name, "addr", addr.String())
	case self:
		g.log.Info("gossip member joined", "member", n.Name, "addr", addr.String())
	default:
		g.logs.log(slog.LevelInfo, "uncertified-join", "gossip node joined that is not (yet) a certified site",
			"member", n.Name, "addr", addr.String())
	}
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	// Failure or departure: reported, never acted on. Peers and routes stay.
	g, addr := e.g, addrPort(n)
	g.mu.Lock()
	g.observe(n.Name, addr, "dead")
	g.removePending(n.Name)
	g.mu.Unlock()
	if g.roster.Load().certified(n.Name, addr) {
		g.log.Info("gossip member left or failed (its tunnel and routes stay)", "member", n.Name)
		return
	}
	g.logs.log(slog.LevelInfo, "uncertified-leave", "gossip node left or failed that is not a certified site",
		"member", n.Name, "addr", addr.String())
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	e.g.mu.Lock()
	e.g.observe(n.Name, addrPort(n), "alive")
	e.g.mu.Unlock()
}
