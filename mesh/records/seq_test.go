package records

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/wg/wgtest"
)

func TestSeqRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seq.json")
	if seq, err := LoadSeq(path); err != nil || seq != 0 {
		t.Fatalf("missing file: %d, %v", seq, err)
	}
	for _, want := range []uint64{1, 1700000000000, math.MaxInt64, math.MaxUint64, 0} {
		if err := SaveSeq(path, want); err != nil {
			t.Fatal(err)
		}
		got, err := LoadSeq(path)
		if err != nil || got != want {
			t.Errorf("saved %d, loaded %d (%v)", want, got, err)
		}
		wgtest.AssertMode(t, path, 0o600)
	}
}

func TestLoadSeqCorrupt(t *testing.T) {
	for _, content := range []string{"", "garbage", `{"seq":`, `{"seq":-1}`, `{"seq":"12"}`, `{"seq":1.5}`, `[1]`} {
		t.Run(content, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seq.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			seq, err := LoadSeq(path)
			if err == nil {
				t.Fatalf("accepted: %d", seq)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it away") {
				t.Errorf("error does not name the file and say to move it away: %v", err)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		// A directory in place of the file: an error, not a fresh start.
		path := filepath.Join(t.TempDir(), "seq.json")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSeq(path); err == nil {
			t.Error("accepted a directory")
		}
	})
}
