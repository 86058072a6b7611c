package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// With rotation.psk, each rotation agrees a fresh pre-shared key per pair
// (ML-KEM) that both ends switch to in the same handshake: after rotating two
// sites, every pair holds the same non-empty pre-shared key on both ends, the
// keys differ between pairs and from the previous rotation's, and traffic
// flows.
func TestRotationWithPresharedKeys(t *testing.T) {
	m, _ := newGossipMesh(t, 3)
	for _, s := range m.sites {
		s.appendConfig("  psk: true\n") // under the rotation: section enroll wrote last
	}
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]

	// pskOf returns what o's device holds for s's key; it never prints it.
	pskOf := func(o, s *site) string { return o.wgShow("preshared-keys")[s.pub] }
	checkPair := func(a, b *site) string {
		t.Helper()
		var got string
		waitFor(t, 10*time.Second, fmt.Sprintf("%s and %s agree on a pre-shared key", a.name, b.name), func() error {
			x, y := pskOf(a, b), pskOf(b, a)
			if x == "" || x == "(none)" || y == "" || y == "(none)" {
				return fmt.Errorf("no pre-shared key on one end (%v, %v)", x != "(none)" && x != "", y != "(none)" && y != "")
			}
			if x != y {
				return fmt.Errorf("the two ends hold different pre-shared keys")
			}
			got = x
			return nil
		})
		return got
	}
	if k := pskOf(s1, s2); k != "(none)" {
		t.Fatalf("a pre-shared key before any rotation")
	}
	if out := m.cli("rotate", "--wait", "--config", s1.cfgPath); !strings.Contains(out, "complete") {
		t.Fatalf("rotation of site1: %s", out)
	}
	s1.pub = m.publicKeyOf(s1.keyPath)
	k12, k13 := checkPair(s1, s2), checkPair(s1, s3)
	if k12 == k13 {
		t.Error("two pairs share a pre-shared key")
	}
	if k := pskOf(s2, s3); k != "(none)" {
		t.Error("site2-site3 got a pre-shared key from a rotation that is not theirs")
	}
	if out := m.cli("rotate", "--wait", "--config", s2.cfgPath); !strings.Contains(out, "complete") {
		t.Fatalf("rotation of site2: %s", out)
	}
	s2.pub = m.publicKeyOf(s2.keyPath)
	k12b, k23 := checkPair(s1, s2), checkPair(s2, s3)
	if k12b == k12 {
		t.Error("site2's rotation did not change the site1-site2 pre-shared key")
	}
	if checkPair(s1, s3) != k13 {
		t.Error("site2's rotation changed the site1-site3 pre-shared key")
	}
	_ = k23
	for _, a := range m.sites {
		for _, b := range m.sites {
			if a != b {
				if err := a.ping(b, 1); err != nil {
					t.Error(err)
				}
			}
		}
	}
	// Restart a userspace site: it loses its device, and must restore the
	// pre-shared keys from disk to talk to its peers again.
	_ = s3.agent.Stop(10 * time.Second)
	s3.start()
	waitFor(t, 20*time.Second, "traffic after site3's restart", func() error { return s3.ping(s1, 1) })
	if checkPair(s1, s3) != k13 {
		t.Error("site3 came back with another pre-shared key")
	}
}
