package mesh

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The certificate authority directory, on the operator's machine:
//
//	ca.key        CA private key (PKCS#8 PEM, 0600)
//	ca.crt        CA certificate (PEM): pinned by every agent
//	gossip.key    cluster gossip key (base64, 0600)
//	inventory.json every certificate issued, for overlap refusal and revocation
//	crl.pem       the latest revocation list
const (
	caKeyFile     = "ca.key"
	caCertFile    = "ca.crt"
	gossipKeyFile = "gossip.key"
	inventoryFile = "inventory.json"
	crlFile       = "crl.pem"
	// maxInventorySize bounds inventory.json: ~300 bytes per certificate.
	maxInventorySize = 64 << 20
	// Bundle files.
	identityKeyFile = "identity.key"
	siteCertFile    = "site.crt"
)

// DefaultCAValidity is how long a new CA certificate lasts.
const DefaultCAValidity = 10 * 365 * 24 * time.Hour

// DefaultCertValidity is how long a site certificate lasts.
const DefaultCertValidity = 365 * 24 * time.Hour

// certBackdate lets a fresh certificate be valid on sites whose clocks run
// a little behind the operator's.
const certBackdate = time.Minute

// Inventory is the CA's record of what it issued.
type Inventory struct {
	Cluster string        `json:"cluster"`
	Issued  []IssuedEntry `json:"issued"`
}

// IssuedEntry is one certificate the CA signed.
type IssuedEntry struct {
	Site      string    `json:"site"`
	Serial    string    `json:"serial"` // hex
	Prefixes  []string  `json:"prefixes"`
	Overlay   string    `json:"overlay"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// CAInit creates a CA directory for cluster. It refuses to touch a directory
// that already holds a CA.
func CAInit(dir, cluster string, now time.Time) error {
	if cluster == "" {
		cluster = "dcmesh"
	}
	if !trust.ValidSiteName(cluster) {
		return fmt.Errorf("--cluster %q: use lowercase letters, digits and '-'", cluster)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{caKeyFile, caCertFile, gossipKeyFile, inventoryFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s already holds a CA (%s exists): refusing to overwrite it", dir, f)
		}
	}
	ca, err := trust.NewCA(cluster, now.Add(-certBackdate), now.Add(DefaultCAValidity))
	if err != nil {
		return err
	}
	keyPEM, err := trust.EncodeKeyPEM(ca.Key)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
	gk := make([]byte, GossipKeyLen)
	if _, err := rand.Read(gk); err != nil {
		return err
	}
	inv, _ := json.MarshalIndent(Inventory{Cluster: cluster, Issued: []IssuedEntry{}}, "", "  ")
	steps := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{caKeyFile, keyPEM, 0o600},
		{caCertFile, trust.EncodeCertPEM(ca.Cert.Raw), 0o644},
		{gossipKeyFile, []byte(base64.StdEncoding.EncodeToString(gk) + "\n"), 0o600},
		{inventoryFile, inv, 0o600},
	}
	for _, s := range steps {
		if err := wg.WriteFileAtomic(filepath.Join(dir, s.name), s.data, s.perm); err != nil {
			return err
		}
	}
	return nil
}

// loadCA reads the CA key and certificate, and the inventory, from dir.
func loadCA(dir string) (*trust.CA, *Inventory, error) {
	certPEM, err := wg.ReadRegularFile(filepath.Join(dir, caCertFile), maxPEMFileSize)
	if err != nil {
		return nil, nil, fmt.Errorf("%s is not a CA directory (create one with `dcmesh ca init --dir %s`): %w", dir, dir, err)
	}
	keyPEM, err := wg.ReadSecretFile(filepath.Join(dir, caKeyFile), 8192)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	ca, err := trust.LoadCA(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	raw, err := wg.ReadStateFile(filepath.Join(dir, inventoryFile), maxInventorySize)
	if err != nil {
		return nil, nil, fmt.Errorf("CA inventory: %w", err)
	}
	var inv Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		return nil, nil, fmt.Errorf("CA inventory %s is corrupt: %w", filepath.Join(dir, inventoryFile), err)
	}
	return ca, &inv, nil
}

func saveInventory(dir string, inv *Inventory) error {
	raw, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	return wg.WriteFileAtomic(filepath.Join(dir, inventoryFile), append(raw, '\n'), 0o600)
}

// IssueOptions describes `dcmesh ca issue`.
type IssueOptions struct {
	Dir          string
	Site         string
	Prefixes     []string
	Overlay      string
	Underlay     []string
	AllowDefault bool
	Valid        time.Duration
	Out          string
	Now          time.Time
}

// CAIssue issues a site certificate and writes the enrollment bundle (identity
// key, certificate, CA certificate, gossip key) into opts.Out. It refuses a
// prefix or overlay address that overlaps one issued to another site and not
// revoked or expired.
func CAIssue(o IssueOptions) (*trust.Certificate, error) {
	if !trust.ValidSiteName(o.Site) {
		return nil, fmt.Errorf("--site %q: use 1-63 lowercase letters, digits and '-'", o.Site)
	}
	req := trust.IssueRequest{Site: o.Site, AllowDefault: o.AllowDefault, NotBefore: o.Now.Add(-certBackdate)}
	if o.Valid == 0 {
		o.Valid = DefaultCertValidity
	}
	if o.Valid < time.Second {
		return nil, fmt.Errorf("--valid %s: too short", o.Valid)
	}
	req.NotAfter = o.Now.Add(o.Valid)
	if len(o.Prefixes) == 0 {
		return nil, errors.New("--prefix: at least one prefix this site owns, e.g. --prefix 10.1.0.0/16")
	}
	for _, s := range o.Prefixes {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--prefix: %w", err)
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("--prefix %s is a default route: certificates list site prefixes; --allow-default is the separate permission to announce one", p)
		}
		req.Prefixes = append(req.Prefixes, p)
	}
	ov, err := netip.ParseAddr(strings.TrimSpace(o.Overlay))
	if err != nil {
		return nil, fmt.Errorf("--overlay %q: the site's overlay IP address, e.g. 10.255.0.1", o.Overlay)
	}
	req.Overlay = ov
	for _, s := range o.Underlay {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--underlay: %w", err)
		}
		req.Underlay = append(req.Underlay, p)
	}
	ca, inv, err := loadCA(o.Dir)
	if err != nil {
		return nil, err
	}
	ovp := netip.PrefixFrom(ov, ov.BitLen())
	for _, e := range inv.Issued {
		if e.Site == o.Site || e.Revoked || o.Now.After(e.NotAfter) {
			continue // a site's renewal may reuse its prefixes
		}
		theirs := append([]string{e.Overlay + hostBits(e.Overlay)}, e.Prefixes...)
		for _, t := range theirs {
			tp, err := netip.ParsePrefix(t)
			if err != nil {
				continue
			}
			for _, mine := range append([]netip.Prefix{ovp}, req.Prefixes...) {
				if mine.Overlaps(tp) {
					return nil, fmt.Errorf("%s overlaps %s of site %s (certificate %s, valid until %s): revoke that site first (`dcmesh ca revoke`) or choose another range", mine, tp, e.Site, e.Serial, e.NotAfter.Format(time.DateOnly))
				}
			}
		}
	}
	if err := os.MkdirAll(o.Out, 0o700); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	for _, f := range []string{identityKeyFile, siteCertFile} {
		if _, err := os.Lstat(filepath.Join(o.Out, f)); err == nil {
			return nil, fmt.Errorf("--out %s already holds a bundle (%s exists): refusing to overwrite it", o.Out, f)
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
	keyPEM, err := trust.EncodeKeyPEM(priv)
	if err != nil {
		return nil, err
	}
	defer clear(keyPEM)
	gossipKey, err := wg.ReadSecretFile(filepath.Join(o.Dir, gossipKeyFile), maxGossipKeySize)
	if err != nil {
		return nil, err
	}
	defer clear(gossipKey)
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{identityKeyFile, keyPEM, 0o600},
		{siteCertFile, trust.EncodeCertPEM(cert.Raw), 0o644},
		{caCertFile, trust.EncodeCertPEM(ca.Cert.Raw), 0o644},
		{gossipKeyFile, gossipKey, 0o600},
	}
	for _, f := range files {
		if err := wg.WriteFileAtomic(filepath.Join(o.Out, f.name), f.data, f.perm); err != nil {
			return nil, err
		}
	}
	entry := IssuedEntry{Site: o.Site, Serial: cert.Serial.Text(16), Overlay: ov.String(), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	for _, p := range req.Prefixes {
		entry.Prefixes = append(entry.Prefixes, p.String())
	}
	inv.Issued = append(inv.Issued, entry)
	if err := saveInventory(o.Dir, inv); err != nil {
		return nil, fmt.Errorf("certificate issued but the inventory was not updated (%w): the next issue will not know about it", err)
	}
	return cert, nil
}

func hostBits(addr string) string {
	if strings.Contains(addr, ":") {
		return "/128"
	}
	return "/32"
}

// CARevoke revokes every certificate of site, writes the CA's revocation list
// (all revocations so far) to dir/crl.pem and to out, and returns it.
func CARevoke(dir, site, out string, now time.Time) (*trust.RevocationList, error) {
	ca, inv, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	var prev *trust.RevocationList
	if raw, err := wg.ReadStateFile(filepath.Join(dir, crlFile), 4*trust.MaxCRLSize); err == nil {
		der, err := trust.ParseCRLPEM(raw)
		if err == nil {
			prev, err = trust.ParseRevocationList(der, []*x509.Certificate{ca.Cert})
		}
		if err != nil {
			return nil, fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, crlFile), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var serials []*big.Int
	for i, e := range inv.Issued {
		if e.Site != site || e.Revoked {
			continue
		}
		n, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("inventory: bad serial %q", e.Serial)
		}
		serials = append(serials, n)
		inv.Issued[i].Revoked = true
	}
	if len(serials) == 0 {
		return nil, fmt.Errorf("no certificate of site %q to revoke in %s (already revoked, or never issued by this CA)", site, dir)
	}
	crl, err := ca.Revoke(prev, serials, now, DefaultCertValidity)
	if err != nil {
		return nil, err
	}
	// --out first: if it fails, the CA directory is unchanged and the
	// command can simply be run again.
	pemCRL := trust.EncodeCRLPEM(crl.Raw)
	if err := wg.WriteFileAtomic(out, pemCRL, 0o644); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	if err := wg.WriteFileAtomic(filepath.Join(dir, crlFile), pemCRL, 0o644); err != nil {
		return nil, err
	}
	if err := saveInventory(dir, inv); err != nil {
		return nil, err
	}
	return crl, nil
}
