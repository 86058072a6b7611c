package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dcmesh graph against real agents, as an operator runs it: from one agent
// of a 3-site gossip mesh, the 3 sites and this site's 2 tunnels, green
// once up; from the 3 sites' saved `status --json`, the whole triangle,
// each tunnel once with both views. Graphviz renders both.
func TestGraphOfLiveMesh(t *testing.T) {
	requireTool(t, "dot")
	start := time.Now()
	m, _ := newGossipMesh(t, 3)
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1 := m.sites[0]
	var graph string
	waitFor(t, 20*time.Second, "site1's graph shows its 2 tunnels up", func() error {
		graph = m.cli("graph", "--config", s1.cfgPath)
		if n := strings.Count(graph, ` color="forestgreen"`); n != 2 {
			return fmt.Errorf("%d tunnels drawn up:\n%s", n, graph)
		}
		return nil
	})
	for _, s := range m.sites {
		if !strings.Contains(graph, "\n  \""+s.name+"\" [label=") {
			t.Errorf("no node for %s:\n%s", s.name, graph)
		}
	}
	if !strings.Contains(graph, `"`+s1.name+`\n(this site)"`) {
		t.Errorf("%s is not highlighted as this site:\n%s", s1.name, graph)
	}
	if svg := renderDOT(t, graph); strings.Count(svg, `class="node"`) != 3 || strings.Count(svg, `class="edge"`) != 2 {
		t.Errorf("Graphviz drew %d nodes, %d edges; want 3 and 2", strings.Count(svg, `class="node"`), strings.Count(svg, `class="edge"`))
	}

	dir := t.TempDir()
	args := []string{"graph"}
	for _, s := range m.sites {
		p := filepath.Join(dir, s.name+".json")
		if err := os.WriteFile(p, []byte(m.cli("status", "--json", "--config", s.cfgPath)), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--json-input", p)
	}
	full := m.cli(args...)
	edges := 0
	for _, l := range strings.Split(full, "\n") {
		if strings.Contains(l, `" -- "`) {
			edges++
			if !strings.Contains(l, `\n`) { // two views: two label lines
				t.Errorf("tunnel with one view only: %s", l)
			}
		}
	}
	if edges != 3 {
		t.Errorf("%d tunnels in the whole mesh, want 3:\n%s", edges, full)
	}
	if svg := renderDOT(t, full); strings.Count(svg, `class="node"`) != 3 || strings.Count(svg, `class="edge"`) != 3 {
		t.Errorf("Graphviz drew %d nodes, %d edges; want 3 and 3", strings.Count(svg, `class="node"`), strings.Count(svg, `class="edge"`))
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
