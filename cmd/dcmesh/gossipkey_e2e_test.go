package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

var gossipKeyLine = regexp.MustCompile(`gossip key ([0-9a-f]{16}) \(epoch (\d+)\) sealed to 3 sites`)

// gossipKeyIDs is s's gossip key in use and the ids installed.
func (s *site) gossipKeyIDs() (string, []string) {
	k := s.status().Gossip.Key
	if k == nil {
		s.m.t.Fatalf("%s status has no gossip key", s.name)
	}
	return k.InUse, k.Installed
}

// waitGossipKey waits until s uses id and holds no other key.
func (s *site) waitGossipKey(t *testing.T, id string) {
	t.Helper()
	waitFor(t, 20*time.Second, s.name+" on gossip key "+id+" alone", func() error {
		if use, held := s.gossipKeyIDs(); use != id || !slices.Equal(held, []string{id}) {
			return fmt.Errorf("uses %s, holds %v", use, held)
		}
		return nil
	})
}

// waitAlive waits until s sees every other site alive in gossip.
func (s *site) waitAlive(t *testing.T, others ...*site) {
	t.Helper()
	waitFor(t, 20*time.Second, s.name+" sees every site alive", func() error {
		st := s.memberStates()
		for _, o := range others {
			if st[o.name] != "alive" {
				return fmt.Errorf("%s is %q", o.name, st[o.name])
			}
		}
		return nil
	})
}

// A gossip-key rotation with one of three sites down: the two live sites
// switch to the new key and remove the old one without a moment of
// partition (neither counts a single datagram or stream it cannot
// decrypt) and without losing a probe between them; the site that was
// down comes back holding only the old key, cannot rejoin, and does once
// the same bundle is installed on it (the documented way); at the end every
// site holds only the new key, also after a restart.
//
// Probes between the two live sites run throughout at 100/s; the test
// takes about 20 s (the rotation waits for gossip to find the stopped site
// dead: ~5 s with the LAN profile, then the 3 s grace).
func TestGossipKeyRotationWithASiteDown(t *testing.T) {
	begin := time.Now()
	m, caDir := newGossipMesh(t, 3)
	m.startAll()
	m.waitFullMesh(m.sites...)
	a, b, c := m.sites[0], m.sites[1], m.sites[2]
	for _, s := range m.sites {
		s.waitAlive(t, m.sites...)
	}
	oldID, _ := a.gossipKeyIDs()
	probes := startMeshProbes(t, m.sites, 9500, 100)
	if err := c.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	malformed := func(s *site) uint64 { return s.status().Untrusted.GossipMalformed }
	malA, malB := malformed(a), malformed(b)

	bundle := filepath.Join(m.dir, "gossip-key.bundle")
	out := m.cli("ca", "gossip-key", "rotate", "--dir", caDir, "--out", bundle)
	mm := gossipKeyLine.FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("rotate printed no key id for 3 sites:\n%s", out)
	}
	newID := mm[1]
	if st, err := os.Stat(bundle); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bundle: %v, mode %v, want 0600", err, st.Mode().Perm())
	}
	rotStart := time.Now()
	out = m.cli("gossip-key", "install", "--file", bundle, "--wait", "--timeout", "30s", "--config", a.cfgPath)
	t.Logf("install --wait on %s took %s: %s", a.name, time.Since(rotStart).Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "in use by every live site ("+a.name+", "+b.name+")") {
		t.Fatalf("install --wait did not report both live sites on the new key: %s", out)
	}
	a.waitGossipKey(t, newID)
	b.waitGossipKey(t, newID)
	if ma, mb := malformed(a), malformed(b); ma != malA || mb != malB {
		t.Errorf("gossip undecryptable during the rotation (a partition): %s %d → %d, %s %d → %d", a.name, malA, ma, b.name, malB, mb)
	}

	// The site that was down holds only the old key, which nobody accepts.
	c.start()
	if use, held := c.gossipKeyIDs(); use != oldID || len(held) != 1 {
		t.Fatalf("%s after the rotation: uses %s, holds %v; want the old key %s alone", c.name, use, held, oldID)
	}
	cStart := time.Now()
	out = m.cli("gossip-key", "install", "--file", bundle, "--wait", "--timeout", "30s", "--config", c.cfgPath)
	t.Logf("install --wait on %s took %s: %s", c.name, time.Since(cStart).Round(time.Millisecond), strings.TrimSpace(out))
	c.waitGossipKey(t, newID)
	for _, s := range m.sites {
		s.waitAlive(t, m.sites...)
	}
	probes.waitTraffic(t, 30, 20*time.Second)

	// A restart keeps the new key (gossip-key.json, sealed). The site
	// restarted is the one that was down: an embedded WireGuard device
	// stops with its agent, and the live pair's probes must not see that.
	if err := c.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.start()
	for _, s := range m.sites {
		s.waitAlive(t, m.sites...)
	}
	reports := probes.stop(t)
	for _, s := range m.sites {
		use, held := s.gossipKeyIDs()
		if use != newID || !slices.Equal(held, []string{newID}) {
			t.Errorf("%s at the end: uses %s, holds %v; want %s alone", s.name, use, held, newID)
		}
		st, err := os.Stat(filepath.Join(s.stateDir, "gossip-key.json"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s gossip-key.json: %v", s.name, err)
		}
	}
	if table, want := m.cli("status", "--config", c.cfgPath), fmt.Sprintf("gossip key: %s in use, installed %s, epoch %s, stable", newID, newID, mm[2]); !strings.Contains(table, want) {
		t.Errorf("status of %s lacks %q:\n%s", c.name, want, table)
	}
	for _, pair := range [][2]*site{{a, b}, {b, a}} {
		src := reports[pair[1].name].From[pair[0].name]
		t.Logf("%s→%s: %d received, %d lost, longest gap %.1f ms %v", pair[0].name, pair[1].name, src.Received, src.Lost, src.LongestGap, src.Silences)
		if src.Lost != 0 || src.Received < 500 {
			t.Errorf("%s→%s: %d lost of %d, want none", pair[0].name, pair[1].name, src.Lost, src.Received)
		}
	}
	checkGossipKeyNeverUnsealed(t, m, caDir, bundle)
	t.Logf("test took %s", time.Since(begin).Round(time.Millisecond))
}

// checkGossipKeyNeverUnsealed opens the bundle as site1 would and looks for
// the new key, in every form keyForms knows and raw, in every file of the
// CA and state directories, the agents' logs and the CLI's output.
func checkGossipKeyNeverUnsealed(t *testing.T, m *testMesh, caDir, bundle string) {
	t.Helper()
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	cas, err := trust.ParseCAPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.ParseGossipKeyBundle(raw, cas, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	idPEM, _ := os.ReadFile(filepath.Join(m.sites[0].stateDir, "identity.key"))
	id, err := trust.ParseKeyPEM(idPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := trust.OpenGossipKey(b, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	forms := append(keyForms(key), key)
	var places []string
	var texts [][]byte
	for _, dir := range append([]string{caDir}, m.sites[0].stateDir, m.sites[1].stateDir, m.sites[2].stateDir) {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if data, err := os.ReadFile(p); err == nil {
					places, texts = append(places, p), append(texts, data)
				}
			}
			return nil
		})
	}
	for _, s := range m.sites {
		places, texts = append(places, s.name+" agent log"), append(texts, []byte(s.agent.Output()))
	}
	places, texts = append(places, "CLI output"), append(texts, []byte(strings.Join(m.transcript, "\n")))
	found := 0
	for i, text := range texts {
		for _, f := range forms {
			if bytes.Contains(text, f) {
				t.Errorf("the new gossip key appears unsealed in %s", places[i])
				found++
			}
		}
	}
	if found == 0 {
		t.Logf("the new gossip key %s is in none of %d files and outputs", b.KeyID, len(places))
	}
}
