package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// Set DCMESH_UPDATE_GOLDEN=1 to rewrite testdata/graph/*.dot from the
// renderer (then read the diff: it is the picture's change).
var updateGolden = os.Getenv("DCMESH_UPDATE_GOLDEN") == "1"

func loadStatus(t *testing.T, name string) control.Status {
	t.Helper()
	st, err := readStatusFile(filepath.Join("testdata", "graph", name), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The picture of one site's status and of two sites' merged, as golden
// DOT: sites, this site highlighted, static peers as boxes, an unknown key
// as a diamond, a dead gossip member dashed, tunnels coloured by state
// (the worse side's when both reported), labels with handshake age and
// probe RTT, a name with quotes and a backslash escaped. Each renders with
// Graphviz when it is installed.
func TestGraphGolden(t *testing.T) {
	fra1, ams1 := loadStatus(t, "fra1.json"), loadStatus(t, "ams1.json")
	for _, c := range []struct {
		golden   string
		statuses []control.Status
	}{
		{"fra1.dot", []control.Status{fra1}},
		{"fra1-ams1.dot", []control.Status{fra1, ams1}},
	} {
		got := meshDOT(c.statuses)
		path := filepath.Join("testdata", "graph", c.golden)
		if updateGolden {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (DCMESH_UPDATE_GOLDEN=1 writes it)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from the renderer's output (DCMESH_UPDATE_GOLDEN=1 rewrites it):\n%s", c.golden, got)
		}
		if _, err := exec.LookPath("dot"); err == nil {
			renderDOT(t, got)
		}
	}
}

// renderDOT runs dot -Tsvg on a graph and checks that Graphviz took it
// without a warning and drew an SVG.
func renderDOT(t *testing.T, graph string) string {
	t.Helper()
	requireTool(t, "dot")
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = strings.NewReader(graph)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil || errOut.Len() > 0 {
		t.Fatalf("dot -Tsvg: %v\n%s\n%s", err, errOut.String(), graph)
	}
	svg := out.String()
	if !strings.Contains(svg, "<svg") || !strings.Contains(svg, "</svg>") {
		t.Fatalf("dot -Tsvg drew no SVG:\n%s", svg)
	}
	return svg
}

// The same statuses in any order, peers and members shuffled, give the
// same text.
func TestGraphIsDeterministic(t *testing.T) {
	fra1, ams1 := loadStatus(t, "fra1.json"), loadStatus(t, "ams1.json")
	want := meshDOT([]control.Status{fra1, ams1})
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		a, b := clonedStatus(t, fra1), clonedStatus(t, ams1)
		for _, st := range []*control.Status{&a, &b} {
			r.Shuffle(len(st.Peers), func(i, j int) { st.Peers[i], st.Peers[j] = st.Peers[j], st.Peers[i] })
			m := st.Gossip.Members
			r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		}
		in := []control.Status{a, b}
		if r.IntN(2) == 0 {
			in = []control.Status{b, a}
		}
		if got := meshDOT(in); got != want {
			t.Fatalf("shuffled input gives another graph:\n%s\nwant:\n%s", got, want)
		}
	}
}

func clonedStatus(t *testing.T, st control.Status) control.Status {
	t.Helper()
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out control.Status
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Names from a status are data, never DOT: whatever they hold, the output
// stays one node per name and Graphviz parses it.
func TestGraphEscapesNames(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`fra1`, `"fra1"`},
		{`a"b`, `"a\"b"`},
		{`a\`, `"a\\"`},
		{`a\nb`, `"a\\nb"`},
		{"a\nb\x00c\x7f", "\"a\uFFFDb\uFFFDc\uFFFD\""},
		{"\xff", "\"\uFFFD\""},
		{`"]; x -- y [`, `"\"]; x -- y ["`},
	} {
		if got := dotString([]string{c.in}); got != c.want {
			t.Errorf("dotString(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	hostile := []string{`"] ; evil -- "x`, `back\`, "new\nline", `<b>html</b>`, "}", "\xfe\xff"}
	st := control.Status{Schema: control.StatusSchema, GeneratedAt: time.Unix(0, 0), Site: `self"`}
	for i, n := range hostile {
		st.Peers = append(st.Peers, control.PeerStatus{Site: n, PublicKey: string(rune('A' + i)), Role: control.RoleCurrent, Source: control.SourceGossip, State: control.PeerUp})
	}
	graph := meshDOT([]control.Status{st})
	// 4 header lines, a node per peer and this site, an edge per peer, "}".
	if n, want := strings.Count(graph, "\n"), 4+len(hostile)+1+len(hostile)+1; n != want {
		t.Errorf("%d lines, want %d:\n%s", n, want, graph)
	}
	if _, err := exec.LookPath("dot"); err == nil {
		svg := renderDOT(t, graph)
		if n, e := strings.Count(svg, `class="node"`), strings.Count(svg, `class="edge"`); n != len(hostile)+1 || e != len(hostile) {
			t.Errorf("Graphviz drew %d nodes and %d edges, want %d and %d:\n%s", n, e, len(hostile)+1, len(hostile), graph)
		}
	}
}

func TestShortAge(t *testing.T) {
	for sec, want := range map[int64]string{-5: "0s", 0: "0s", 59: "59s", 60: "1m0s", 3599: "59m59s", 3600: "1h0m", 86399: "23h59m", 90000: "1d1h"} {
		if got := shortAge(sec); got != want {
			t.Errorf("shortAge(%d) = %q, want %q", sec, got, want)
		}
	}
}

// A --json-input that is no status says so, naming the file and the fix.
func TestGraphRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, content, want string }{
		{"garbage.json", "not json", "not a dcmesh status --json"},
		{"schema.json", `{"schema": 2, "site": "fra1"}`, `"schema" is 2; this dcmesh reads schema 1`},
		{"nosite.json", `{"schema": 1}`, `no "site"`},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readStatusFile(p, nil); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file and %q", c.name, err, c.want)
		}
	}
	if _, err := readStatusFile(filepath.Join(dir, "missing.json"), nil); err == nil || !strings.Contains(err.Error(), "--json-input") {
		t.Errorf("missing file: %v", err)
	}
	st, err := readStatusFile("-", strings.NewReader(`{"schema": 1, "site": "fra1"}`))
	if err != nil || st.Site != "fra1" {
		t.Errorf("stdin: %+v, %v", st, err)
	}
}
