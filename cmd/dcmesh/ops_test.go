package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// appendConfig adds YAML at the end of s's configuration (top level).
func (s *site) appendConfig(yaml string) {
	f, err := os.OpenFile(s.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		s.m.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		s.m.t.Fatal(err)
	}
}

// health runs `dcmesh health --json` and returns the parsed answer and the
// exit code.
func (s *site) health() (control.Health, int) {
	s.m.t.Helper()
	out, err := exec.Command(dcmeshBinary(s.m.t), "health", "--json", "--config", s.cfgPath).Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.m.t.Fatal(err)
	}
	var h control.Health
	if err := json.Unmarshal(out, &h); err != nil {
		s.m.t.Fatalf("health --json: %v\n%s", err, out)
	}
	if h.ExitCode != code {
		s.m.t.Errorf("health says exit_code %d but exited %d", h.ExitCode, code)
	}
	return h, code
}

// wgShow returns one `wg show IFACE FIELD` table: public key → value.
func (s *site) wgShow(field string) map[string]string {
	out := s.ns.Run(s.m.t, "wg", "show", s.iface, field)
	res := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "\t"); ok {
			res[k] = v
		}
	}
	return res
}

// docJSON returns the n-th ```json block of a document.
func docJSON(t *testing.T, path string, n int) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	if len(blocks) <= n {
		t.Fatalf("%s has no json block #%d", path, n)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(blocks[n][1]), &v); err != nil {
		t.Fatalf("%s json block #%d: %v", path, n, err)
	}
	return v
}

// sameShape reports every field present in one of doc and real but not the
// other. Maps keyed by data (dynamic) are compared only as maps.
func sameShape(path string, doc, real any, dynamic map[string]bool) []string {
	var diffs []string
	switch d := doc.(type) {
	case map[string]any:
		r, ok := real.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: documented as an object, is %T", path, real)}
		}
		if dynamic[path] {
			return nil
		}
		for k, dv := range d {
			rv, ok := r[k]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s.%s: documented but missing from the output", path, k))
				continue
			}
			if dv != nil && rv != nil {
				diffs = append(diffs, sameShape(path+"."+k, dv, rv, dynamic)...)
			}
		}
		for k := range r {
			if _, ok := d[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s.%s: in the output but not documented", path, k))
			}
		}
	case []any:
		r, ok := real.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: documented as an array, is %T", path, real)}
		}
		if len(d) > 0 && len(r) > 0 {
			diffs = append(diffs, sameShape(path+"[]", d[0], r[0], dynamic)...)
		}
	}
	return diffs
}

// Three sites: `status --json` matches the real state (wg show and ip route
// are the witnesses) and the documented schema; `health` is 0 with all up, 1
// within a keepalive-and-handshake period of one peer's agent being killed,
// 2 when no peer is reachable and when the agent is down.
func TestStatusAndHealth(t *testing.T) {
	m, _ := newGossipMesh(t, 3)
	for _, s := range m.sites {
		s.appendConfig("persistent_keepalive: 5s\n")
	}
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]

	raw := m.cli("status", "--json", "--config", s1.cfgPath)
	var generic map[string]any
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatalf("status --json: %v\n%s", err, raw)
	}
	dynamic := map[string]bool{".gossip.members_by_state": true, ".records_rejected": true}
	for _, d := range sameShape("", docJSON(t, "../../docs/STATUS.md", 0), generic, dynamic) {
		t.Error("docs/STATUS.md: " + d)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	if st.Schema != 1 || st.Site != s1.name || st.Interface != s1.iface || st.Backend != "userspace" || st.PublicKey != s1.pub {
		t.Errorf("identity fields: %+v", st)
	}
	if st.Key.Epoch != 0 || st.Key.RotationPhase != "stable" || st.Key.NextRotation == nil || st.Key.AgeSeconds < 0 || st.Key.AgeSeconds > 120 {
		t.Errorf("key fields: %+v", st.Key)
	}
	if !st.Gossip.Enabled || st.Gossip.MembersByState["alive"] != 3 || len(st.Gossip.Members) != 3 {
		t.Errorf("gossip fields: %+v", st.Gossip)
	}
	if st.Routes.Desired != 4 || st.Routes.Programmed != 4 || st.Routes.FailClosedDesired != 4 || st.Routes.FailClosedProgrammed != 4 || st.Routes.Table != 254 {
		t.Errorf("routes: %+v", st.Routes)
	}
	endpoints, allowed, handshakes, transfer := s1.wgShow("endpoints"), s1.wgShow("allowed-ips"), s1.wgShow("latest-handshakes"), s1.wgShow("transfer")
	routes := s1.ns.Run(t, "ip", "route", "show", "proto", "220")
	if len(st.Peers) != 2 || len(endpoints) != 2 {
		t.Fatalf("peers: status %d, wg show %d", len(st.Peers), len(endpoints))
	}
	sites := map[string]*site{s2.pub: s2, s3.pub: s3}
	for _, p := range st.Peers {
		o := sites[p.PublicKey]
		if o == nil {
			t.Errorf("status lists an unknown key %s", p.PublicKey)
			continue
		}
		if p.Site != o.name || p.Source != "gossip" || p.Role != "current" || p.State != "up" || p.GossipState != "alive" || !p.RoutesProgrammed {
			t.Errorf("peer %s: %+v", o.name, p)
		}
		if p.Endpoint != endpoints[p.PublicKey] {
			t.Errorf("peer %s endpoint %q, wg show says %q", o.name, p.Endpoint, endpoints[p.PublicKey])
		}
		wgIPs := strings.Fields(allowed[p.PublicKey])
		sort.Strings(wgIPs)
		ours := append([]string(nil), p.AllowedIPs...)
		sort.Strings(ours)
		if strings.Join(ours, " ") != strings.Join(wgIPs, " ") {
			t.Errorf("peer %s allowed IPs %v, wg show says %v", o.name, ours, wgIPs)
		}
		for _, ip := range p.AllowedIPs {
			bare := strings.TrimSuffix(ip, "/32")
			if !strings.Contains(routes, bare+" dev "+s1.iface) || !strings.Contains(routes, "unreachable "+bare) {
				t.Errorf("status says routes programmed for %s but ip route lacks them:\n%s", ip, routes)
			}
		}
		hs, _ := strconv.ParseInt(handshakes[p.PublicKey], 10, 64)
		if p.LastHandshake == nil || p.LastHandshake.Unix() != hs {
			t.Errorf("peer %s handshake %v, wg show says %d", o.name, p.LastHandshake, hs)
		}
		rx, tx := parseTransfer(transfer[p.PublicKey])
		if p.RxBytes <= 0 || p.RxBytes > rx || p.TxBytes <= 0 || p.TxBytes > tx {
			t.Errorf("peer %s rx/tx %d/%d, wg show (read later) %d/%d", o.name, p.RxBytes, p.TxBytes, rx, tx)
		}
	}
	if table := m.cli("status", "--config", s1.cfgPath); !strings.Contains(table, "PEER") || !strings.Contains(table, s2.name) {
		t.Errorf("status table:\n%s", table)
	}

	if h, code := s1.health(); code != 0 || h.Status != "healthy" {
		t.Fatalf("all up: %+v (exit %d)", h, code)
	}
	s2.agent.Kill()
	killed := time.Now()
	waitFor(t, 30*time.Second, "health degraded after site2 died", func() error {
		if h, code := s1.health(); code != 1 || !strings.Contains(strings.Join(h.Reasons, ";"), s2.name) {
			return fmt.Errorf("exit %d: %v", code, h.Reasons)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("health went to 1 (degraded) %s after site2's agent was killed (keepalive 5 s + handshake timeout 5 s)", took.Round(100*time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("degraded only after %s, want within a keepalive-and-handshake period (~10 s)", took)
	}
	s3.agent.Kill()
	waitFor(t, 30*time.Second, "health critical with no peer reachable", func() error {
		if h, code := s1.health(); code != 2 || !strings.Contains(strings.Join(h.Reasons, ";"), "no peer is up") {
			return fmt.Errorf("exit %d: %v", code, h.Reasons)
		}
		return nil
	})
	_ = s1.agent.Stop(10 * time.Second)
	h, code := s1.health()
	if code != 2 || len(h.Reasons) != 1 || !strings.Contains(h.Reasons[0], "not running") {
		t.Errorf("agent down: exit %d, %+v", code, h)
	}
	out, _ := exec.Command(dcmeshBinary(t), "health", "--config", s1.cfgPath).CombinedOutput()
	if !strings.HasPrefix(string(out), "critical: "+s1.name+"\n  the dcmesh agent is not running") {
		t.Errorf("health text: %q", out)
	}
}

func parseTransfer(s string) (rx, tx int64) {
	f := strings.Fields(s)
	if len(f) == 2 {
		rx, _ = strconv.ParseInt(f[0], 10, 64)
		tx, _ = strconv.ParseInt(f[1], 10, 64)
	}
	return rx, tx
}

// A scrape of /metrics has every documented metric, with its labels and
// plausible values.
func TestMetricsScrape(t *testing.T) {
	requireTool(t, "curl")
	m, _ := newGossipMesh(t, 3)
	s1 := m.sites[0]
	s1.agentArgs = []string{"--metrics-addr", "127.0.0.1:9469"}
	m.startAll()
	m.waitFullMesh(m.sites...)
	if out := m.cli("rotate", "--wait", "--config", s1.cfgPath); !strings.Contains(out, "complete") {
		t.Fatalf("rotation: %s", out)
	}
	var scrape string
	waitFor(t, 10*time.Second, "peers up after the rotation", func() error {
		scrape = s1.ns.Run(t, "curl", "-sf", "http://127.0.0.1:9469/metrics")
		// One dcmesh_peer_up series per peer, without a state label; the
		// state in the one-hot dcmesh_peer_state.
		up := regexp.MustCompile(`(?m)^dcmesh_peer_up\{public_key="[^"]+",role="current",site="[^"]+"\} 1$`)
		upState := regexp.MustCompile(`(?m)^dcmesh_peer_state\{public_key="[^"]+",role="current",site="[^"]+",state="up"\} 1$`)
		if n, ns := len(up.FindAllString(scrape, -1)), len(upState.FindAllString(scrape, -1)); n != 2 || ns != 2 || strings.Contains(scrape, `role="next"`) {
			return fmt.Errorf("peer_up lines up: %d, peer_state up: %d\n%s\n%s", n, ns, grepLines(scrape, "dcmesh_peer_up"), grepLines(scrape, "dcmesh_peer_state"))
		}
		// The probe series of a peer exist once its probe session does:
		// right after the rotation the new key's session may still be
		// forming on a loaded machine (a scrape then lacked them once).
		if n := strings.Count(scrape, "\ndcmesh_peer_probe_rtt_seconds{"); n != 2 {
			return fmt.Errorf("probe RTT series: %d, want 2\n%s", n, grepLines(scrape, "dcmesh_peer_probe"))
		}
		return nil
	})
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile("(?m)^\\| `(dcmesh_[a-z_]+)`(.*)$").FindAllStringSubmatch(string(doc), -1)
	if len(names) < 15 {
		t.Fatalf("docs/METRICS.md lists only %d metrics", len(names))
	}
	sometimes := map[string]bool{} // e.g. shadowed routes: this mesh has none
	for _, n := range names {
		if strings.Contains(n[2], "present only when") {
			sometimes[n[1]] = true
		}
	}
	for _, n := range names {
		if sometimes[n[1]] {
			continue
		}
		if !regexp.MustCompile("(?m)^" + n[1] + "(_bucket|_count|_sum)?[{ ]").MatchString(scrape) {
			t.Errorf("documented metric %s missing from the scrape", n[1])
		}
	}
	for _, want := range []string{
		`dcmesh_key_epoch 1`,
		`dcmesh_rotations_total{result="complete"} 1`,
		`dcmesh_routes_desired{kind="tunnel"} 4`, `dcmesh_routes_programmed{kind="tunnel"} 4`,
		`dcmesh_routes_desired{kind="fail_closed"} 4`, `dcmesh_routes_programmed{kind="fail_closed"} 4`,
		`dcmesh_gossip_members{state="alive"} 3`,
		`dcmesh_records_rejected_total{reason="unknown_ca"} 0`,
		`dcmesh_info{backend="userspace",interface="` + s1.iface + `",public_key="`,
		`dcmesh_key_rotation_phase{phase="stable"} 1`, `dcmesh_key_rotation_phase{phase="switching"} 0`,
		`dcmesh_build_info{goversion="go`, `dcmesh_reconcile_errors_total 0`,
		`dcmesh_route_repairs_total{kind="tunnel"} 0`, `dcmesh_route_repairs_total{kind="fail_closed"} 0`,
		"\ngo_goroutines ", "\nprocess_resident_memory_bytes ",
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	for _, o := range m.sites[1:] {
		if !strings.Contains(scrape, fmt.Sprintf(`dcmesh_peer_up{public_key="%s",role="current",site="%s"} 1`, o.pub, o.name)) {
			t.Errorf("no up line for %s:\n%s", o.name, grepLines(scrape, "dcmesh_peer_up"))
		}
		hs := regexp.MustCompile(`dcmesh_peer_last_handshake_timestamp_seconds\{public_key="` + regexp.QuoteMeta(o.pub) + `",role="current",site="` + o.name + `"\} (\S+)`).FindStringSubmatch(scrape)
		if hs == nil {
			t.Errorf("no handshake timestamp for %s", o.name)
		} else if v, _ := strconv.ParseFloat(hs[1], 64); time.Since(time.Unix(int64(v), 0)).Abs() > time.Minute {
			t.Errorf("handshake timestamp %s for %s: not within a minute of now", hs[1], o.name)
		}
	}
	if c := regexp.MustCompile(`dcmesh_reconcile_duration_seconds_count (\d+)`).FindStringSubmatch(scrape); c == nil || c[1] == "0" {
		t.Errorf("no reconciles counted: %v", c)
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
