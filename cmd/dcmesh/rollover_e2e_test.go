package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// issuerOf is the id status shows for the CA that signed site's certificate,
// as s sees it (its own certificate when site is s).
func (s *site) issuerOf(site string) string {
	st := s.status()
	if site == s.name {
		return st.Trust.Certificate.IssuerID
	}
	for _, p := range st.Trust.Peers {
		if p.Subject == site {
			return p.IssuerID
		}
	}
	return ""
}

// pinned is the ids of the CAs s pins.
func (s *site) pinned() string {
	var ids []string
	for _, c := range s.status().Trust.CAs {
		ids = append(ids, c.IssuerID)
	}
	return strings.Join(ids, ",")
}

// A full CA rollover of three sites with probes at 100/s between all of
// them: a bundle of the old and the new CA installed on every site, each
// site re-issued from the new CA in turn (a site still on the old CA works
// with the others meanwhile, and removing the old CA is refused while one
// is), then the old CA removed everywhere. No probe lost at any step; at the
// end every site pins only the new CA and sees every certificate signed by
// it. Revocation keeps working across it: the new CA's first list is taken
// beside the old CA's, and a site storing the old CA's list restarts. About
// 10 s.
func TestCARollover(t *testing.T) {
	m, oldCA := newGossipMesh(t, 3)
	m.startAll()
	m.waitFullMesh(m.sites...)
	newCA := m.newCA("ca-next")
	// The new CA hands out the cluster's gossip key in its bundles.
	raw, err := os.ReadFile(filepath.Join(oldCA, "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(newCA, "gossip.key"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	oldPEM, _ := os.ReadFile(filepath.Join(oldCA, "ca.crt"))
	newPEM, _ := os.ReadFile(filepath.Join(newCA, "ca.crt"))
	both := filepath.Join(m.dir, "ca-both.crt")
	if err := os.WriteFile(both, append(append([]byte{}, oldPEM...), newPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	oldID := m.sites[0].issuerOf(m.sites[0].name)
	// The old CA has revoked something before: its list #1 is held.
	s1 := m.sites[0]
	m.cli("ca", "issue", "--dir", oldCA, "--site", "site9", "--prefix", "10.9.0.0/24", "--overlay", "10.255.0.9", "--out", filepath.Join(m.dir, "site9"))
	m.cli("ca", "revoke", "--dir", oldCA, "--site", "site9", "--out", filepath.Join(m.dir, "crl-old.pem"))
	m.cli("revoke", "--in", filepath.Join(m.dir, "crl-old.pem"), "--config", s1.cfgPath)
	probes := startMeshProbes(t, m.sites, 9520, 100)
	start := time.Now()

	// 1. Pin both CAs on every site.
	for _, s := range m.sites {
		if out, ok := s.renewOut("", "--ca", both); !ok || !strings.Contains(out, "pinned CAs: ") {
			t.Fatalf("%s: install both CAs: %s", s.name, out)
		}
	}
	newID := strings.TrimPrefix(m.sites[0].pinned(), oldID+",")
	if newID == "" || newID == oldID {
		t.Fatalf("pinned after step 1: %q", m.sites[0].pinned())
	}
	// 2. Re-issue each site from the new CA.
	for i, s := range m.sites {
		out, ok := s.renewOut(s.issueFor(newCA, s.name+"-next"), "--ca", both)
		if !ok {
			t.Fatalf("%s: renew from the new CA: %s", s.name, out)
		}
		waitFor(t, 20*time.Second, s.name+"'s new certificate everywhere", func() error {
			for _, o := range m.sites {
				if got := o.issuerOf(s.name); got != newID {
					return fmt.Errorf("%s sees %s's certificate from CA %q, want %s", o.name, s.name, got, newID)
				}
			}
			return nil
		})
		probes.waitTraffic(t, 30, 20*time.Second) // old-CA and new-CA sites talk
		if i == 1 {
			// site3 is still on the old CA: removing it is refused.
			out, ok := m.sites[0].renewOut("", "--ca", filepath.Join(newCA, "ca.crt"))
			if ok || !strings.Contains(out, "would no longer verify the certificates of [site3]") {
				t.Errorf("removing the old CA while site3 uses it: ok=%v\n%s", ok, out)
			}
		}
	}
	// 3. Remove the old CA everywhere.
	for _, s := range m.sites {
		if out, ok := s.renewOut("", "--ca", filepath.Join(newCA, "ca.crt")); !ok {
			t.Fatalf("%s: remove the old CA: %s", s.name, out)
		}
	}
	probes.waitTraffic(t, 50, 20*time.Second)
	t.Logf("rollover of %d sites took %s", len(m.sites), time.Since(start).Round(time.Millisecond))
	lost := probes.stopAndCountLost(t)
	if lost != 0 {
		t.Errorf("%d probes lost during the rollover, want none", lost)
	}
	for _, s := range m.sites {
		if got := s.pinned(); got != newID {
			t.Errorf("%s pins %q, want only the new CA %s", s.name, got, newID)
		}
		for _, o := range m.sites {
			if got := s.issuerOf(o.name); got != newID {
				t.Errorf("%s sees %s's certificate from CA %q, want %s", s.name, o.name, got, newID)
			}
		}
		if h, code := s.health(); code != 0 {
			t.Errorf("%s health %d %q", s.name, code, h.Reasons)
		}
	}
	// The new CA's first revocation list is not mistaken for an older one
	// than the old CA's #1: revoking site3 works after the rollover.
	m.cli("ca", "revoke", "--dir", newCA, "--site", "site3", "--out", filepath.Join(m.dir, "crl-new.pem"))
	m.cli("revoke", "--in", filepath.Join(m.dir, "crl-new.pem"), "--config", s1.cfgPath)
	waitFor(t, 20*time.Second, "site1 and site2 drop the revoked site3", func() error {
		for _, s := range m.sites[:2] {
			if got := s.peerSerial("site3"); got != "" {
				return fmt.Errorf("%s still holds site3 (serial %s)", s.name, got)
			}
		}
		return nil
	})
	// site1 still stores the old CA's list, whose CA it no longer pins: it
	// restarts all the same.
	if err := s1.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	s1.start()
	if got := s1.pinned(); got != newID {
		t.Errorf("after a restart site1 pins %q", got)
	}
}
