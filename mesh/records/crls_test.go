package records

import (
	"crypto/x509"
	"math/big"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// twoCAs is a CA rollover's state: sites of the old and of the new CA, and
// a policy pinning both.
type twoCAs struct {
	old, next *trust.CA
	p         *trust.Policy
	a, b      testSite // a: old CA, b: new CA
}

func newTwoCAs(t *testing.T) twoCAs {
	f := twoCAs{old: trusttest.NewCA(t), next: trusttest.NewCA(t)}
	f.p = trusttest.Policy(t, f.old, "fra1", "10.1.0.0/16")
	f.p.CAs = append(f.p.CAs, f.next.Cert)
	f.a = newTestSite(t, f.old, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	f.b = newTestSite(t, f.next, "par1", trusttest.CertOptions{}, "10.3.0.0/16")
	return f
}

// list issues a revocation list of ca (number n: n-1 lists before it) and
// parses it as received.
func (f twoCAs) list(t *testing.T, ca *trust.CA, n int, serials ...*big.Int) *trust.RevocationList {
	t.Helper()
	var prev *trust.RevocationList
	var err error
	for i := 0; i < n; i++ {
		if prev, err = ca.Revoke(prev, serials, time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	l, err := trust.ParseRevocationList(prev.Raw, f.p.CAs)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Revocation is per CA: the new CA's first list is kept beside the old
// CA's third (a single list would have taken #1 for older than #3 and
// ignored it), a list revokes only certificates its CA signed, and both
// lists go out in the push/pull state and survive a restart.
func TestSiteStoreCRLPerCA(t *testing.T) {
	f := newTwoCAs(t)
	log, _ := testLogger()
	s := NewStore(filepath.Join(t.TempDir(), "records.json"), log)
	for _, st := range []testSite{f.a, f.b} {
		if !s.Offer(st.record(t, trusttest.RecordOptions{Seq: 10}), f.p) {
			t.Fatal("not accepted")
		}
	}
	oldList := f.list(t, f.old, 3, big.NewInt(42))
	if !s.setCRL(oldList) || !slices.Equal(s.Names(), []string{"ams1", "par1"}) {
		t.Fatalf("old CA's list: sites %v", s.Names())
	}
	// The new CA's list #1 names ams1's serial (serials are unique only
	// within a CA): par1 is revoked, ams1 (the old CA's) is not.
	newList := f.list(t, f.next, 1, f.b.cert.Serial, f.a.cert.Serial)
	if !s.setCRL(newList) {
		t.Fatal("the new CA's first list was taken for an older one")
	}
	if got := s.Names(); !slices.Equal(got, []string{"ams1"}) {
		t.Errorf("sites %v, want ams1 only", got)
	}
	if len(s.CRLs()) != 2 || s.Revocations().For(f.next.Cert).Number.Int64() != 1 || s.Revocations().For(f.old.Cert).Number.Int64() != 3 {
		t.Errorf("lists held: %v", s.CRLs())
	}
	if s.setCRL(f.list(t, f.old, 2)) {
		t.Error("an older list of the old CA replaced its newer one")
	}
	raw, err := s.State(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := trust.DecodeState(raw)
	if err != nil || len(st.CRLs) != 2 {
		t.Errorf("state carries %d lists (%v), want 2", len(st.CRLs), err)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	l, err := LoadStore(s.path, log, f.p.CAs)
	if err != nil || len(l.CRLs()) != 2 || l.Revocations().For(f.next.Cert) == nil || l.Revocations().For(f.old.Cert) == nil {
		t.Errorf("after a restart: %v, %v", l, err)
	}
	// Verification picks the list of the certificate's CA.
	if err := f.b.cert.Verify(f.p.CAs, s.CRLSet(f.p.CAs), time.Now(), 0); err == nil {
		t.Error("par1's revoked certificate verifies")
	}
	if err := f.a.cert.Verify(f.p.CAs, s.CRLSet(f.p.CAs), time.Now(), 0); err != nil {
		t.Errorf("ams1's certificate: %v", err)
	}
}

// After a rollover the old CA is no longer pinned: its stored list revokes
// nothing that still verifies, and a restart drops it instead of refusing
// to start.
func TestLoadSiteStoreDropsListOfUnpinnedCA(t *testing.T) {
	f := newTwoCAs(t)
	log, buf := testLogger()
	s := NewStore(filepath.Join(t.TempDir(), "records.json"), log)
	s.setCRL(f.list(t, f.old, 1, big.NewInt(7)))
	s.setCRL(f.list(t, f.next, 1, big.NewInt(8)))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	l, err := LoadStore(s.path, log, []*x509.Certificate{f.next.Cert})
	if err != nil {
		t.Fatalf("a list of a CA no longer pinned stops the load: %v", err)
	}
	if len(l.CRLs()) != 1 || l.Revocations().For(f.next.Cert) == nil {
		t.Errorf("lists after the load: %v", l.CRLs())
	}
	if countLines(buf, "no longer pinned") == 0 {
		t.Errorf("the dropped list is not logged:\n%s", buf)
	}
}
