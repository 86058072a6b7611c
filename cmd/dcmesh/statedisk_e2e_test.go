package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// TestFullStateDiskIsCriticalAndRecovers: site2 keeps its state on a small
// tmpfs. Filled up, it cannot persist its record's sequence number, so it
// must not publish: health turns critical at once and names the cause,
// status still answers and traffic still flows. With the space back, the
// agent recovers by itself: health healthy again and site1 holds a newer
// record of site2.
func TestFullStateDiskIsCriticalAndRecovers(t *testing.T) {
	m := newMesh(t, 2)
	requireTool(t, "mount", "umount", "dd")
	caDir := m.newCA("ca")
	s1, s2 := m.sites[0], m.sites[1]
	dir := filepath.Join(m.dir, s2.name+"-state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	s1.enroll(caDir, nil)
	s2.enroll(caDir, []string{s1.seed()})
	if s2.stateDir != dir {
		t.Fatalf("site2's state dir %s, want the tmpfs %s", s2.stateDir, dir)
	}
	// Refresh the record every 2 s, so the test sees publishes fail and
	// resume without waiting an hour.
	raw, err := os.ReadFile(s2.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "trust:\n", "trust:\n  record_refresh: 2s\n", 1)
	if err := os.WriteFile(s2.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	m.startAll()
	m.waitFullMesh(s1, s2)
	if h, code := s2.health(); code != 0 {
		t.Fatalf("before: health %d %q, want healthy", code, h.Reasons)
	}

	filler := filepath.Join(dir, "filler")
	_ = exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k").Run() // ends with ENOSPC
	waitFor(t, 15*time.Second, "site2's health critical naming the state directory", func() error {
		h, code := s2.health()
		if code != 2 || !strings.Contains(strings.Join(h.Reasons, "\n"), "state directory") {
			return fmt.Errorf("health %d %q", code, h.Reasons)
		}
		return nil
	})
	waitFor(t, 15*time.Second, "a failed write of seq.json reported", func() error {
		if p := strings.Join(s2.status().StateDir.Problems, "\n"); !strings.Contains(p, "seq.json") {
			return fmt.Errorf("problems: %q", p)
		}
		return nil
	})
	if err := s1.ping(s2, 3); err != nil {
		t.Errorf("traffic stopped while the state disk is full: %v", err)
	}
	seqFull := readSeq(t, dir)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "site2 healthy again", func() error {
		if h, code := s2.health(); code != 0 {
			return fmt.Errorf("health %d %q", code, h.Reasons)
		}
		return nil
	})
	seqBack := readSeq(t, dir)
	if seqBack <= seqFull {
		t.Fatalf("seq.json %d after recovery, %d while full: nothing was published again", seqBack, seqFull)
	}
	waitFor(t, 15*time.Second, "site1 holds site2's record published after the recovery", func() error {
		recs, err := s1.client().Records(context.Background())
		if err != nil {
			return err
		}
		for _, r := range recs.Records {
			if sr, err := trust.DecodeRecord(r); err == nil && sr.Site == s2.name {
				if sr.Seq < seqBack {
					return fmt.Errorf("site1 holds seq %d, want ≥ %d", sr.Seq, seqBack)
				}
				return nil
			}
		}
		return fmt.Errorf("site1 holds no record of site2")
	})
}

func readSeq(t *testing.T, dir string) uint64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "seq.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("seq.json: %v", err)
	}
	return s.Seq
}
