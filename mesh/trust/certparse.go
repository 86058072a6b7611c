package trust

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// ParseCertificate parses a DER site certificate and checks its structure —
// not who signed it (Verify does that). It accepts exactly what Issue
// produces: an Ed25519 key signed with Ed25519, not a CA, exactly one
// "dcmesh:site=" URI equal to the CN, at most one "dcmesh:gateway=N" with N
// from 1 to MaxGateways-1 in canonical decimal (absent: gateway 0), one to
// MaxPrefixes canonical,
// non-overlapping, non-default prefixes, canonical underlay ranges, at most
// one allow-default flag and exactly one IP SAN (the overlay). Values must be
// in canonical text form, so one certificate has one reading. URIs with
// another scheme are ignored; unknown dcmesh: URIs are refused, because a
// future restriction this version does not understand must not be silently
// dropped.
//
// The input is bounded by MaxRecordSize (a certificate travels inside a
// record) and is not retained: the result holds a copy.
func ParseCertificate(der []byte) (*Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("trust: empty certificate")
	}
	if len(der) > MaxRecordSize {
		return nil, fmt.Errorf("trust: certificate of %d bytes exceeds %d", len(der), MaxRecordSize)
	}
	der = append([]byte(nil), der...) // x509 keeps slices of its input
	x, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	c, err := certFromX509(x)
	if err != nil {
		return nil, fmt.Errorf("trust: certificate: %w", err)
	}
	return c, nil
}

func certFromX509(x *x509.Certificate) (*Certificate, error) {
	key, err := checkX509Shape(x)
	if err != nil {
		return nil, err
	}
	c := &Certificate{
		Raw:         x.Raw,
		X509:        x,
		Site:        x.Subject.CommonName,
		IdentityKey: key,
		Serial:      x.SerialNumber,
		NotBefore:   x.NotBefore,
		NotAfter:    x.NotAfter,
	}
	if err := c.readURIs(x.URIs); err != nil {
		return nil, err
	}
	if err := checkSitePrefixes(c.Prefixes); err != nil {
		return nil, err
	}
	if err := checkUnderlay(c.Underlay); err != nil {
		return nil, err
	}
	if len(x.IPAddresses) != 1 {
		return nil, fmt.Errorf("%d IP addresses, want exactly one (the overlay)", len(x.IPAddresses))
	}
	overlay, ok := netip.AddrFromSlice(x.IPAddresses[0])
	if !ok {
		return nil, errors.New("malformed overlay address")
	}
	if err := checkOverlay(overlay); err != nil {
		return nil, err
	}
	c.Overlay = overlay
	return c, nil
}

// checkX509Shape checks what the X.509 layer says of a site certificate:
// version 3, Ed25519 throughout, no CA, no critical extension this code does
// not handle, a positive serial and a valid site name. It returns the key.
func checkX509Shape(x *x509.Certificate) (ed25519.PublicKey, error) {
	if x.Version != 3 {
		return nil, fmt.Errorf("version %d, want 3", x.Version)
	}
	if x.SignatureAlgorithm != x509.PureEd25519 {
		return nil, fmt.Errorf("signature algorithm %v, want Ed25519", x.SignatureAlgorithm)
	}
	key, ok := x.PublicKey.(ed25519.PublicKey)
	if !ok || len(key) != ed25519.PublicKeySize {
		return nil, errors.New("public key is not Ed25519")
	}
	if x.IsCA || x.KeyUsage&x509.KeyUsageCertSign != 0 {
		return nil, errors.New("is a CA certificate, want a site certificate")
	}
	if len(x.UnhandledCriticalExtensions) > 0 {
		return nil, errors.New("unhandled critical extension")
	}
	if x.SerialNumber == nil || x.SerialNumber.Sign() <= 0 {
		return nil, errors.New("serial number not positive")
	}
	if !ValidSiteName(x.Subject.CommonName) {
		return nil, fmt.Errorf("invalid site name %q in subject CN", x.Subject.CommonName)
	}
	return key, nil
}

// readURIs reads the dcmesh: URI SANs into c (site, gateway, prefixes,
// underlay, allow-default), refusing duplicates and unknown dcmesh: keys.
func (c *Certificate) readURIs(uris []*url.URL) error {
	var sites, gateways int
	for _, u := range uris {
		if u.Scheme != uriScheme {
			continue
		}
		if u.Opaque == "" || u.Host != "" || u.Path != "" || u.User != nil ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
			return fmt.Errorf("malformed %s: URI", uriScheme)
		}
		k, v, hasValue := strings.Cut(u.Opaque, "=")
		switch {
		case k == uriSite && hasValue:
			if v != c.Site {
				return fmt.Errorf("site URI %q does not match the CN %q", v, c.Site)
			}
			sites++
		case k == uriGateway && hasValue:
			if gateways++; gateways > 1 {
				return errors.New("more than one gateway URI")
			}
			n, err := parseGatewayIndex(v)
			if err != nil {
				return err
			}
			c.Gateway = n
		case k == uriPrefix && hasValue:
			p, err := parseCanonicalPrefix(v)
			if err != nil {
				return err
			}
			if len(c.Prefixes) == MaxPrefixes {
				return fmt.Errorf("more than %d prefixes", MaxPrefixes)
			}
			c.Prefixes = append(c.Prefixes, p)
		case k == uriUnderlay && hasValue:
			p, err := parseCanonicalPrefix(v)
			if err != nil {
				return fmt.Errorf("underlay: %w", err)
			}
			if len(c.Underlay) == MaxPrefixes {
				return fmt.Errorf("more than %d underlay ranges", MaxPrefixes)
			}
			c.Underlay = append(c.Underlay, p)
		case k == uriAllowDefault && !hasValue:
			if c.AllowDefault {
				return errors.New("duplicate allow-default")
			}
			c.AllowDefault = true
		default:
			return fmt.Errorf("unknown %s: URI %q", uriScheme, truncate(u.Opaque, 64))
		}
	}
	if sites != 1 {
		return fmt.Errorf("%d site URIs, want exactly one", sites)
	}
	return nil
}

// parseCanonicalPrefix parses a CIDR that must be written exactly as
// netip.Prefix.String writes it (no host bits, no leading zeros, compressed
// IPv6), so that equal prefixes are equal strings.
func parseCanonicalPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad prefix %q", truncate(s, 64))
	}
	if err := checkPrefix(p); err != nil {
		return netip.Prefix{}, err
	}
	if p.String() != s {
		return netip.Prefix{}, fmt.Errorf("prefix %q not in canonical form %q", s, p.String())
	}
	return p, nil
}

// truncate shortens attacker-supplied text before it goes into an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
