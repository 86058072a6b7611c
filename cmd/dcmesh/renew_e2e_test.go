package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// renewOut runs `dcmesh renew [--bundle BUNDLE] ARGS` for s and returns its
// output and whether it succeeded.
func (s *site) renewOut(bundle string, args ...string) (string, bool) {
	argv := append([]string{"renew", "--config", s.cfgPath}, args...)
	if bundle != "" {
		argv = append(argv, "--bundle", bundle)
	}
	out, err := exec.Command(dcmeshBinary(s.m.t), argv...).CombinedOutput()
	s.m.transcript = append(s.m.transcript, "$ dcmesh "+strings.Join(argv, " ")+"\n"+string(out))
	return string(out), err == nil
}

// trustFiles is the content of s's installed trust files and of any .prev
// copy, by name.
func (s *site) trustFiles() map[string]string {
	out := map[string]string{}
	for _, n := range []string{"ca.crt", "site.crt", "identity.key"} {
		for _, f := range []string{n, n + ".prev"} {
			if b, err := os.ReadFile(filepath.Join(s.stateDir, f)); err == nil {
				out[f] = string(b)
			}
		}
	}
	return out
}

// peerSerial is the serial of site's certificate as s's status shows it.
func (s *site) peerSerial(site string) string {
	for _, p := range s.status().Trust.Peers {
		if p.Subject == site {
			return p.Serial
		}
	}
	return ""
}

// issueFor issues a bundle for s from caDir (its own prefix, overlay and
// underlay unless args override them) and returns the bundle directory.
func (s *site) issueFor(caDir, name string, args ...string) string {
	out := filepath.Join(s.m.dir, name)
	s.m.cli(append([]string{"ca", "issue", "--dir", caDir, "--site", s.name, "--prefix", s.prefix(), "--overlay", s.overlay(),
		"--underlay", fmt.Sprintf("192.168.%d.0/24", s.m.subnet), "--out", out}, args...)...)
	return out
}

// Three sites with probes at 100/s both ways between all of them: bundles
// that do not match site1 are refused with a clear error and change nothing
// (files, the running certificate, what peers see); then site1 is renewed
// online — a new serial and a new identity key — and no probe is lost, every
// peer shows the new serial, and the old one is gone. About 25 s.
func TestRenewUnderTraffic(t *testing.T) {
	m, caDir := newGossipMesh(t, 3)
	m.startAll()
	m.waitFullMesh(m.sites...)
	a := m.sites[0]
	old := a.status().Trust.Certificate.Serial
	waitFor(t, 20*time.Second, "peers see site1's certificate", func() error {
		for _, o := range m.sites[1:] {
			if got := o.peerSerial(a.name); got != old {
				return fmt.Errorf("%s sees %q, want %s", o.name, got, old)
			}
		}
		return nil
	})
	probes := startMeshProbes(t, m.sites, 9510, 100)
	secrets := readSecrets(t, m, caDir)

	before := a.trustFiles()
	corrupt := a.issueFor(caDir, "corrupt")
	if err := os.WriteFile(filepath.Join(corrupt, "site.crt"), []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	otherCA := m.newCA("ca2")
	refusals := []struct{ name, bundle, want string }{
		{"wrong site", m.sites[1].bundle, `site.crt is for site "site2", this agent runs site "site1"`},
		{"wrong CA", a.issueFor(otherCA, "other-ca"), "does not verify against the CAs this site pins now"},
		{"wider prefixes", a.issueFor(caDir, "wider", "--replace", "--prefix", fmt.Sprintf("10.%d.1.0/24", a.idx)),
			fmt.Sprintf("wider prefixes: 10.%d.1.0/24 is not in the running certificate", a.idx)},
		{"corrupt files", corrupt, "renew: site.crt:"},
	}
	for _, r := range refusals {
		out, ok := a.renewOut(r.bundle)
		if ok || !strings.Contains(out, r.want) {
			t.Errorf("%s: succeeded=%v\n%s\nwant a refusal saying …%s…", r.name, ok, out, r.want)
		}
	}
	if after := a.trustFiles(); !mapsEqual(before, after) {
		t.Errorf("refused renewals changed the files: %d before, %d after", len(before), len(after))
	}
	if got := a.status().Trust.Certificate.Serial; got != old {
		t.Errorf("refused renewals changed the running certificate: %s, want %s", got, old)
	}

	bundle := filepath.Join(m.dir, "renewal")
	issued := m.cli("ca", "issue", "--dir", caDir, "--site", a.name, "--prefix", a.prefix(), "--overlay", a.overlay(),
		"--underlay", fmt.Sprintf("192.168.%d.0/24", m.subnet), "--out", bundle)
	if !strings.Contains(issued, "renewal of site site1 (replaces certificate") {
		t.Errorf("ca issue did not say it is a renewal:\n%s", issued)
	}
	start := time.Now()
	out, ok := a.renewOut(bundle)
	if !ok || !strings.Contains(out, "site site1 renewed") || !strings.Contains(out, "new identity key") {
		t.Fatalf("renew: %s", out)
	}
	next := a.status().Trust.Certificate.Serial
	if next == old {
		t.Fatalf("still serial %s after the renewal", old)
	}
	waitFor(t, 20*time.Second, "every peer adopts the new certificate", func() error {
		for _, o := range m.sites[1:] {
			if got := o.peerSerial(a.name); got != next {
				return fmt.Errorf("%s shows %s's serial %q, want %s", o.name, a.name, got, next)
			}
		}
		return nil
	})
	t.Logf("renewal adopted by every peer %s after `dcmesh renew`", time.Since(start).Round(time.Millisecond))
	probes.waitTraffic(t, 100, 20*time.Second) // a second more under the new certificate
	lost := probes.stopAndCountLost(t)
	if lost != 0 {
		t.Errorf("%d probes lost during the renewal, want none", lost)
	}
	for _, s := range m.sites {
		st := s.status()
		serials := []string{st.Trust.Certificate.Serial}
		for _, p := range st.Trust.Peers {
			serials = append(serials, p.Serial)
		}
		if slices.Contains(serials, old) {
			t.Errorf("%s still shows the old serial %s: %v", s.name, old, serials)
		}
	}
	files := a.trustFiles()
	if files["site.crt.prev"] != before["site.crt"] || files["identity.key.prev"] != before["identity.key"] || files["site.crt"] == before["site.crt"] {
		t.Error("the old certificate and key are not kept as .prev beside the new ones")
	}
	secrets = append(secrets, readSecrets(t, m, caDir)...) // the new identity key
	for _, b := range []string{bundle, corrupt, refusals[1].bundle, refusals[2].bundle} {
		if k, err := os.ReadFile(filepath.Join(b, "identity.key")); err == nil {
			if key, err := trust.ParseKeyPEM(k); err == nil {
				secrets = append(secrets, secret{b, keyForms(key.Seed())})
			}
		}
	}
	outputs := append([]string{}, m.transcript...)
	for _, s := range m.sites {
		outputs = append(outputs, s.agent.Output())
	}
	for _, o := range outputs {
		for _, sec := range secrets {
			for _, f := range sec.forms {
				if strings.Contains(o, string(f)) {
					t.Errorf("identity key of %s appears in a log or CLI output", sec.name)
				}
			}
		}
	}
	// A restart reads the renewed files.
	if err := a.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	a.start()
	if got := a.status().Trust.Certificate.Serial; got != next {
		t.Errorf("after a restart: serial %s, want %s", got, next)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A certificate issued already near its end drives health: within 30 days
// degraded (exit 1), within 7 days critical (exit 2), naming the file and
// the fix; a peer's expiring certificate does not count against this site.
// About 15 s.
func TestHealthCertificateNearExpiry(t *testing.T) {
	m := newMesh(t, 3)
	caDir := m.newCA("ca")
	valid := []string{"240h", "72h", "8760h"} // 10 days, 3 days, a year
	for i, s := range m.sites {
		var seeds []string
		if i > 0 {
			seeds = []string{m.sites[0].seed()}
		}
		s.enroll(caDir, seeds, "--valid", valid[i])
	}
	m.startAll()
	m.waitFullMesh(m.sites...)
	want := []struct {
		code int
		text string
	}{{1, "degraded: within 30d"}, {2, "critical: within 7d"}, {0, ""}}
	for i, s := range m.sites {
		waitFor(t, 20*time.Second, s.name+"'s health", func() error {
			h, code := s.health()
			all := strings.Join(h.Reasons, "\n")
			if code != want[i].code || !strings.Contains(all, want[i].text) {
				return fmt.Errorf("exit %d %q, want %d with …%s…", code, h.Reasons, want[i].code, want[i].text)
			}
			if want[i].code > 0 && (!strings.Contains(all, filepath.Join(s.stateDir, "site.crt")) || !strings.Contains(all, "dcmesh renew --bundle DIR")) {
				return fmt.Errorf("reasons %q do not name the file and the fix", h.Reasons)
			}
			return nil
		})
	}
	if got := m.sites[2].status().Trust.Peers; len(got) != 2 || got[1].State != control.ExpiryCritical {
		t.Errorf("site3's view of its peers' certificates: %+v", got)
	}
	scrape := ""
	if out, err := exec.Command(dcmeshBinary(t), "status", "--config", m.sites[0].cfgPath).CombinedOutput(); err != nil || !strings.Contains(string(out), "certificate: serial ") {
		t.Errorf("status text lacks the certificate line: %v\n%s", err, out)
	} else {
		scrape = string(out)
	}
	t.Logf("status of site1:\n%s", scrape)
}

// A certificate that has expired (the agent started within trust.clock_skew
// of its end) makes health critical, exit 2, saying it expired. Issued with
// a one-second validity: no sleep, the test waits for the condition.
func TestHealthCertificateExpired(t *testing.T) {
	m := newMesh(t, 1)
	caDir := m.newCA("ca")
	s := m.sites[0]
	s.enroll(caDir, nil, "--valid", "1s")
	raw, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.cfgPath, []byte(strings.Replace(string(raw), "clock_skew: 1s", "clock_skew: 5m", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	waitFor(t, 20*time.Second, "health critical: certificate expired", func() error {
		h, code := s.health()
		if code != 2 || !strings.Contains(strings.Join(h.Reasons, "\n"), "this site's certificate (serial") || !strings.Contains(strings.Join(h.Reasons, "\n"), "expired ") {
			return fmt.Errorf("exit %d %q", code, h.Reasons)
		}
		return nil
	})
	if st := s.status(); st.Trust.Certificate.State != control.ExpiryCritical || st.Trust.Certificate.LeftSeconds > 0 {
		t.Errorf("status: %+v", st.Trust.Certificate)
	}
}
