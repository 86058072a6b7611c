package trust_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// recertify makes another self-signed certificate for ca's key (a CA
// certificate renewed for a longer validity), optionally signed by parent.
func recertify(t *testing.T, ca *trust.CA, notBefore, notAfter time.Time, parent *trust.CA) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: ca.Cert.Subject.CommonName},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	signer, signerKey := tmpl, ca.Key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, ca.Key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, trust.EncodeCertPEM(c.Raw)...)
	}
	return b
}

func TestParseCABundle(t *testing.T) {
	now := time.Now()
	old, next := trusttest.NewCA(t), trusttest.NewCA(t)
	cas, err := trust.ParseCABundle(pemOf(old.Cert, next.Cert), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 2 || !bytes.Equal(cas[0].Raw, old.Cert.Raw) || !bytes.Equal(cas[1].Raw, next.Cert.Raw) {
		t.Fatalf("bundle of two CAs parsed as %d", len(cas))
	}
	// A CA not yet valid may be pre-staged.
	future, err := trust.NewCA("future", now.Add(24*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ParseCABundle(pemOf(old.Cert, future.Cert), now); err != nil {
		t.Errorf("CA not yet valid refused: %v", err)
	}

	expired, err := trust.NewCA("gone", now.Add(-48*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	site, _ := trusttest.Issue(t, old, "fra1", "10.1.0.0/16")
	many := make([]*x509.Certificate, trust.MaxPinnedCAs+1)
	for i := range many {
		many[i] = trusttest.NewCA(t).Cert
	}
	bad := []struct {
		name string
		pem  []byte
		want string
	}{
		{"duplicate", pemOf(old.Cert, next.Cert, old.Cert), "block 3 (\"dcmesh CA test\") is a duplicate of block 1"},
		{"same key twice", pemOf(old.Cert, recertify(t, old, now.Add(-time.Hour), now.Add(time.Hour), nil)), "blocks 1 and 2"},
		{"expired", pemOf(old.Cert, expired.Cert), "block 2 (\"dcmesh CA gone\", id " + trust.CAID(expired.Cert) + ") expired"},
		{"site certificate", pemOf(old.Cert, site.X509), "block 2 (\"fra1\") is not a CA certificate"},
		{"not self-signed", pemOf(recertify(t, next, now.Add(-time.Hour), now.Add(time.Hour), old)), "is not self-signed"},
		{"too many", pemOf(many...), "at most 8"},
		{"empty", nil, "no PEM block"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := trust.ParseCABundle(tc.pem, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCAID(t *testing.T) {
	ca := trusttest.NewCA(t)
	id := trust.CAID(ca.Cert)
	if len(id) != 16 {
		t.Fatalf("CAID %q is not 16 hex digits", id)
	}
	now := time.Now()
	if again := trust.CAID(recertify(t, ca, now.Add(-time.Hour), now.Add(time.Hour), nil)); again != id {
		t.Errorf("a re-certified CA key has id %s, want %s", again, id)
	}
	if other := trust.CAID(trusttest.NewCA(t).Cert); other == id {
		t.Error("two CA keys with one id")
	}
}

// Two pinned CAs, one revocation list each: a certificate is checked
// against the list of the CA that signed it, and only that one.
func TestCRLSetPerCA(t *testing.T) {
	now := time.Now()
	a, b, stranger := trusttest.NewCA(t), trusttest.NewCA(t), trusttest.NewCA(t)
	cas := []*x509.Certificate{a.Cert, b.Cert}
	fromA, keyA := trusttest.Issue(t, a, "fra1", "10.1.0.0/16")
	fromB, _ := trusttest.Issue(t, b, "ams2", "10.2.0.0/16")
	fromB2, _ := trusttest.Issue(t, b, "lon3", "10.3.0.0/16")

	revoke := func(ca *trust.CA, prev *trust.RevocationList, serials ...*big.Int) *trust.RevocationList {
		t.Helper()
		l, err := ca.Revoke(prev, serials, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a1 := revoke(a, nil)                             // A revokes nothing yet
	b1 := revoke(b, nil, fromB.Serial, fromA.Serial) // B's list naming A's serial says nothing about it
	set := trust.NewCRLSet(cas)
	for _, l := range []*trust.RevocationList{a1, b1} {
		if kept, err := set.Add(l); err != nil || !kept {
			t.Fatalf("Add(list %v) = %v, %v", l.Number, kept, err)
		}
	}
	verify := func(c *trust.Certificate) trust.Reason { return reasonOf(t, c.Verify(cas, set, now, time.Minute)) }
	if r := verify(fromA); r != "" {
		t.Errorf("A's certificate: %q, want valid (only B's list names its serial)", r)
	}
	if r := verify(fromB); r != trust.ReasonRevoked {
		t.Errorf("B's revoked certificate: %q, want revoked", r)
	}
	if r := verify(fromB2); r != "" {
		t.Errorf("B's other certificate: %q", r)
	}

	// A newer list of A revokes A's certificate; an older one is ignored.
	a2 := revoke(a, a1, fromA.Serial)
	if kept, err := set.Add(a2); err != nil || !kept {
		t.Fatalf("newer list not kept: %v, %v", kept, err)
	}
	if kept, err := set.Add(a1); err != nil || kept {
		t.Errorf("older list kept: %v, %v", kept, err)
	}
	if kept, _ := set.Add(a2); kept {
		t.Error("the same list kept twice")
	}
	if got := set.For(a.Cert); got == nil || got.Number.Int64() != 2 {
		t.Fatalf("For(A) = %v, want list 2", got)
	}
	if r := verify(fromA); r != trust.ReasonRevoked {
		t.Errorf("A's certificate after A's list 2: %q, want revoked", r)
	}
	// The list applies to every certificate of A's key.
	if got := set.For(recertify(t, a, now.Add(-time.Hour), now.Add(time.Hour), nil)); got == nil || got.Number.Int64() != 2 {
		t.Errorf("For(A re-certified) = %v", got)
	}

	// A list no pinned CA signed is refused.
	s1 := revoke(stranger, nil, fromB2.Serial)
	if _, err := set.Add(s1); err == nil || !strings.Contains(err.Error(), "not signed by a pinned CA") {
		t.Errorf("Add(stranger's list) = %v", err)
	}
	if _, err := set.AddDER(s1.Raw); err == nil {
		t.Error("AddDER accepted a stranger's list")
	}
	if set.For(stranger.Cert) != nil || set.For(nil) != nil || (*trust.CRLSet)(nil).For(a.Cert) != nil {
		t.Error("For returned a list where there is none")
	}
	lists := set.Lists()
	if len(lists) != 2 || trust.CAID(lists[0].Issuer) > trust.CAID(lists[1].Issuer) {
		t.Errorf("Lists: %d lists, not one per CA ordered by id", len(lists))
	}

	// A Policy with CRLs applies them in CheckRecord.
	p := trusttest.Policy(t, a, "local", "10.9.0.0/16")
	p.CAs, p.CRLs = cas, set
	rec := trusttest.SignedRecord(t, fromA, keyA, trusttest.RecordOptions{})
	if r := reasonOf(t, p.CheckRecord(rec, "", 0)); r != trust.ReasonRevoked {
		t.Errorf("CheckRecord with CRLs: %q, want revoked", r)
	}
	// With the single CRL too, the newer list of the CA counts.
	p.CRLs, p.CRL = trust.NewCRLSet(cas), a2
	if r := reasonOf(t, p.CheckRecord(rec, "", 0)); r != trust.ReasonRevoked {
		t.Errorf("CheckRecord with CRL only: %q, want revoked", r)
	}
	p.CRLs, p.CRL = set, a1
	if r := reasonOf(t, p.CheckRecord(rec, "", 0)); r != trust.ReasonRevoked {
		t.Errorf("CheckRecord with an older CRL beside CRLs: %q, want revoked", r)
	}
}

// Two lists of one CA with the same number: every node keeps the same one,
// whatever order they arrive in.
func TestCRLSetSameNumberConverges(t *testing.T) {
	ca := trusttest.NewCA(t)
	now := time.Now()
	x, err := ca.Revoke(nil, []*big.Int{big.NewInt(1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	y, err := ca.Revoke(nil, []*big.Int{big.NewInt(2)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cas := []*x509.Certificate{ca.Cert}
	s1, s2 := trust.NewCRLSet(cas), trust.NewCRLSet(cas)
	s1.Add(x)
	s1.Add(y)
	s2.Add(y)
	s2.Add(x)
	if !bytes.Equal(s1.For(ca.Cert).Raw, s2.For(ca.Cert).Raw) {
		t.Error("two sets given the same lists in another order hold different lists")
	}
}

func TestCRLSetConcurrent(t *testing.T) {
	ca := trusttest.NewCA(t)
	cas := []*x509.Certificate{ca.Cert}
	c, _ := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	set := trust.NewCRLSet(cas)
	var lists []*trust.RevocationList
	var prev *trust.RevocationList
	for range 5 {
		l, err := ca.Revoke(prev, nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		lists, prev = append(lists, l), l
	}
	var wg sync.WaitGroup
	for _, l := range lists {
		wg.Go(func() { _, _ = set.Add(l) })
		wg.Go(func() { _ = c.Verify(cas, set, time.Now(), time.Minute); _ = set.Lists() })
	}
	wg.Wait()
	if got := set.For(ca.Cert).Number.Int64(); got != 5 {
		t.Errorf("after concurrent adds the set holds list %d, want 5", got)
	}
}
