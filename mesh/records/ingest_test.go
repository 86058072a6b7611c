package records

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// foreignFlood returns a push/pull state of n records, each signed by its
// own certificate from a CA nobody pins: what a gossip-key holder without a
// certificate can send.
func foreignFlood(t *testing.T, n int, shuffle bool) ([]byte, [][]byte) {
	t.Helper()
	ca := trusttest.NewCA(t)
	recs := make([][]byte, n)
	for i := range n {
		c, k := trusttest.Issue(t, ca, fmt.Sprintf("evil%04d", i), fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&0xff))
		recs[i] = trusttest.SignedRecord(t, c, k, trusttest.RecordOptions{}).Raw
	}
	return encodeFlood(t, recs, shuffle), recs
}

func encodeFlood(t *testing.T, recs [][]byte, shuffle bool) []byte {
	t.Helper()
	recs = append([][]byte(nil), recs...)
	if shuffle {
		rand.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	}
	st, err := trust.EncodeState(trust.State{Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// newIngestFixture is a store holding n certified sites (site0000...) of
// a CA the ingest pins, for the site fra1.
func newIngestFixture(t *testing.T, n int, log *slog.Logger) (*Store, *Ingest) {
	t.Helper()
	ca := trusttest.NewCA(t)
	cas := []*x509.Certificate{ca.Cert}
	policy := func() *trust.Policy {
		return &trust.Policy{CAs: cas, LocalSite: "fra1", LocalPrefixes: trusttest.Prefixes(t, "10.1.0.0/16"), Now: time.Now(), Skew: time.Minute}
	}
	store := NewStore(filepath.Join(t.TempDir(), "records.json"), log)
	for i := range n {
		s := newTestSite(t, ca, fmt.Sprintf("site%04d", i), trusttest.CertOptions{}, fmt.Sprintf("172.16.%d.0/24", i))
		if ok, err := store.Consider(s.record(t, trusttest.RecordOptions{Seq: 1}), policy()); !ok {
			t.Fatalf("site %d refused: %v", i, err)
		}
	}
	return store, NewIngest(store, cas, policy, log)
}

// lineCounter is a slog handler target that counts lines.
type lineCounter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineCounter) lines() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "\n")
}

// TestIngestFloodIsSlicedAndRemembered: a push/pull state of 2,048 records
// from an unpinned CA is worked through in several bounded turns (the loop
// gets control back in between), every record is refused as unknown_ca,
// the same state again costs one hash, the same records in another order
// cost a hash each (no decode), and the whole flood logs a bounded number
// of lines.
func TestIngestFloodIsSlicedAndRemembered(t *testing.T) {
	const n = 2048
	logs := &lineCounter{}
	store, in := newIngestFixture(t, 2, slog.New(slog.NewTextHandler(logs, nil)))
	flood, recs := foreignFlood(t, n, false)

	run := func(state []byte) (turns int) {
		t.Helper()
		if _, _, other := in.Take(gossip.Message{Kind: gossip.MsgState, Data: state}); other {
			t.Fatal("a state was handed back")
		}
		more := false
		for turns = 0; in.Busy() || turns == 0; turns++ {
			if turns > 100000 {
				t.Fatal("ingest does not finish")
			}
			if turns > 0 && !more {
				t.Fatal("a payload is left half done without asking the loop for another turn")
			}
			more = in.Turn(0).More
		}
		return turns
	}

	start := time.Now()
	turns := run(flood)
	took := time.Since(start)
	if got := store.rejected[trust.ReasonUnknownCA]; got != n {
		t.Fatalf("unknown_ca rejections = %d, want %d", got, n)
	}
	if turns < 2 {
		t.Errorf("%d records took %v in %d turn(s); want them sliced into turns of at most %v", n, took, turns, ingestBudget)
	}
	t.Logf("first delivery: %d records in %v, %d turns", n, took, turns)

	if run(flood); in.skipped != 1 {
		t.Errorf("the same state again: skipped = %d, want 1 (one hash, no record looked at)", in.skipped)
	}
	if got := store.rejected[trust.ReasonUnknownCA]; got != n {
		t.Errorf("the same state again counted %d more rejections, want 0", got-n)
	}

	start = time.Now()
	run(encodeFlood(t, recs, true))
	if got := in.skipped; got != 1+n {
		t.Errorf("the same records reordered: skipped = %d, want %d (every record recognised by hash)", got, 1+n)
	}
	if got := store.rejected[trust.ReasonUnknownCA]; got != 2*n {
		t.Errorf("unknown_ca rejections = %d, want %d (repeats still counted)", got, 2*n)
	}
	t.Logf("reordered delivery: %v", time.Since(start))
	if l := logs.lines(); l > rejectLines {
		t.Errorf("the flood logged %d lines, want at most %d:\n%s", l, rejectLines, logs.b.String())
	}
	if len(store.records) != 2 {
		t.Errorf("store holds %d sites, want the 2 real ones", len(store.records))
	}
}

func TestRefusedCache(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	c := newRefusedCache(3, time.Minute)
	h := func(i byte) [32]byte { return [32]byte{i} }
	c.put(h(1), trust.ReasonSignature, t0)
	if r, ok := c.get(h(1), t0.Add(59*time.Second)); !ok || r != trust.ReasonSignature {
		t.Fatalf("get = %q %v, want signature true", r, ok)
	}
	if _, ok := c.get(h(1), t0.Add(90*time.Second)); !ok {
		t.Error("an entry must live at least one TTL after a rotation")
	}
	if _, ok := c.get(h(1), t0.Add(3*time.Minute)); ok {
		t.Error("an entry older than two TTLs must be gone")
	}
	for i := range byte(10) {
		c.put(h(i), trust.ReasonDecode, t0.Add(4*time.Minute))
	}
	if c.len() > 6 {
		t.Errorf("cache holds %d entries, want at most 2×3", c.len())
	}
	if _, ok := c.get(h(9), t0.Add(4*time.Minute)); !ok {
		t.Error("the newest entry must be held")
	}
	c.reset()
	if c.len() != 0 {
		t.Error("reset must forget everything")
	}
}
