package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// The picture of `dcmesh graph`: statuses in, Graphviz DOT out, nothing
// else (no clock, no I/O), so that the same statuses always give the same
// text and the golden files in testdata/graph pin it.
//
// Sites are nodes: the sites whose status was given (the agent asked, or
// each --json-input) are highlighted; the peers they report are ellipses
// (gossip sites) or boxes (static peers), a key on the device that neither
// names is a diamond; gossip members with no tunnel to a reporting site
// are dashed. A tunnel is an edge between the two sites, coloured by the
// peer's state (up green, stale = degraded orange, down red, anything else
// grey: unknown), the worse of the two sides when both reported it, and
// labelled with the handshake age and the in-tunnel probe round trip as
// each side saw them.
//
// Gateways: the status has no gateway data yet. When it has, a site's
// gateways become a "cluster_<site>" subgraph in writeNodes; nothing else
// changes.

// graphEdgeState is a tunnel's colour class.
type graphEdgeState string

const (
	edgeUp       graphEdgeState = "up"
	edgeDegraded graphEdgeState = "degraded"
	edgeDown     graphEdgeState = "down"
	edgeUnknown  graphEdgeState = "unknown"
)

// edgeStyle is how each class is drawn; worse classes have higher rank.
var edgeStyle = map[graphEdgeState]struct {
	color, style string
	rank         int
}{
	edgeUp:       {"forestgreen", "solid", 0},
	edgeUnknown:  {"gray50", "dotted", 1},
	edgeDegraded: {"orange", "dashed", 2},
	edgeDown:     {"red", "bold", 3},
}

func edgeStateOf(s control.PeerState) graphEdgeState {
	switch s {
	case control.PeerUp:
		return edgeUp
	case control.PeerStale:
		return edgeDegraded
	case control.PeerDown:
		return edgeDown
	}
	return edgeUnknown
}

type graphNode struct {
	name     string
	reporter bool                // its status is one of the inputs
	source   control.Source      // how a reporter knows it (static wins: it is configuration)
	member   control.MemberState // its gossip state, "" if no reporter lists it
}

// edgeView is one side's report of a tunnel.
type edgeView struct {
	from     string
	state    control.PeerState
	age      *int64   // seconds since the last handshake; nil: none yet
	rttMilli *float64 // nil: not probed
	rotating bool     // the peer's next key is pre-installed
}

type graphEdge struct {
	a, b  string // a < b
	views []edgeView
}

func (e *graphEdge) state() graphEdgeState {
	worst := edgeUp
	if len(e.views) == 0 {
		return edgeUnknown
	}
	for _, v := range e.views {
		if s := edgeStateOf(v.state); edgeStyle[s].rank > edgeStyle[worst].rank {
			worst = s
		}
	}
	return worst
}

// meshGraph is the merged view of several statuses.
type meshGraph struct {
	nodes map[string]*graphNode
	edges map[[2]string]*graphEdge
	views []string    // the reporting sites, sorted
	at    []time.Time // when each status was taken
}

func (g *meshGraph) node(name string) *graphNode {
	n := g.nodes[name]
	if n == nil {
		n = &graphNode{name: name}
		g.nodes[name] = n
	}
	return n
}

// peerName names a peer by node name (its site for gateway 0), or by its
// key when no site claims it.
func peerName(p control.PeerStatus) string {
	if p.Name() != "" {
		return p.Name()
	}
	k := p.PublicKey
	if len(k) > 8 {
		k = k[:8]
	}
	return "key " + k
}

// buildMeshGraph merges statuses into one graph.
func buildMeshGraph(statuses []control.Status) *meshGraph {
	g := &meshGraph{nodes: map[string]*graphNode{}, edges: map[[2]string]*graphEdge{}}
	for _, st := range statuses {
		self := g.node(st.Site)
		self.reporter = true
		g.views = append(g.views, st.Site)
		g.at = append(g.at, st.GeneratedAt)
		for _, m := range st.Gossip.Members {
			if n := g.node(m.Name); n.member == "" || m.State == control.MemberAlive {
				n.member = m.State
			}
		}
		g.addPeers(st)
	}
	slices.Sort(g.views)
	g.views = slices.Compact(g.views)
	return g
}

// addPeers adds one status's tunnels: its current keys, with a
// pre-installed next key as a note on its site's tunnel.
func (g *meshGraph) addPeers(st control.Status) {
	rotating := map[string]bool{}
	for _, p := range st.Peers {
		if p.Role == control.RoleNext {
			rotating[peerName(p)] = true
		}
	}
	for _, p := range st.Peers {
		if p.Role == control.RoleNext {
			continue
		}
		name := peerName(p)
		n := g.node(name)
		if n.source != control.SourceStatic {
			n.source = p.Source
		}
		v := edgeView{from: st.Site, state: p.State, age: p.HandshakeAgeSeconds, rotating: rotating[name]}
		if p.Probe != nil && p.Probe.RTTMillis > 0 {
			v.rttMilli = &p.Probe.RTTMillis
		}
		key := [2]string{st.Site, name}
		if key[1] < key[0] {
			key[0], key[1] = key[1], key[0]
		}
		e := g.edges[key]
		if e == nil {
			e = &graphEdge{a: key[0], b: key[1]}
			g.edges[key] = e
		}
		e.views = append(e.views, v)
	}
}

// meshDOT renders statuses as a Graphviz graph.
func meshDOT(statuses []control.Status) string {
	g := buildMeshGraph(statuses)
	var b strings.Builder
	b.WriteString("graph dcmesh {\n")
	fmt.Fprintf(&b, "  graph [label=%s, labelloc=t, fontname=\"Helvetica\", overlap=false, splines=true];\n", dotString(g.title()))
	b.WriteString("  node [fontname=\"Helvetica\", shape=ellipse];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10];\n")
	g.writeNodes(&b)
	g.writeEdges(&b)
	b.WriteString("}\n")
	return b.String()
}

func (g *meshGraph) title() []string {
	if len(g.views) == 0 {
		return []string{"dcmesh: no status"}
	}
	first, last := g.at[0], g.at[0]
	for _, t := range g.at {
		if t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	when := first.UTC().Format(time.RFC3339)
	if !last.Equal(first) {
		when += " to " + last.UTC().Format(time.RFC3339)
	}
	return []string{"dcmesh as seen by " + strings.Join(g.views, ", "), when}
}

func (g *meshGraph) writeNodes(b *strings.Builder) {
	names := make([]string, 0, len(g.nodes))
	for n := range g.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		n := g.nodes[name]
		label := []string{name}
		var attrs []string
		switch {
		case n.reporter:
			attrs = append(attrs, `style="filled,bold"`, `fillcolor="lightskyblue"`, "penwidth=2")
			if len(g.views) == 1 {
				label = append(label, "(this site)")
			} else {
				label = append(label, "(status given)")
			}
		case n.source == control.SourceStatic:
			attrs = append(attrs, "shape=box")
			label = append(label, "(static peer)")
		case n.source == control.SourceUnknown:
			attrs = append(attrs, "shape=diamond")
			label = append(label, "(on the device, unknown)")
		}
		if !n.reporter && n.member != "" && n.member != control.MemberAlive {
			attrs = append(attrs, "style=dashed", `fontcolor="gray40"`)
			label = append(label, "(gossip: "+string(n.member)+")")
		}
		attrs = append([]string{"label=" + dotString(label)}, attrs...)
		fmt.Fprintf(b, "  %s [%s];\n", dotString([]string{name}), strings.Join(attrs, ", "))
	}
}

func (g *meshGraph) writeEdges(b *strings.Builder) {
	keys := make([][2]string, 0, len(g.edges))
	for k := range g.edges {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [2]string) int {
		if c := strings.Compare(x[0], y[0]); c != 0 {
			return c
		}
		return strings.Compare(x[1], y[1])
	})
	for _, k := range keys {
		e := g.edges[k]
		slices.SortStableFunc(e.views, func(x, y edgeView) int { return strings.Compare(x.from, y.from) })
		s := e.state()
		st := edgeStyle[s]
		fmt.Fprintf(b, "  %s -- %s [label=%s, color=%q, fontcolor=%q, style=%s, tooltip=%s];\n",
			dotString([]string{e.a}), dotString([]string{e.b}), dotString(e.label(len(g.views) > 1)), st.color, st.color, st.style,
			dotString([]string{e.a + " – " + e.b + ": " + string(s)}))
	}
}

// label is one line per side that reported the tunnel: its state, the
// handshake age and the probe round trip; named by the side when several
// sites' statuses are drawn.
func (e *graphEdge) label(named bool) []string {
	var out []string
	for _, v := range e.views {
		parts := []string{string(orUnknown(v.state))}
		if v.age != nil {
			parts = append(parts, "handshake "+shortAge(*v.age)+" ago")
		} else {
			parts = append(parts, "no handshake")
		}
		if v.rttMilli != nil {
			parts = append(parts, fmt.Sprintf("rtt %.1f ms", *v.rttMilli))
		}
		if v.rotating {
			parts = append(parts, "key rotating")
		}
		line := strings.Join(parts, ", ")
		if named {
			line = v.from + ": " + line
		}
		out = append(out, line)
	}
	return out
}

func orUnknown(s control.PeerState) control.PeerState {
	if s == "" {
		return "unknown"
	}
	return s
}

// shortAge is a handshake age the way an operator reads it: 42s, 3m5s,
// 2h10m, 3d4h.
func shortAge(sec int64) string {
	if sec < 0 {
		sec = 0
	}
	d := time.Duration(sec) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", sec)
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", sec/60, sec%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", sec/3600, sec%3600/60)
	}
	return fmt.Sprintf("%dd%dh", sec/86400, sec%86400/3600)
}

// dotString is a DOT double-quoted string of lines (joined with \n, which
// Graphviz centres line by line). Quotes and backslashes are escaped, so a
// name cannot end the string or start an escape; other control characters
// become U+FFFD; invalid UTF-8 does too (ranging over a string does that).
func dotString(lines []string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, l := range lines {
		if i > 0 {
			b.WriteString(`\n`)
		}
		for _, r := range l {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < 0x20 || r == 0x7f:
				b.WriteRune('\uFFFD')
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
