package enroll

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Bounds on the files of an enrollment (read through wg.ReadRegularFile and
// ReadSecretFile, which also refuse FIFOs, devices and directories):
// generous multiples of what dcmesh writes, small enough that a wrong file
// costs nothing.
const (
	MaxPEMFileSize     = 1 << 20 // ca.crt (may pin several CAs), site.crt
	maxIdentityKeySize = 4096    // identity.key, PKCS#8 PEM: ~120 bytes
	MaxGossipKeySize   = 1024    // gossip.key, base64: 45 bytes
)

// GossipKeyLen is the size of the cluster gossip key (AES-256).
const GossipKeyLen = 32

// Enrollment is what `dcmesh ca issue` gave a site: the pinned CAs, its
// certificate and identity key, and the cluster's gossip key.
type Enrollment struct {
	CAs       []*x509.Certificate
	Cert      *trust.Certificate
	Identity  ed25519.PrivateKey
	GossipKey []byte // nil when not read (a site without gossip)
}

// File is one file of an enrollment: where it is, and what the caller calls
// it in errors (a configuration field for the agent, the bundle's file name
// for init).
type File struct {
	Path, Name string
}

// Files are an enrollment's files. A GossipKey without a Path is not read.
type Files struct {
	CA, Cert, Identity, GossipKey File
}

// BundleFiles are the files of a bundle directory (what `dcmesh ca issue
// --out` writes, and what init copies into a state directory).
func BundleFiles(dir string) Files {
	f := func(name string) File { return File{Path: filepath.Join(dir, name), Name: name} }
	return Files{CA: f(config.CACertFile), Cert: f(config.SiteCertFile), Identity: f(config.IdentityKeyFile), GossipKey: f(config.GossipKeyFile)}
}

// Contents are the bytes an enrollment's files held, for init to copy. The
// secrets are cleared with Clear.
type Contents struct {
	CA, Cert, Identity, GossipKey []byte
}

// Clear zeroes the secrets.
func (c *Contents) Clear() {
	clear(c.Identity)
	clear(c.GossipKey)
}

// Read reads and cross-checks an enrollment: the CAs parse, the certificate
// parses and chains to one of them and is valid at now (within skew), the
// identity key belongs to the certificate, and the gossip key is the one
// `dcmesh ca init` wrote. The caller clears the contents it does not keep.
func Read(f Files, now time.Time, skew time.Duration) (*Enrollment, *Contents, error) {
	var e Enrollment
	c := &Contents{}
	ok := false
	defer func() {
		if !ok {
			c.Clear()
		}
	}()
	var err error
	if c.CA, err = wg.ReadRegularFile(f.CA.Path, MaxPEMFileSize); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.CA.Name, err)
	}
	if e.CAs, err = trust.ParseCAPEM(c.CA); err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", f.CA.Name, f.CA.Path, err)
	}
	if c.Cert, err = wg.ReadRegularFile(f.Cert.Path, MaxPEMFileSize); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.Cert.Name, err)
	}
	if e.Cert, err = trust.ParseCertPEM(c.Cert); err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", f.Cert.Name, f.Cert.Path, err)
	}
	if err := e.Cert.Verify(e.CAs, nil, now, skew); err != nil {
		return nil, nil, fmt.Errorf("%s %s: this site's certificate is not usable (%w); issue a new one with `dcmesh ca issue`", f.Cert.Name, f.Cert.Path, err)
	}
	if c.Identity, err = wg.ReadSecretFile(f.Identity.Path, maxIdentityKeySize); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.Identity.Name, err)
	}
	if e.Identity, err = trust.ParseKeyPEM(c.Identity); err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", f.Identity.Name, f.Identity.Path, err)
	}
	if !e.Identity.Public().(ed25519.PublicKey).Equal(e.Cert.IdentityKey) {
		return nil, nil, fmt.Errorf("%s %s does not belong to the certificate %s (files from different bundles?)", f.Identity.Name, f.Identity.Path, f.Cert.Path)
	}
	if f.GossipKey.Path != "" {
		if c.GossipKey, err = wg.ReadSecretFile(f.GossipKey.Path, MaxGossipKeySize); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f.GossipKey.Name, err)
		}
		if e.GossipKey, err = decodeGossipKey(f.GossipKey.Path, c.GossipKey); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f.GossipKey.Name, err)
		}
	}
	ok = true
	return &e, c, nil
}

// ReadGossipKey reads a base64 gossip key file (0600).
func ReadGossipKey(path string) ([]byte, error) {
	raw, err := wg.ReadSecretFile(path, MaxGossipKeySize)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	return decodeGossipKey(path, raw)
}

func decodeGossipKey(path string, raw []byte) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(k) != GossipKeyLen {
		clear(k)
		return nil, fmt.Errorf("%s is corrupt: expected the base64 32-byte key written by `dcmesh ca init`", path)
	}
	return k, nil
}

// Load reads the enrollment the configuration names, checks it against the
// configuration, and fills cfg's overlay address and local prefixes from the
// certificate when the file leaves them out.
func Load(cfg *config.Config, now time.Time) (*Enrollment, error) {
	f := Files{
		CA:       File{cfg.Trust.CAFile, "trust.ca_file"},
		Cert:     File{cfg.Trust.CertFile, "trust.cert_file"},
		Identity: File{cfg.Trust.IdentityKeyFile, "trust.identity_key_file"},
	}
	if cfg.Gossip != nil {
		f.GossipKey = File{cfg.Gossip.KeyFile, "gossip.key_file"}
	}
	e, c, err := Read(f, now, cfg.Trust.ClockSkew)
	if err != nil {
		return nil, err
	}
	c.Clear()
	if e.Cert.Site != cfg.Site {
		return nil, fmt.Errorf("site: the config says %q but the certificate %s is for %q", cfg.Site, cfg.Trust.CertFile, e.Cert.Site)
	}
	switch {
	case !cfg.OverlayAddress.IsValid():
		cfg.OverlayAddress = config.Host(e.Cert.Overlay)
	case cfg.OverlayAddress.Addr() != e.Cert.Overlay:
		return nil, fmt.Errorf("overlay_address: the config says %s but the certificate gives %s", cfg.OverlayAddress, e.Cert.Overlay)
	}
	if len(cfg.LocalPrefixes) == 0 {
		cfg.LocalPrefixes = e.Cert.Prefixes
	}
	for i, p := range cfg.LocalPrefixes {
		if !config.ContainedIn(p, e.Cert.Prefixes) {
			return nil, fmt.Errorf("local_prefixes[%d]: %s is not in this site's certificate (%v); other sites would reject it", i, p, e.Cert.Prefixes)
		}
	}
	if err := checkEndpoints(cfg, e.Cert); err != nil {
		return nil, err
	}
	return e, nil
}

// ClusterName is the cluster a CA certifies, from its subject (trust.NewCA
// names CAs "dcmesh CA <cluster>").
func ClusterName(ca *x509.Certificate) string {
	return strings.TrimPrefix(ca.Subject.CommonName, "dcmesh CA ")
}
