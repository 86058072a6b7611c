package trust_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func pfxs(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, pfx(s))
	}
	return ps
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// reasonOf returns the Reason of a *RejectError, "" for nil, and fails the
// test for any other error.
func reasonOf(t *testing.T, err error) trust.Reason {
	t.Helper()
	if err == nil {
		return ""
	}
	var re *trust.RejectError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RejectError", err, err)
	}
	return re.Reason
}

// fixedCA returns a CA whose key and certificate are the same on every run,
// so fuzz corpora and seeds that depend on signatures stay valid.
func fixedCA(tb testing.TB, seed byte) *trust.CA {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(make32(seed))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(int64(seed) + 1),
		Subject:               pkix.Name{CommonName: "dcmesh CA fixed"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          []byte{seed},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &trust.CA{Cert: c, Key: key}
}

func make32(seed byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

// rawLeaf signs an arbitrary leaf template with ca, bypassing Issue's
// checks, to test what ParseCertificate refuses.
func rawLeaf(t *testing.T, ca *trust.CA, mod func(*x509.Certificate), pub any) []byte {
	t.Helper()
	if pub == nil {
		p, _, _ := ed25519.GenerateKey(rand.Reader)
		pub = p
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "b"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs: []*url.URL{
			{Scheme: "dcmesh", Opaque: "site=b"},
			{Scheme: "dcmesh", Opaque: "prefix=10.1.0.0/16"},
		},
		IPAddresses: []net.IP{net.ParseIP("100.64.0.2").To4()},
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rawLeafURIs returns a certificate with n tiny URI SANs.
func rawLeafURIs(t *testing.T, ca *trust.CA, n int) []byte {
	return rawLeaf(t, ca, func(c *x509.Certificate) {
		for range n {
			c.URIs = append(c.URIs, &url.URL{Scheme: "a", Opaque: "b"})
		}
	}, nil)
}
