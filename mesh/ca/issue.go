package ca

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// IssueOptions describes `dcmesh ca issue`. Errors about them are
// *config.OptionError naming the field.
type IssueOptions struct {
	Dir          string         // the CA directory
	Site         string         // the site's name (trust.ValidSiteName)
	Gateway      uint8          // the gateway's index among its site's, below trust.MaxGateways (0: the first or only)
	Prefixes     []netip.Prefix // what the site owns: at least one, no default route
	Overlay      netip.Addr     // its address on the tunnel interface
	Underlay     []netip.Prefix // where its endpoints may be; none: anywhere
	AllowDefault bool           // it may announce a default route
	Valid        time.Duration  // default DefaultCertValidity
	Out          string         // the bundle directory to create
	Now          time.Time
	// Replace allows re-issuing a site name the CA holds a live
	// certificate for with other prefixes or another overlay address
	// (reissue.go); without it only a renewal is allowed.
	Replace bool
}

// Issue issues a site certificate and writes the enrollment bundle (identity
// key, certificate, CA certificate, gossip key) into o.Out. It refuses a
// prefix or overlay address that overlaps one issued to another site and not
// revoked or expired, an overlay address of another gateway of the site
// (trust.CheckIssue), and, unless o.Replace, a gateway it holds a live
// certificate for with other prefixes or overlay (Plan says which). Another
// gateway of a site (o.Gateway) is a certificate of its own, never a
// renewal of gateway 0's.
func Issue(o IssueOptions) (*trust.Certificate, error) {
	req, err := o.request()
	if err != nil {
		return nil, err
	}
	ca, inv, err := load(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := checkOverlaps(inv, req, o.Now); err != nil {
		return nil, err
	}
	if err := checkReplacement(planIssue(inv, req, o.Now), o); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o700); err != nil {
		return nil, config.Optionf("Out", ": %w", err)
	}
	for _, f := range []string{config.IdentityKeyFile, config.SiteCertFile} {
		if _, err := os.Lstat(filepath.Join(o.Out, f)); err == nil {
			return nil, config.Optionf("Out", " %s already holds a bundle (%s exists): refusing to overwrite it", o.Out, f)
		}
	}
	pub, priv, err := trust.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	req.IdentityKey = pub
	cert, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	if err := writeBundle(o, ca, cert, priv); err != nil {
		return nil, err
	}
	entry := IssuedEntry{Site: o.Site, Gateway: o.Gateway, Serial: cert.Serial.Text(16), Overlay: o.Overlay.String(), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	for _, p := range req.Prefixes {
		entry.Prefixes = append(entry.Prefixes, p.String())
	}
	for _, p := range req.Underlay {
		entry.Underlay = append(entry.Underlay, p.String())
	}
	entry.AllowDefault = req.AllowDefault
	inv.Issued = append(inv.Issued, entry)
	if inv.Certificates == nil {
		inv.Certificates = map[string][]byte{}
	}
	inv.Certificates[entry.Serial] = cert.Raw
	if err := saveInventory(o.Dir, inv); err != nil {
		return nil, fmt.Errorf("certificate issued but the inventory was not updated (%w): the next issue will not know about it", err)
	}
	return cert, nil
}

// request checks the options on their own and turns them into the request
// the CA signs (without the identity key).
func (o *IssueOptions) request() (trust.IssueRequest, error) {
	if !trust.ValidSiteName(o.Site) {
		return trust.IssueRequest{}, config.Optionf("Site", " %q: use 1-63 lowercase letters, digits and '-'", o.Site)
	}
	if o.Gateway >= trust.MaxGateways {
		return trust.IssueRequest{}, config.Optionf("Gateway", " %d: a site has at most %d gateways, 0 to %d", o.Gateway, trust.MaxGateways, trust.MaxGateways-1)
	}
	if o.Valid == 0 {
		o.Valid = DefaultCertValidity
	}
	if o.Valid < time.Second {
		return trust.IssueRequest{}, config.Optionf("Valid", " %s: too short: give a lifetime of at least 1s, e.g. 365d or 90d", config.FormatDuration(o.Valid))
	}
	if len(o.Prefixes) == 0 {
		return trust.IssueRequest{}, config.Optionf("Prefixes", ": at least one prefix this site owns, e.g. 10.1.0.0/16")
	}
	if err := masked("Prefixes", o.Prefixes); err != nil {
		return trust.IssueRequest{}, err
	}
	if err := masked("Underlay", o.Underlay); err != nil {
		return trust.IssueRequest{}, err
	}
	for _, p := range o.Prefixes {
		if p.Bits() == 0 {
			return trust.IssueRequest{}, &config.OptionError{Option: "Prefixes", See: "AllowDefault",
				Err: fmt.Errorf(" %s is a default route: certificates list site prefixes; announcing a default route is a separate permission", p)}
		}
	}
	if !o.Overlay.IsValid() {
		return trust.IssueRequest{}, config.Optionf("Overlay", ": required: the site's overlay IP address, e.g. 10.255.0.1")
	}
	return trust.IssueRequest{Site: o.Site, Gateway: o.Gateway, AllowDefault: o.AllowDefault, NotBefore: o.Now.Add(-CertBackdate), NotAfter: o.Now.Add(o.Valid),
		Prefixes: o.Prefixes, Overlay: o.Overlay, Underlay: o.Underlay}, nil
}

// masked refuses a prefix with host bits set.
func masked(option string, ps []netip.Prefix) error {
	for _, p := range ps {
		if p != p.Masked() {
			return config.Optionf(option, " %s has host bits set: did you mean %s?", p, p.Masked())
		}
	}
	return nil
}

// checkOverlaps is trust.CheckIssue against the live certificates of the
// inventory: prefixes and overlay address must not overlap another site's,
// and the gateways of one site need overlay addresses of their own.
func checkOverlaps(inv *Inventory, req trust.IssueRequest, now time.Time) error {
	var issued []trust.Issued
	var entries []*IssuedEntry // entries[i] is issued[i]
	for i := range inv.Issued {
		e := &inv.Issued[i]
		if !e.live(now) {
			continue
		}
		a := e.authority()
		issued = append(issued, trust.Issued{Site: e.Site, Gateway: e.Gateway, Prefixes: a.Prefixes, Overlay: a.Overlay})
		entries = append(entries, e)
	}
	var c *trust.IssueConflict
	if err := trust.CheckIssue(req, issued); !errors.As(err, &c) {
		return err
	}
	e := entries[c.Index]
	if c.Sibling {
		return config.Optionf("Overlay", " %s is already the overlay address of gateway %s (certificate %s, valid until %s): each gateway of a site has its own; choose another",
			c.Mine.Addr(), e.ID(), e.Serial, e.NotAfter.Format(time.DateOnly))
	}
	return fmt.Errorf("%s overlaps %s of site %s (certificate %s, valid until %s): revoke that site first (`dcmesh ca revoke`) or choose another range",
		c.Mine, c.Theirs, e.ID(), e.Serial, e.NotAfter.Format(time.DateOnly))
}

// writeBundle writes the enrollment bundle of cert into o.Out.
func writeBundle(o IssueOptions, ca *trust.CA, cert *trust.Certificate, identity ed25519.PrivateKey) error {
	keyPEM, err := trust.EncodeKeyPEM(identity)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
	gossipKey, err := wg.ReadSecretFile(filepath.Join(o.Dir, GossipKeyFile), enroll.MaxGossipKeySize)
	if err != nil {
		return err
	}
	defer clear(gossipKey)
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{config.IdentityKeyFile, keyPEM, 0o600},
		{config.SiteCertFile, trust.EncodeCertPEM(cert.Raw), 0o644},
		{config.CACertFile, trust.EncodeCertPEM(ca.Cert.Raw), 0o644},
		{config.GossipKeyFile, gossipKey, 0o600},
	}
	for _, f := range files {
		if err := wg.WriteFileAtomic(filepath.Join(o.Out, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}
