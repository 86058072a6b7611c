package ca

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The certificate authority directory, on the operator's machine:
//
//	ca.key         CA private key (PKCS#8 PEM, 0600)
//	ca.crt         CA certificate (PEM): pinned by every agent
//	gossip.key     cluster gossip key (base64, 0600)
//	inventory.json every certificate issued, for overlap refusal and revocation
//	crl.pem        the latest revocation list
//
// ca.crt and gossip.key go into every bundle under the same names.
const (
	KeyFile       = "ca.key"
	CertFile      = config.CACertFile
	GossipKeyFile = config.GossipKeyFile
	InventoryFile = "inventory.json"
	CRLFile       = "crl.pem"
	// maxInventorySize bounds inventory.json: ~300 bytes per certificate.
	maxInventorySize = 64 << 20
	maxCAKeySize     = 8192
)

// DefaultCAValidity is how long a new CA certificate lasts.
const DefaultCAValidity = 10 * 365 * 24 * time.Hour

// DefaultCertValidity is how long a site certificate lasts.
const DefaultCertValidity = 365 * 24 * time.Hour

// DefaultCluster is the cluster name when Init is given none.
const DefaultCluster = "dcmesh"

// CertBackdate lets a fresh certificate be valid on sites whose clocks run
// a little behind the operator's.
const CertBackdate = time.Minute

// Inventory is the CA's record of what it issued.
type Inventory struct {
	Cluster string        `json:"cluster"`
	Issued  []IssuedEntry `json:"issued"`
	// Certificates are the certificates issued (DER), by serial (hex):
	// `ca gossip-key rotate` seals the new gossip key to their identity
	// keys. Inventories of older versions have none.
	Certificates map[string][]byte `json:"certificates,omitempty"`
}

// IssuedEntry is one certificate the CA signed.
type IssuedEntry struct {
	Site string `json:"site"`
	// Gateway is the certificate's gateway index among its site's (0: the
	// site's first or only gateway, and every entry of older versions).
	Gateway   uint8     `json:"gateway"`
	Serial    string    `json:"serial"` // hex
	Prefixes  []string  `json:"prefixes"`
	Overlay   string    `json:"overlay"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked,omitempty"`
	// Underlay and AllowDefault complete the authority a renewal is
	// compared with (reissue.go); absent in entries of older versions.
	Underlay     []string `json:"underlay,omitempty"`
	AllowDefault bool     `json:"allow_default,omitempty"`
}

// ID is the gateway the entry's certificate is for.
func (e *IssuedEntry) ID() trust.GatewayID { return trust.GatewayID{Site: e.Site, Gateway: e.Gateway} }

// live reports whether the entry's certificate is neither revoked nor
// expired at now.
func (e *IssuedEntry) live(now time.Time) bool { return !e.Revoked && !now.After(e.NotAfter) }

// Init creates a CA directory for cluster (DefaultCluster if empty). It
// refuses to touch a directory that already holds a CA.
func Init(dir, cluster string, now time.Time) error {
	if cluster == "" {
		cluster = DefaultCluster
	}
	if !trust.ValidSiteName(cluster) {
		return config.Optionf("Cluster", " %q: use lowercase letters, digits and '-'", cluster)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{KeyFile, CertFile, GossipKeyFile, InventoryFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s already holds a CA (%s exists): refusing to overwrite it", dir, f)
		}
	}
	ca, err := trust.NewCA(cluster, now.Add(-CertBackdate), now.Add(DefaultCAValidity))
	if err != nil {
		return err
	}
	keyPEM, err := trust.EncodeKeyPEM(ca.Key)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
	gk := make([]byte, enroll.GossipKeyLen)
	if _, err := rand.Read(gk); err != nil {
		return err
	}
	inv, _ := json.MarshalIndent(Inventory{Cluster: cluster, Issued: []IssuedEntry{}}, "", "  ")
	steps := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{KeyFile, keyPEM, 0o600},
		{CertFile, trust.EncodeCertPEM(ca.Cert.Raw), 0o644},
		{GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(gk) + "\n"), 0o600},
		{InventoryFile, inv, 0o600},
	}
	for _, s := range steps {
		if err := wg.WriteFileAtomic(filepath.Join(dir, s.name), s.data, s.perm); err != nil {
			return err
		}
	}
	return nil
}

// load reads the CA key and certificate, and the inventory, from dir.
func load(dir string) (*trust.CA, *Inventory, error) {
	certPEM, err := wg.ReadRegularFile(filepath.Join(dir, CertFile), enroll.MaxPEMFileSize)
	if err != nil {
		return nil, nil, config.Optionf("Dir", " %s is not a CA directory (create one with `dcmesh ca init`): %w", dir, err)
	}
	keyPEM, err := wg.ReadSecretFile(filepath.Join(dir, KeyFile), maxCAKeySize)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	ca, err := trust.LoadCA(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	raw, err := wg.ReadStateFile(filepath.Join(dir, InventoryFile), maxInventorySize)
	if err != nil {
		return nil, nil, fmt.Errorf("CA inventory: %w", err)
	}
	var inv Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		return nil, nil, fmt.Errorf("CA inventory %s is corrupt: %w", filepath.Join(dir, InventoryFile), err)
	}
	return ca, &inv, nil
}

func saveInventory(dir string, inv *Inventory) error {
	raw, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	return wg.WriteFileAtomic(filepath.Join(dir, InventoryFile), append(raw, '\n'), 0o600)
}
