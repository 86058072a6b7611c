package main

// The monitoring examples (Prometheus alert rules, Grafana dashboard) are
// checked the way an SRE meets them: promtool checks and unit-tests the
// rules; every metric they query is one docs/METRICS.md documents; and a
// real Prometheus scraping real agents evaluates every rule without error,
// raises nothing on a healthy mesh, raises DcmeshAgentDown when an agent
// dies, and answers every dashboard query with data.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "../../examples/prometheus/dcmesh.rules.yml"
	rulesTestFile = "../../examples/prometheus/dcmesh.rules_test.yml"
	dashboardFile = "../../examples/grafana/dcmesh.json"
	provisionFile = "../../examples/grafana/dashboards.yml"
)

// announcedMetrics are queried by the examples before the agent exports
// them; each names the issue that adds it. Once docs/METRICS.md documents
// one, the test asks for it to be taken off this list.
var announcedMetrics = map[string]string{}

// documentedMetrics returns the metric names of docs/METRICS.md's table.
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(dcmesh_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		names[m[1]] = true
	}
	if len(names) < 15 {
		t.Fatalf("docs/METRICS.md lists only %d metrics", len(names))
	}
	return names
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string            `yaml:"alert"`
			Expr   string            `yaml:"expr"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// dashboardExprs returns every PromQL expression of the dashboard (panel
// targets, variable queries, annotations) by where it is.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr       string          `json:"expr"`
				RefID      string          `json:"refId"`
				Datasource json.RawMessage `json:"datasource"`
			} `json:"targets"`
			Datasource json.RawMessage     `json:"datasource"`
			GridPos    *struct{ W, H int } `json:"gridPos"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		UID string `json:"uid"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" {
		t.Errorf("%s: no uid (provisioning needs a stable one)", dashboardFile)
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	const ds = `{"type":"prometheus","uid":"${datasource}"}`
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if compact(p.Datasource) != ds {
			t.Errorf("panel %q: data source %s, want %s (the dashboard's variable)", p.Title, p.Datasource, ds)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if compact(q.Datasource) != ds {
				t.Errorf("panel %q query %s: data source %s", p.Title, q.RefID, q.Datasource)
			}
			exprs[fmt.Sprintf("panel %q query %s", p.Title, q.RefID)] = q.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			exprs["variable "+v.Name] = v.Definition
		}
	}
	for _, a := range d.Annotations.List {
		exprs["annotation "+a.Name] = a.Expr
	}
	return exprs
}

func compact(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

var metricName = regexp.MustCompile(`\bdcmesh_[a-z0-9_]+\b`)

// Every dcmesh_ metric the rules and the dashboard query is documented (a
// renamed metric breaks this test, not an SRE's pager), and the dashboard is
// well formed for provisioning.
func TestMonitoringExamplesUseDocumentedMetrics(t *testing.T) {
	documented := documentedMetrics(t)
	for name, issue := range announcedMetrics {
		if documented[name] {
			t.Errorf("%s is documented now (%s): take it off announcedMetrics", name, issue)
		}
	}
	where := map[string]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %+v: needs alert, expr and a severity label", r)
			}
			where["rule "+r.Alert] = r.Expr
		}
	}
	if len(where) < 8 {
		t.Fatalf("%s has only %d rules", rulesFile, len(where))
	}
	for k, v := range dashboardExprs(t) {
		where[k] = v
	}
	used := map[string]bool{}
	for at, expr := range where {
		if !strings.Contains(expr, `job="dcmesh"`) {
			t.Errorf("%s does not select job=\"dcmesh\": %s", at, expr)
		}
		for _, n := range metricName.FindAllString(expr, -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b := strings.TrimSuffix(n, suffix); b != n && documented[b] {
					base = b
				}
			}
			used[base] = true
			if !documented[base] && announcedMetrics[base] == "" {
				t.Errorf("%s queries %s, which docs/METRICS.md does not document", at, n)
			}
		}
	}
	for _, want := range []string{"dcmesh_peer_up", "dcmesh_routes_programmed", "dcmesh_key_current_since_timestamp_seconds",
		"dcmesh_rotations_total", "dcmesh_peer_receive_bytes_total", "dcmesh_peer_last_handshake_timestamp_seconds",
		"dcmesh_key_rotation_phase", "dcmesh_reconcile_errors_total", "dcmesh_route_repairs_total"} {
		if !used[want] {
			t.Errorf("neither the rules nor the dashboard use %s", want)
		}
	}

	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string            `yaml:"name"`
			Type    string            `yaml:"type"`
			Options map[string]string `yaml:"options"`
		} `yaml:"providers"`
	}
	raw, err := os.ReadFile(provisionFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &prov); err != nil {
		t.Fatalf("%s: %v", provisionFile, err)
	}
	if prov.APIVersion != 1 || len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options["path"] == "" {
		t.Errorf("%s: want apiVersion 1 and one file provider with a path: %+v", provisionFile, prov)
	}
}

// promtool runs promtool; the test skips without it (fails in CI).
func promtool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	requireTool(t, "promtool")
	out, err := exec.Command("promtool", args...).CombinedOutput()
	return string(out), err
}

func TestPrometheusRules(t *testing.T) {
	if out, err := promtool(t, "check", "rules", rulesFile); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := promtool(t, "test", "rules", rulesTestFile); err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// promQuery asks the Prometheus listening on 127.0.0.1:9090 in a namespace
// (ns runs a command there) for an instant query's result.
func promQuery(t *testing.T, ns func(...string) (string, error), query string) ([]map[string]any, error) {
	t.Helper()
	out, err := ns("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/api/v1/query?query="+url.QueryEscape(query))
	if err != nil {
		return nil, fmt.Errorf("query %s: %v\n%s", query, err, out)
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []map[string]any `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("query %s: %v\n%s", query, err, out)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", query, r.Error)
	}
	return r.Data.Result, nil
}

func TestMonitoringAgainstLiveAgents(t *testing.T) {
	requireTool(t, "curl", "promtool", "prometheus")
	rulesAbs, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := newGossipMesh(t, 3)
	var targets []string
	for _, s := range m.sites {
		s.agentArgs = []string{"--metrics-addr", s.underlay() + ":9469"}
		targets = append(targets, fmt.Sprintf("%q", s.underlay()+":9469"))
	}
	m.startAll()
	m.waitFullMesh(m.sites...)
	ul := func(args ...string) (string, error) { return m.ul.Try(args[0], args[1:]...) }

	// promtool check metrics on each agent's scrape: the exposition format
	// and Prometheus' naming conventions.
	for _, s := range m.sites {
		scrape := m.ul.Run(t, "curl", "-sf", "http://"+s.underlay()+":9469/metrics")
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(scrape)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("promtool check metrics on %s's scrape: %v\n%s", s.name, err, out)
		}
	}

	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: dcmesh
    static_configs: [{targets: [%s]}]
`, rulesAbs, strings.Join(targets, ", "))), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := m.ul.Start(t, "prometheus", "prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address=127.0.0.1:9090", "--log.level=warn")
	waitFor(t, 30*time.Second, "Prometheus scrapes the 3 agents", func() error {
		if prom.Exited() {
			t.Fatalf("prometheus exited:\n%s", prom.Output())
		}
		r, err := promQuery(t, ul, `up{job="dcmesh"} == 1`)
		if err == nil && len(r) != 3 {
			err = fmt.Errorf("%d targets up", len(r))
		}
		return err
	})
	// A rotation while Prometheus watches: the rotation panels and the
	// annotation have something to show.
	if out := m.cli("rotate", "--wait", "--config", m.sites[0].cfgPath); !strings.Contains(out, "complete") {
		t.Fatalf("rotation: %s", out)
	}
	waitFor(t, 20*time.Second, "Prometheus sees the rotation and every peer up", func() error {
		if r, err := promQuery(t, ul, `dcmesh_key_epoch{job="dcmesh"} == 1`); err != nil || len(r) != 1 {
			return fmt.Errorf("epoch 1 on %d agents: %v", len(r), err)
		}
		if r, err := promQuery(t, ul, `dcmesh_peer_up{job="dcmesh",role="current"} == 1`); err != nil || len(r) != 6 {
			return fmt.Errorf("%d of 6 peers up: %v", len(r), err)
		}
		return nil
	})

	// Every rule evaluates without error on real series, and a healthy
	// mesh raises nothing (a rotation may leave DcmeshRotationStuck pending
	// for a second: wait for it to clear).
	waitFor(t, 20*time.Second, "every rule evaluated, healthy, no alert", func() error {
		out, err := ul("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/api/v1/rules")
		if err != nil {
			return err
		}
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError, State string
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return err
		}
		var n int
		var bad []string
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				n++
				if rule.Health != "ok" || rule.State != "inactive" {
					bad = append(bad, fmt.Sprintf("%s: health %s %s, state %s", rule.Name, rule.Health, rule.LastError, rule.State))
				}
			}
		}
		if n != len(readRules(t).Groups[0].Rules) || len(bad) > 0 {
			return fmt.Errorf("%d rules loaded; not healthy and inactive: %v", n, bad)
		}
		return nil
	})

	// Every dashboard query answers with data ("$instance" is All). The
	// rejected-records stat shows only reasons above 0: empty when healthy.
	mayBeEmpty := map[string]bool{`panel "Records rejected (1 h)" query A`: true}
	exprs := dashboardExprs(t)
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, at := range keys {
		q := strings.NewReplacer(`"$instance"`, `".+"`, "$__rate_interval", "1m").Replace(exprs[at])
		if strings.HasPrefix(q, "label_values(") {
			q = strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ", instance)")
		}
		r, err := promQuery(t, ul, q)
		if err != nil {
			t.Errorf("%s: %v", at, err)
		} else if len(r) == 0 && !mayBeEmpty[at] {
			t.Errorf("%s returns nothing: %s", at, q)
		}
	}
	// The site × site matrix: one cell per ordered pair, named by site.
	matrix := exprs[`panel "Site × site: is the tunnel up?" query A`]
	r, err := promQuery(t, ul, strings.ReplaceAll(matrix, `"$instance"`, `".+"`))
	if err != nil {
		t.Fatal(err)
	}
	cells := map[string]bool{}
	for _, c := range r {
		if lbl, ok := c["metric"].(map[string]any); ok {
			cells[fmt.Sprintf("%v→%v", lbl["local_site"], lbl["site"])] = true
		}
	}
	for _, a := range m.sites {
		for _, b := range m.sites {
			if a != b && !cells[a.name+"→"+b.name] {
				t.Errorf("matrix lacks the cell %s→%s: %v", a.name, b.name, cells)
			}
		}
	}

	// An agent dies: DcmeshAgentDown goes pending for it at once.
	m.sites[2].agent.Kill()
	waitFor(t, 20*time.Second, "DcmeshAgentDown pending for site3", func() error {
		r, err := promQuery(t, ul, `ALERTS{alertname="DcmeshAgentDown",instance="`+m.sites[2].underlay()+`:9469"}`)
		if err == nil && len(r) != 1 {
			err = fmt.Errorf("%d alerts", len(r))
		}
		return err
	})
}
