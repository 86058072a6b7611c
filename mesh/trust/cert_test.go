package trust_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

func TestNewCA(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca, err := trust.NewCA("prod", now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if c.Subject.CommonName != "dcmesh CA prod" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("constraints: IsCA=%v valid=%v maxPathLenZero=%v maxPathLen=%d", c.IsCA, c.BasicConstraintsValid, c.MaxPathLenZero, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage = %v", c.KeyUsage)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v not a positive 128-bit number", c.SerialNumber)
	}
	if c.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("signature algorithm %v", c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	for _, bad := range []string{"", strings.Repeat("x", 60), "tab\there"} {
		if _, err := trust.NewCA(bad, now, now.Add(time.Hour)); err == nil {
			t.Errorf("NewCA(%q) succeeded", bad)
		}
	}
	if _, err := trust.NewCA("prod", now, now); err == nil {
		t.Error("NewCA with empty validity succeeded")
	}
}

func TestIssueRoundTrip(t *testing.T) {
	ca := trusttest.NewCA(t)
	pub, _, _ := trust.GenerateIdentity()
	nb := time.Now().Add(-time.Minute).Truncate(time.Second)
	req := trust.IssueRequest{
		Site:         "fra1",
		IdentityKey:  pub,
		Prefixes:     pfxs("10.1.0.0/16", "fd00:1::/48"),
		Overlay:      netip.MustParseAddr("100.64.0.1"),
		Underlay:     pfxs("198.51.100.0/24", "2001:db8::/32"),
		AllowDefault: true,
		NotBefore:    nb,
		NotAfter:     nb.Add(24 * time.Hour),
	}
	c, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != req.Site || !c.IdentityKey.Equal(pub) || !reflect.DeepEqual(c.Prefixes, req.Prefixes) ||
		c.Overlay != req.Overlay || !reflect.DeepEqual(c.Underlay, req.Underlay) || !c.AllowDefault ||
		!c.NotBefore.Equal(nb) || !c.NotAfter.Equal(req.NotAfter) {
		t.Errorf("issued certificate does not match the request: %+v", c)
	}
	if c.Serial.Sign() <= 0 || c.Serial.BitLen() > 128 {
		t.Errorf("serial %v", c.Serial)
	}
	x := c.X509
	if x.Subject.CommonName != "fra1" || x.IsCA || x.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("CN %q IsCA %v KeyUsage %v", x.Subject.CommonName, x.IsCA, x.KeyUsage)
	}
	var uris []string
	for _, u := range x.URIs {
		uris = append(uris, u.String())
	}
	want := []string{"dcmesh:site=fra1", "dcmesh:prefix=10.1.0.0/16", "dcmesh:prefix=fd00:1::/48",
		"dcmesh:underlay=198.51.100.0/24", "dcmesh:underlay=2001:db8::/32", "dcmesh:allow-default"}
	if !reflect.DeepEqual(uris, want) {
		t.Errorf("URIs = %q, want %q", uris, want)
	}
	if len(x.IPAddresses) != 1 || !x.IPAddresses[0].Equal(net.ParseIP("100.64.0.1")) {
		t.Errorf("IP SANs = %v", x.IPAddresses)
	}
	if err := x.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}

	// DER and PEM round trips give the same certificate.
	again, err := trust.ParseCertificate(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("ParseCertificate(Raw) differs:\n%+v\n%+v", again, c)
	}
	fromPEM, err := trust.ParseCertPEM(trust.EncodeCertPEM(c.Raw))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromPEM.Raw, c.Raw) {
		t.Error("PEM round trip changed the certificate")
	}
	t.Logf("certificate with 2 prefixes, 2 underlay ranges: %d bytes DER", len(c.Raw))
}

// TestOpenSSLReadsCertificate is the "readable with openssl x509 -text"
// promise of the package documentation.
func TestOpenSSLReadsCertificate(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	ca := trusttest.NewCA(t)
	c, _ := trusttest.IssueWith(t, ca, "ams2", trusttest.CertOptions{Overlay: netip.MustParseAddr("fd00:dc::7")},
		"10.2.0.0/16", "fd00:2::/48")
	path := filepath.Join(t.TempDir(), "site.pem")
	if err := os.WriteFile(path, trust.EncodeCertPEM(c.Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "x509", "-noout", "-text", "-in", path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"CN=ams2", "dcmesh:site=ams2", "dcmesh:prefix=10.2.0.0/16", "dcmesh:prefix=fd00:2::/48",
		"IP Address:FD00:DC:0:0:0:0:0:7", "ED25519"} {
		if !strings.Contains(text, want) && !strings.Contains(text, strings.ReplaceAll(want, "CN=", "CN = ")) {
			t.Errorf("openssl output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "dcmesh:gateway") {
		t.Errorf("gateway 0's certificate names a gateway:\n%s", text)
	}

	// Gateway 2 of the same site: its index and its own overlay address.
	g, _ := trusttest.IssueWith(t, ca, "ams2", trusttest.CertOptions{Gateway: 2, Overlay: netip.MustParseAddr("fd00:dc::8")},
		"10.2.0.0/16", "fd00:2::/48")
	if err := os.WriteFile(path, trust.EncodeCertPEM(g.Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(openssl, "x509", "-noout", "-text", "-in", path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	text = string(out)
	for _, want := range []string{"URI:dcmesh:site=ams2, URI:dcmesh:gateway=2, URI:dcmesh:prefix=10.2.0.0/16", "IP Address:FD00:DC:0:0:0:0:0:8"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl output lacks %q:\n%s", want, text)
		}
	}
}

// TestIssueGateway: gateways 1 to 3 carry "dcmesh:gateway=N" right after the
// site; gateway 0 carries nothing (TestIssueRoundTrip has its exact URIs).
func TestIssueGateway(t *testing.T) {
	ca := trusttest.NewCA(t)
	pub, _, _ := trust.GenerateIdentity()
	nb := time.Now().Add(-time.Minute).Truncate(time.Second)
	req := trust.IssueRequest{
		Site: "fra1", IdentityKey: pub, Prefixes: pfxs("10.1.0.0/16"),
		Overlay: netip.MustParseAddr("100.64.0.1"), NotBefore: nb, NotAfter: nb.Add(time.Hour),
	}
	for g := range uint8(trust.MaxGateways) {
		req.Gateway = g
		c, err := ca.Issue(req)
		if err != nil {
			t.Fatalf("gateway %d: %v", g, err)
		}
		var uris []string
		for _, u := range c.X509.URIs {
			uris = append(uris, u.String())
		}
		want := []string{"dcmesh:site=fra1", "dcmesh:prefix=10.1.0.0/16"}
		if g != 0 {
			want = slices.Insert(want, 1, fmt.Sprintf("dcmesh:gateway=%d", g))
		}
		if !slices.Equal(uris, want) {
			t.Errorf("gateway %d: URIs %q, want %q", g, uris, want)
		}
		again, err := trust.ParseCertificate(c.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if c.Gateway != g || again.Gateway != g {
			t.Errorf("gateway %d: issued %d, parsed %d", g, c.Gateway, again.Gateway)
		}
	}
	req.Gateway = trust.MaxGateways
	if c, err := ca.Issue(req); err == nil {
		t.Errorf("issued gateway %d: %v", trust.MaxGateways, c.X509.URIs)
	}
}

func TestIssueRefuses(t *testing.T) {
	ca := trusttest.NewCA(t)
	pub, _, _ := trust.GenerateIdentity()
	nb := time.Now().Add(-time.Minute)
	good := func() trust.IssueRequest {
		return trust.IssueRequest{
			Site: "b", IdentityKey: pub, Prefixes: pfxs("10.1.0.0/16"),
			Overlay: netip.MustParseAddr("100.64.0.2"), NotBefore: nb, NotAfter: nb.Add(time.Hour),
		}
	}
	if _, err := ca.Issue(good()); err != nil {
		t.Fatalf("good request refused: %v", err)
	}
	many := make([]netip.Prefix, trust.MaxPrefixes+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	cases := map[string]func(*trust.IssueRequest){
		"uppercase site":        func(r *trust.IssueRequest) { r.Site = "Fra1" },
		"empty site":            func(r *trust.IssueRequest) { r.Site = "" },
		"site with dot":         func(r *trust.IssueRequest) { r.Site = "a.b" },
		"site ends with dash":   func(r *trust.IssueRequest) { r.Site = "a-" },
		"site too long":         func(r *trust.IssueRequest) { r.Site = strings.Repeat("a", 64) },
		"no identity key":       func(r *trust.IssueRequest) { r.IdentityKey = nil },
		"no prefixes":           func(r *trust.IssueRequest) { r.Prefixes = nil },
		"too many prefixes":     func(r *trust.IssueRequest) { r.Prefixes = many },
		"host bits":             func(r *trust.IssueRequest) { r.Prefixes = pfxs("10.1.0.1/16") },
		"overlapping prefixes":  func(r *trust.IssueRequest) { r.Prefixes = pfxs("10.1.0.0/16", "10.1.2.0/24") },
		"default route prefix":  func(r *trust.IssueRequest) { r.Prefixes = pfxs("0.0.0.0/0") },
		"IPv4-mapped prefix":    func(r *trust.IssueRequest) { r.Prefixes = pfxs("::ffff:10.1.0.0/112") },
		"invalid prefix":        func(r *trust.IssueRequest) { r.Prefixes = []netip.Prefix{{}} },
		"no overlay":            func(r *trust.IssueRequest) { r.Overlay = netip.Addr{} },
		"unspecified overlay":   func(r *trust.IssueRequest) { r.Overlay = netip.IPv4Unspecified() },
		"underlay host bits":    func(r *trust.IssueRequest) { r.Underlay = pfxs("198.51.100.1/24") },
		"not-after before":      func(r *trust.IssueRequest) { r.NotAfter = r.NotBefore.Add(-time.Second) },
		"zero not-before":       func(r *trust.IssueRequest) { r.NotBefore = time.Time{} },
		"outlives the CA":       func(r *trust.IssueRequest) { r.NotAfter = ca.Cert.NotAfter.Add(time.Hour) },
		"predates the CA":       func(r *trust.IssueRequest) { r.NotBefore = ca.Cert.NotBefore.Add(-time.Hour) },
		"wrong-size public key": func(r *trust.IssueRequest) { r.IdentityKey = pub[:16] },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			r := good()
			mod(&r)
			if c, err := ca.Issue(r); err == nil {
				t.Errorf("issued %v", c.X509.URIs)
			}
		})
	}
	other := trusttest.NewCA(t)
	if _, err := (&trust.CA{Cert: ca.Cert, Key: other.Key}).Issue(good()); err == nil {
		t.Error("issued with a key that does not match the CA certificate")
	}
}

func TestParseCertificateRefuses(t *testing.T) {
	ca := fixedCA(t, 1)
	uris := func(ss ...string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.URIs = nil
			for _, s := range ss {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
		}
	}
	if _, err := trust.ParseCertificate(rawLeaf(t, ca, nil, nil)); err != nil {
		t.Fatalf("baseline refused: %v", err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := map[string][]byte{
		"CA certificate":          ca.Cert.Raw,
		"ECDSA key":               rawLeaf(t, ca, nil, &ecKey.PublicKey),
		"no site URI":             rawLeaf(t, ca, uris("dcmesh:prefix=10.1.0.0/16"), nil),
		"two site URIs":           rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:site=b", "dcmesh:prefix=10.1.0.0/16"), nil),
		"site URI != CN":          rawLeaf(t, ca, uris("dcmesh:site=c", "dcmesh:prefix=10.1.0.0/16"), nil),
		"bad CN":                  rawLeaf(t, ca, func(c *x509.Certificate) { c.Subject.CommonName = "B B" }, nil),
		"no prefix":               rawLeaf(t, ca, uris("dcmesh:site=b"), nil),
		"non-canonical prefix":    rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=10.1.0.1/16"), nil),
		"non-canonical v6 text":   rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=fd00:0::/16"), nil),
		"unparsable prefix":       rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=ten"), nil),
		"overlapping prefixes":    rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=10.0.0.0/8", "dcmesh:prefix=10.1.0.0/16"), nil),
		"unknown dcmesh URI":      rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=10.1.0.0/16", "dcmesh:colour=blue"), nil),
		"allow-default=yes":       rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=10.1.0.0/16", "dcmesh:allow-default=yes"), nil),
		"dcmesh URI with a query": rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:prefix=10.1.0.0/16?x"), nil),
		"gateway=0":               rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=0", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=01":              rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=01", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=+1":              rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=+1", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway= 1":              rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=%201", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=4":               rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=4", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=256":             rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=256", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=":                rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway without a value": rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway", "dcmesh:prefix=10.1.0.0/16"), nil),
		"gateway=x":               rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=x", "dcmesh:prefix=10.1.0.0/16"), nil),
		"two equal gateway URIs":  rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=1", "dcmesh:gateway=1", "dcmesh:prefix=10.1.0.0/16"), nil),
		"two gateway URIs":        rawLeaf(t, ca, uris("dcmesh:site=b", "dcmesh:gateway=1", "dcmesh:gateway=2", "dcmesh:prefix=10.1.0.0/16"), nil),
		"no overlay":              rawLeaf(t, ca, func(c *x509.Certificate) { c.IPAddresses = nil }, nil),
		"two overlays": rawLeaf(t, ca, func(c *x509.Certificate) {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP("100.64.0.3"))
		}, nil),
		"empty":         {},
		"oversized":     make([]byte, trust.MaxRecordSize+1),
		"trailing data": append(rawLeaf(t, ca, nil, nil), 0),
	}
	for name, der := range cases {
		t.Run(name, func(t *testing.T) {
			if c, err := trust.ParseCertificate(der); err == nil {
				t.Errorf("accepted: %+v", c)
			}
		})
	}
	// Other URI schemes and SAN types are not dcmesh's business.
	der := rawLeaf(t, ca, func(c *x509.Certificate) {
		c.URIs = append(c.URIs, &url.URL{Scheme: "https", Host: "example.com"})
		c.DNSNames = []string{"b.example.com"}
	}, nil)
	if _, err := trust.ParseCertificate(der); err != nil {
		t.Errorf("foreign SANs refused: %v", err)
	}
	// The gateway URI may stand anywhere, as every other one.
	c, err := trust.ParseCertificate(rawLeaf(t, ca, uris("dcmesh:prefix=10.1.0.0/16", "dcmesh:site=b", "dcmesh:gateway=3"), nil))
	if err != nil || c.Gateway != 3 {
		t.Errorf("gateway URI last: %v, %+v", err, c)
	}
}

func TestVerify(t *testing.T) {
	ca := trusttest.NewCA(t)
	other := trusttest.NewCA(t)
	now := time.Now()
	cas := []*x509.Certificate{ca.Cert}
	c, _ := trusttest.Issue(t, ca, "b", "10.1.0.0/16")
	foreign, _ := trusttest.Issue(t, other, "b", "10.1.0.0/16")
	future, _ := trusttest.IssueWith(t, ca, "b", trusttest.CertOptions{NotBefore: now.Add(time.Hour).Truncate(time.Second)}, "10.1.0.0/16")
	soon, _ := trusttest.IssueWith(t, ca, "b", trusttest.CertOptions{NotBefore: now.Add(30 * time.Second).Truncate(time.Second)}, "10.1.0.0/16")
	expired, _ := trusttest.IssueWith(t, ca, "b", trusttest.CertOptions{
		NotBefore: now.Add(-2 * time.Hour).Truncate(time.Second), NotAfter: now.Add(-time.Hour).Truncate(time.Second)}, "10.1.0.0/16")
	justExpired, _ := trusttest.IssueWith(t, ca, "b", trusttest.CertOptions{
		NotBefore: now.Add(-2 * time.Hour).Truncate(time.Second), NotAfter: now.Add(-30 * time.Second).Truncate(time.Second)}, "10.1.0.0/16")
	crl, err := ca.Revoke(nil, []*big.Int{c.Serial}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The same serial revoked by another CA says nothing about ca's certificate.
	otherCRL, err := other.Revoke(nil, []*big.Int{c.Serial, foreign.Serial}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nbCA := now.Add(-time.Hour).Truncate(time.Second)
	shortCA, err := trust.NewCA("short", nbCA, nbCA.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Issue never lets a certificate outlive its CA; a hand-made one may.
	short, err := trust.ParseCertificate(rawLeaf(t, shortCA, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = nbCA, nbCA.Add(10*time.Hour)
	}, nil))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		cert *trust.Certificate
		cas  []*x509.Certificate
		crl  *trust.RevocationList
		now  time.Time
		want trust.Reason
	}{
		{"valid", c, cas, nil, now, ""},
		{"valid, second pinned CA", c, []*x509.Certificate{other.Cert, ca.Cert}, nil, now, ""},
		{"unknown CA", foreign, cas, nil, now, trust.ReasonUnknownCA},
		// Verify remembers a checked signature; that must not outlive the pin.
		{"verified before, its CA no longer pinned", c, []*x509.Certificate{other.Cert}, nil, now, trust.ReasonUnknownCA},
		{"no pinned CA", c, nil, nil, now, trust.ReasonUnknownCA},
		{"site certificate pinned as CA", c, []*x509.Certificate{c.X509}, nil, now, trust.ReasonUnknownCA},
		{"not yet valid", future, cas, nil, now, trust.ReasonNotYetValid},
		{"not yet valid within skew", soon, cas, nil, now, ""},
		{"expired", expired, cas, nil, now, trust.ReasonExpired},
		{"expired within skew", justExpired, cas, nil, now, ""},
		{"revoked", c, cas, crl, now, trust.ReasonRevoked},
		{"revoked by another CA's list", c, cas, otherCRL, now, ""},
		{"CA in date", short, []*x509.Certificate{shortCA.Cert}, nil, nbCA.Add(90 * time.Minute), ""},
		{"CA expired", short, []*x509.Certificate{shortCA.Cert}, nil, nbCA.Add(3 * time.Hour), trust.ReasonExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := reasonOf(t, tc.cert.Verify(tc.cas, tc.crl, tc.now, time.Minute)); got != tc.want {
				t.Errorf("Verify = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOlderThan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(nb time.Time, serial int64) *trust.Certificate {
		return &trust.Certificate{NotBefore: nb, Serial: big.NewInt(serial)}
	}
	a, b, c := mk(t0, 9), mk(t0.Add(time.Second), 1), mk(t0, 10)
	if !a.OlderThan(b) || b.OlderThan(a) {
		t.Error("earlier NotBefore must be older")
	}
	if !a.OlderThan(c) || c.OlderThan(a) {
		t.Error("equal NotBefore: lower serial must be older")
	}
	if a.OlderThan(a) {
		t.Error("a certificate is not older than itself")
	}
}

func TestKeyPEM(t *testing.T) {
	_, key, err := trust.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("not a PKCS#8 PEM block:\n%s", b)
	}
	got, err := trust.ParseKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Error("key round trip changed the key")
	}

	// Errors never show key material, whatever is wrong with the file.
	blk, _ := pem.Decode(b)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	bad := map[string][]byte{
		"truncated DER": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: blk.Bytes[:len(blk.Bytes)-3]}),
		"flipped DER":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: append([]byte{0x31}, blk.Bytes[1:]...)}),
		"wrong type":    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: blk.Bytes}),
		"headers":       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: blk.Bytes}),
		"ECDSA key":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}),
		"no PEM":        []byte(base64.StdEncoding.EncodeToString(key)),
	}
	secrets := []string{
		base64.StdEncoding.EncodeToString(key.Seed()), hex.EncodeToString(key.Seed()),
		base64.StdEncoding.EncodeToString(blk.Bytes), string(key.Seed()),
	}
	for name, in := range bad {
		_, err := trust.ParseKeyPEM(in)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), s[:12]) {
				t.Errorf("%s: error %q contains key material", name, err)
			}
		}
	}
	if _, err := trust.EncodeKeyPEM(key[:10]); err == nil {
		t.Error("EncodeKeyPEM accepted a short key")
	}
}

func TestCAPEM(t *testing.T) {
	a, b := trusttest.NewCA(t), trusttest.NewCA(t)
	both := append(trust.EncodeCertPEM(a.Cert.Raw), trust.EncodeCertPEM(b.Cert.Raw)...)
	cas, err := trust.ParseCAPEM(append([]byte("pinned CAs\n"), both...))
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 2 || !cas[0].Equal(a.Cert) || !cas[1].Equal(b.Cert) {
		t.Errorf("ParseCAPEM returned %d certificates", len(cas))
	}
	site, _ := trusttest.Issue(t, a, "b", "10.1.0.0/16")
	keyPEM, _ := trust.EncodeKeyPEM(a.Key)
	for name, in := range map[string][]byte{
		"empty":            nil,
		"site certificate": append(trust.EncodeCertPEM(a.Cert.Raw), trust.EncodeCertPEM(site.Raw)...),
		"private key":      append(trust.EncodeCertPEM(a.Cert.Raw), keyPEM...),
		"garbage DER":      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := trust.ParseCAPEM(in); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(a.Key.Seed())[:12]) {
			t.Errorf("%s: error shows key material: %v", name, err)
		}
	}
	if _, err := trust.ParseCertPEM(trust.EncodeCertPEM(a.Cert.Raw)); err == nil {
		t.Error("ParseCertPEM accepted a CA certificate")
	}
	if _, err := trust.ParseCertPEM(append(trust.EncodeCertPEM(site.Raw), trust.EncodeCertPEM(site.Raw)...)); err == nil {
		t.Error("ParseCertPEM accepted two certificates")
	}

	loaded, err := trust.LoadCA(trust.EncodeCertPEM(a.Cert.Raw), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(a.Cert) || !loaded.Key.Equal(a.Key) {
		t.Error("LoadCA changed the CA")
	}
	otherKey, _ := trust.EncodeKeyPEM(b.Key)
	if _, err := trust.LoadCA(trust.EncodeCertPEM(a.Cert.Raw), otherKey); err == nil {
		t.Error("LoadCA accepted a mismatched key")
	}
}

func TestGenerateIdentity(t *testing.T) {
	pub, priv, err := trust.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if len(pub) != ed25519.PublicKeySize || !pub.Equal(priv.Public()) {
		t.Error("mismatched identity pair")
	}
}
