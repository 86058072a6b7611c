package mesh

import (
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/dcmesh/dcmesh/mesh/config"
	"golang.org/x/sys/unix"
)

// stateDisk watches whether the state directory can still be written. The
// agent keeps its record's sequence number, the records it learnt (replay
// protection) and its keys there; a site that cannot persist its sequence
// number must not publish (a crash could reuse the number), so it stops
// refreshing its record, and peers drop it after trust.record_expiry. That
// is a slow-motion outage: it is reported as critical the moment it starts,
// the data plane and the control API go on serving, and the failed writes
// are retried at every resync until they succeed.
type stateDisk struct {
	dir config.StateDir
	// failed holds the last error of each state file whose last write
	// failed, by file name
	failed map[string]error
	// low is set when the filesystem has less free space (or inodes) than
	// the state files need to be rewritten
	low string
	// retryPublish and retrySave say which writes wait for a retry
	retryPublish, retrySave bool
	// statfs is unix.Statfs, replaceable in tests
	statfs func(path string, st *unix.Statfs_t) error
}

func newStateDisk(dir config.StateDir) *stateDisk {
	return &stateDisk{dir: dir, failed: map[string]error{}, statfs: unix.Statfs}
}

// wrote records the outcome of writing the state file name and returns err.
func (d *stateDisk) wrote(name string, err error) error {
	if err != nil {
		d.failed[name] = err
	} else {
		delete(d.failed, name)
	}
	return err
}

// minFreeBytes is the free space below which the state directory counts as
// full: a rewrite of the largest state file needs its size again (temp file
// then rename), plus room for the small ones.
const minFreeBytes = 1 << 20

// check reads the free space and inodes of the state filesystem.
func (d *stateDisk) check() {
	var st unix.Statfs_t
	if err := d.statfs(string(d.dir), &st); err != nil {
		d.low = fmt.Sprintf("cannot read the free space of %s: %v", d.dir, err)
		return
	}
	need := int64(minFreeBytes)
	if fi, err := os.Stat(d.dir.Records()); err == nil {
		need += 2 * fi.Size()
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	switch {
	case free < need:
		d.low = fmt.Sprintf("state directory %s has %d bytes free, less than the %d its state files need to be rewritten", d.dir, free, need)
	case st.Files > 0 && st.Ffree == 0:
		d.low = fmt.Sprintf("state directory %s has no free inodes", d.dir)
	default:
		d.low = ""
	}
}

// problems lists what is wrong, for status and health; empty when fine.
func (d *stateDisk) problems() []string {
	out := []string{}
	names := make([]string, 0, len(d.failed))
	for n := range d.failed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, fmt.Sprintf("cannot write %s: %v", d.dir.File(n), d.failed[n]))
	}
	if d.low != "" {
		out = append(out, d.low)
	}
	return slices.Clip(out)
}
