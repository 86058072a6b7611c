package trust_test

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

func serials(l *trust.RevocationList) []int64 {
	var out []int64
	for _, s := range l.Serials {
		out = append(out, s.Int64())
	}
	return out
}

func TestRevokeRoundTrip(t *testing.T) {
	ca := trusttest.NewCA(t)
	cas := []*x509.Certificate{ca.Cert}
	now := time.Now().Truncate(time.Second)

	l1, err := ca.Revoke(nil, []*big.Int{big.NewInt(7), big.NewInt(3), big.NewInt(7)}, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Number.Int64() != 1 || !slices.Equal(serials(l1), []int64{3, 7}) {
		t.Errorf("first list: number %v serials %v", l1.Number, serials(l1))
	}
	if !l1.X509.NextUpdate.Equal(now.Add(24 * time.Hour)) {
		t.Errorf("NextUpdate %v", l1.X509.NextUpdate)
	}
	l2, err := ca.Revoke(l1, []*big.Int{big.NewInt(5), big.NewInt(3)}, now.Add(time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Number.Int64() != 2 || !slices.Equal(serials(l2), []int64{3, 5, 7}) {
		t.Errorf("second list: number %v serials %v", l2.Number, serials(l2))
	}
	// Earlier revocations keep their time.
	for _, e := range l2.X509.RevokedCertificateEntries {
		want := now
		if e.SerialNumber.Int64() == 5 {
			want = now.Add(time.Hour)
		}
		if !e.RevocationTime.Equal(want) {
			t.Errorf("serial %v revoked at %v, want %v", e.SerialNumber, e.RevocationTime, want)
		}
	}
	if !l2.NewerThan(l1) || l1.NewerThan(l2) || !l1.NewerThan(nil) {
		t.Error("NewerThan does not follow the CRL number")
	}
	for _, s := range []int64{3, 5, 7} {
		if !l2.Revoked(big.NewInt(s)) {
			t.Errorf("serial %d not revoked", s)
		}
	}
	if l2.Revoked(big.NewInt(4)) || (*trust.RevocationList)(nil).Revoked(big.NewInt(3)) {
		t.Error("unexpected revocation")
	}
	empty, err := ca.Revoke(l2, nil, now, time.Hour)
	if err != nil || empty.Number.Int64() != 3 || len(empty.Serials) != 3 {
		t.Errorf("re-issue without new serials: %v, %v", empty, err)
	}

	// DER and PEM round trips.
	der, err := trust.ParseCRLPEM(trust.EncodeCRLPEM(l2.Raw))
	if err != nil {
		t.Fatal(err)
	}
	again, err := trust.ParseRevocationList(der, cas)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Raw, l2.Raw) || again.Number.Cmp(l2.Number) != 0 || !slices.Equal(serials(again), serials(l2)) {
		t.Error("round trip changed the list")
	}
	if _, err := trust.ParseCRLPEM(trust.EncodeCertPEM(ca.Cert.Raw)); err == nil {
		t.Error("ParseCRLPEM accepted a certificate block")
	}
}

func TestRevocationListRefused(t *testing.T) {
	ca, other := trusttest.NewCA(t), trusttest.NewCA(t)
	now := time.Now()
	l, err := other.Revoke(nil, []*big.Int{big.NewInt(1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ParseRevocationList(l.Raw, []*x509.Certificate{ca.Cert}); err == nil {
		t.Error("list signed by a foreign CA accepted")
	}
	if _, err := trust.ParseRevocationList(l.Raw, []*x509.Certificate{ca.Cert, other.Cert}); err != nil {
		t.Errorf("list signed by the second pinned CA refused: %v", err)
	}
	if _, err := trust.ParseRevocationList(append(bytes.Clone(l.Raw), 0), []*x509.Certificate{other.Cert}); err == nil {
		t.Error("trailing data accepted")
	}
	if _, err := trust.ParseRevocationList(l.Raw[:len(l.Raw)-1], []*x509.Certificate{other.Cert}); err == nil {
		t.Error("truncated list accepted")
	}
	if _, err := trust.ParseRevocationList(make([]byte, trust.MaxCRLSize+1), []*x509.Certificate{other.Cert}); err == nil {
		t.Error("oversized list accepted")
	}
	tampered := bytes.Clone(l.Raw)
	tampered[len(tampered)-70] ^= 1 // inside the TBS, before the signature
	if _, err := trust.ParseRevocationList(tampered, []*x509.Certificate{other.Cert}); err == nil {
		t.Error("tampered list accepted")
	}
	// Revoke only extends lists of its own CA.
	if _, err := ca.Revoke(l, []*big.Int{big.NewInt(2)}, now, time.Hour); err == nil {
		t.Error("Revoke extended a foreign CA's list")
	}
	for _, bad := range [][]*big.Int{{big.NewInt(0)}, {big.NewInt(-1)}, {nil}} {
		if _, err := ca.Revoke(nil, bad, now, time.Hour); err == nil {
			t.Errorf("Revoke accepted serial %v", bad[0])
		}
	}
	if _, err := ca.Revoke(nil, nil, now, 0); err == nil {
		t.Error("Revoke accepted zero validity")
	}
}
