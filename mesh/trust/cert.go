package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// URI SAN vocabulary of site certificates. The scheme is "dcmesh" and the
// rest of the URI is opaque "key=value" (or a bare flag), so that
// `openssl x509 -text` prints them verbatim, e.g. "URI:dcmesh:prefix=10.1.0.0/16".
const (
	uriScheme       = "dcmesh"
	uriSite         = "site"
	uriGateway      = "gateway"
	uriPrefix       = "prefix"
	uriUnderlay     = "underlay"
	uriAllowDefault = "allow-default"
)

// siteNameRE is an RFC 1123 label: site names end up in memberlist node
// names, interface descriptions, metric labels and log lines, so they are
// kept to a boring, unambiguous alphabet.
var siteNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidSiteName reports whether name is acceptable as a site name: a
// lower-case RFC 1123 label of at most 63 characters.
func ValidSiteName(name string) bool { return siteNameRE.MatchString(name) }

// maxClusterName keeps "dcmesh CA <cluster>" within the 64 characters
// RFC 5280 allows for a common name.
const maxClusterName = 64 - len("dcmesh CA ")

// NewCA creates a cluster CA: a fresh Ed25519 key and a self-signed
// certificate valid from notBefore to notAfter. The certificate may sign
// certificates and CRLs but not intermediate CAs (MaxPathLenZero): site
// certificates are the only thing it certifies, so there is no chain to
// build and no path-length confusion to exploit.
func NewCA(cluster string, notBefore, notAfter time.Time) (*CA, error) {
	if cluster == "" || len(cluster) > maxClusterName {
		return nil, fmt.Errorf("trust: cluster name must be 1 to %d characters", maxClusterName)
	}
	for _, r := range cluster {
		if r < 0x20 || r > 0x7e {
			return nil, errors.New("trust: cluster name must be printable ASCII")
		}
	}
	if !notAfter.After(notBefore) {
		return nil, errors.New("trust: CA validity: not-after must be after not-before")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "dcmesh CA " + cluster},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("trust: creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("trust: parsing CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: priv}, nil
}

// LoadCA pairs a CA certificate with its private key (both PEM, as written
// by EncodeCertPEM and EncodeKeyPEM) and checks that they belong together,
// so that a mismatched pair fails at load time instead of producing
// certificates nobody accepts.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cas, err := ParseCAPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if len(cas) != 1 {
		return nil, fmt.Errorf("trust: want exactly one CA certificate, got %d", len(cas))
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cas[0], Key: key}
	if err := ca.check(); err != nil {
		return nil, err
	}
	return ca, nil
}

// check reports whether ca can sign: a CA certificate and the matching key.
func (ca *CA) check() error {
	if ca == nil || ca.Cert == nil {
		return errors.New("trust: no CA certificate")
	}
	if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid {
		return errors.New("trust: CA certificate is not a CA")
	}
	if len(ca.Key) != ed25519.PrivateKeySize {
		return errors.New("trust: CA key is not an Ed25519 private key")
	}
	pub, ok := ca.Cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(ca.Key.Public()) {
		return errors.New("trust: CA key does not match the CA certificate")
	}
	return nil
}

// randomSerial returns a random, positive 128-bit serial number. Serials
// must be unique per CA (revocation names certificates by serial) and
// unpredictable; 128 random bits give both without any state on the
// operator's machine.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("trust: generating serial: %w", err)
	}
	s := new(big.Int).SetBytes(b[:])
	if s.Sign() == 0 {
		s.SetInt64(1) // serials must be positive (RFC 5280 4.1.2.2)
	}
	return s, nil
}

// checkPrefix checks that p is a valid prefix in canonical form. IPv4-mapped
// IPv6 prefixes are refused: 10.0.0.0/8 and ::ffff:10.0.0.0/104 name the same
// addresses but never overlap as netip values, which would let a prefix slip
// past every overlap check.
func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("IPv4-mapped prefix %s: use the IPv4 form", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("prefix %s has host bits set (want %s)", p, p.Masked())
	}
	return nil
}

// firstOverlap returns the first pair of overlapping prefixes in ps.
func firstOverlap(ps []netip.Prefix) (a, b netip.Prefix, ok bool) {
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			if ps[i].Overlaps(ps[j]) {
				return ps[i], ps[j], true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

// checkSitePrefixes applies the rules shared by Issue and ParseCertificate to
// a certificate's prefix list: at least one, at most MaxPrefixes, each
// canonical, none a default route (that permission is AllowDefault, so that
// a default route never blocks the site's specific prefixes in the overlap
// checks), and no two overlapping (a site's prefixes are a partition it
// owns; overlaps inside one certificate are almost always a typo).
func checkSitePrefixes(ps []netip.Prefix) error {
	if len(ps) == 0 {
		return errors.New("no prefixes")
	}
	if len(ps) > MaxPrefixes {
		return fmt.Errorf("%d prefixes, at most %d allowed", len(ps), MaxPrefixes)
	}
	for _, p := range ps {
		if err := checkPrefix(p); err != nil {
			return err
		}
		if p.Bits() == 0 {
			return fmt.Errorf("prefix %s is a default route: use AllowDefault", p)
		}
	}
	if a, b, ok := firstOverlap(ps); ok {
		return fmt.Errorf("prefixes %s and %s overlap", a, b)
	}
	return nil
}

// checkUnderlay applies the rules for underlay ranges: canonical, at most
// MaxPrefixes. A /0 is allowed and means "anywhere in that family".
func checkUnderlay(ps []netip.Prefix) error {
	if len(ps) > MaxPrefixes {
		return fmt.Errorf("%d underlay ranges, at most %d allowed", len(ps), MaxPrefixes)
	}
	for _, p := range ps {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("underlay: %w", err)
		}
	}
	return nil
}

// checkOverlay checks the overlay address: a plain unicast address.
func checkOverlay(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("no overlay address")
	case a.Is4In6():
		return fmt.Errorf("overlay address %s is IPv4-mapped: use the IPv4 form", a)
	case a.Zone() != "":
		return fmt.Errorf("overlay address %s has a zone", a)
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("overlay address %s is not a unicast address", a)
	}
	return nil
}

func (req *IssueRequest) validate() error {
	if !ValidSiteName(req.Site) {
		return fmt.Errorf("invalid site name %q", req.Site)
	}
	if req.Gateway >= MaxGateways {
		return fmt.Errorf("gateway index %d, at most %d", req.Gateway, MaxGateways-1)
	}
	if len(req.IdentityKey) != ed25519.PublicKeySize {
		return errors.New("identity key is not an Ed25519 public key")
	}
	if err := checkSitePrefixes(req.Prefixes); err != nil {
		return err
	}
	if err := checkOverlay(req.Overlay); err != nil {
		return err
	}
	if err := checkUnderlay(req.Underlay); err != nil {
		return err
	}
	if req.NotBefore.IsZero() || !req.NotAfter.After(req.NotBefore) {
		return errors.New("not-after must be after a non-zero not-before")
	}
	return nil
}

// Issue signs a site certificate. It refuses a request that ParseCertificate
// would not accept, and a validity outside the CA's own (a certificate that
// outlives its CA would fail verification at an unexpected time).
//
// The site name is the subject CN and a URI SAN "dcmesh:site=NAME"; a
// gateway index N > 0 follows as "dcmesh:gateway=N" (index 0 writes
// nothing, so a one-gateway site's certificate is what it always was); each
// prefix a URI SAN "dcmesh:prefix=CIDR" and each underlay range
// "dcmesh:underlay=CIDR", in request order; "dcmesh:allow-default" when
// AllowDefault; the gateway's overlay address is the only IP SAN. The key
// usage is DigitalSignature only: the identity key signs records, nothing
// else.
//
// Issue does not know the other certificates; refusing a prefix that
// overlaps another site's is the caller's job (CheckIssue; Resolve settles
// it at run time if it happens anyway).
func (ca *CA) Issue(req IssueRequest) (*Certificate, error) {
	if err := ca.check(); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("trust: issue: %w", err)
	}
	if req.NotBefore.Before(ca.Cert.NotBefore) || req.NotAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("trust: issue: validity %s to %s is outside the CA's (%s to %s)",
			req.NotBefore.UTC().Format(time.RFC3339), req.NotAfter.UTC().Format(time.RFC3339),
			ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	uris := []*url.URL{sanURI(uriSite + "=" + req.Site)}
	if req.Gateway != 0 {
		uris = append(uris, sanURI(uriGateway+"="+strconv.Itoa(int(req.Gateway))))
	}
	for _, p := range req.Prefixes {
		uris = append(uris, sanURI(uriPrefix+"="+p.String()))
	}
	for _, p := range req.Underlay {
		uris = append(uris, sanURI(uriUnderlay+"="+p.String()))
	}
	if req.AllowDefault {
		uris = append(uris, sanURI(uriAllowDefault))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.Site},
		NotBefore:             req.NotBefore,
		NotAfter:              req.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  uris,
		IPAddresses:           []net.IP{req.Overlay.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, req.IdentityKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("trust: issue: %w", err)
	}
	c, err := ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("trust: issue: produced an unparsable certificate: %w", err)
	}
	return c, nil
}

func sanURI(opaque string) *url.URL { return &url.URL{Scheme: uriScheme, Opaque: opaque} }

// Verify checks the certificate against the pinned CAs: signed by one of
// them (ReasonUnknownCA), in date at now give or take skew for both the
// certificate and that CA (ReasonNotYetValid, ReasonExpired), and not on
// the revocation list crls gives for that CA (ReasonRevoked). crls is a
// *RevocationList (one CA), a *CRLSet (one list per pinned CA) or nil. A
// list only counts when the same CA signed it: serials are unique per CA,
// so another CA's list says nothing about this certificate.
//
// Only the signature is checked, not a chain: site certificates are issued
// directly by a pinned CA, so there is nothing to build. Errors are
// *RejectError.
func (c *Certificate) Verify(cas []*x509.Certificate, crls CRLSource, now time.Time, skew time.Duration) error {
	if c == nil || c.X509 == nil {
		return reject(ReasonUnknownCA, "no certificate")
	}
	issuer := c.issuer(cas)
	if issuer == nil {
		return reject(ReasonUnknownCA, "certificate of site %q (serial %x) is not signed by a pinned CA", c.Site, c.Serial)
	}
	if r := checkValidity(now, skew, c.NotBefore, c.NotAfter); r != "" {
		return reject(r, "certificate of site %q (serial %x) valid %s to %s, now %s", c.Site, c.Serial,
			fmtTime(c.NotBefore), fmtTime(c.NotAfter), fmtTime(now))
	}
	if r := checkValidity(now, skew, issuer.NotBefore, issuer.NotAfter); r != "" {
		return reject(r, "CA %q that signed site %q valid %s to %s, now %s", issuer.Subject.CommonName, c.Site,
			fmtTime(issuer.NotBefore), fmtTime(issuer.NotAfter), fmtTime(now))
	}
	if crls != nil {
		if crl := crls.For(issuer); crl.Revoked(c.Serial) {
			return reject(ReasonRevoked, "certificate of site %q (serial %x) is revoked (CRL %v of CA %s)", c.Site, c.Serial, crl.Number, CAID(issuer))
		}
	}
	return nil
}

// issuer returns the CA in cas that signed c, or nil. A signature checked
// once is remembered for that CA (the same *x509.Certificate, or one with
// the same DER: a reloaded trust bundle).
func (c *Certificate) issuer(cas []*x509.Certificate) *x509.Certificate {
	if known := c.signedBy.Load(); known != nil {
		for _, ca := range cas {
			if ca == known || (ca != nil && bytes.Equal(ca.Raw, known.Raw)) {
				return ca
			}
		}
	}
	for _, ca := range cas {
		if ca == nil || !ca.IsCA || !ca.BasicConstraintsValid {
			continue
		}
		if c.X509.CheckSignatureFrom(ca) == nil {
			c.signedBy.Store(ca)
			return ca
		}
	}
	return nil
}

// namesIssuerIn reports whether c's issuer name (and authority key id, when
// both carry one) is that of one of cas. It checks no signature.
func (c *Certificate) namesIssuerIn(cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if ca == nil || !bytes.Equal(c.X509.RawIssuer, ca.RawSubject) {
			continue
		}
		aki, ski := c.X509.AuthorityKeyId, ca.SubjectKeyId
		if len(aki) == 0 || len(ski) == 0 || bytes.Equal(aki, ski) {
			return true
		}
	}
	return false
}

func checkValidity(now time.Time, skew time.Duration, notBefore, notAfter time.Time) Reason {
	if now.Add(skew).Before(notBefore) {
		return ReasonNotYetValid
	}
	if now.Add(-skew).After(notAfter) {
		return ReasonExpired
	}
	return ""
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// OlderThan reports whether c was issued before o: earlier NotBefore, then
// lower serial. It is the tie-break for prefixes and WireGuard keys claimed
// by two sites: the site that held it first keeps it, whatever order the
// records arrive in, so a newly issued certificate cannot take over a
// running site's routes.
func (c *Certificate) OlderThan(o *Certificate) bool {
	if !c.NotBefore.Equal(o.NotBefore) {
		return c.NotBefore.Before(o.NotBefore)
	}
	return c.Serial.Cmp(o.Serial) < 0
}

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
