package mesh

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"golang.org/x/sys/unix"
)

func TestStateDiskProblems(t *testing.T) {
	dir := t.TempDir()
	d := newStateDisk(config.StateDir(dir))
	free, inodes := uint64(100<<20), uint64(1000)
	d.statfs = func(_ string, st *unix.Statfs_t) error {
		st.Bsize, st.Bavail, st.Files, st.Ffree = 1, free, 5000, inodes
		return nil
	}
	d.check()
	if p := d.problems(); len(p) != 0 {
		t.Fatalf("a healthy directory has problems: %q", p)
	}
	enospc := &os.PathError{Op: "write", Path: filepath.Join(dir, ".seq.json.tmp"), Err: syscall.ENOSPC}
	if err := d.wrote(config.SeqFile, enospc); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("wrote returns %v, want the error it was given", err)
	}
	if p := d.problems(); len(p) != 1 || !strings.Contains(p[0], "seq.json") || !strings.Contains(p[0], "no space left") {
		t.Errorf("after a failed write: %q, want one problem naming seq.json and the cause", p)
	}
	d.wrote(config.SeqFile, nil)
	if p := d.problems(); len(p) != 0 {
		t.Errorf("after the write succeeded again: %q, want none", p)
	}

	// records.json of 3 MiB needs 1 MiB + 6 MiB free.
	if err := os.WriteFile(filepath.Join(dir, config.RecordsFile), make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	free = 6 << 20
	d.check()
	if p := d.problems(); len(p) != 1 || !strings.Contains(p[0], "bytes free") {
		t.Errorf("6 MiB free for a 3 MiB records file: %q, want a low-space problem", p)
	}
	free, inodes = 100<<20, 0
	d.check()
	if p := d.problems(); len(p) != 1 || !strings.Contains(p[0], "inodes") {
		t.Errorf("no free inodes: %q, want that problem", p)
	}
	inodes = 10
	d.check()
	if p := d.problems(); len(p) != 0 {
		t.Errorf("space and inodes back: %q, want none", p)
	}
}
