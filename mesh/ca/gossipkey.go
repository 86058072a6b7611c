package ca

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// GossipKeyEpochFile keeps the epoch of the last gossip-key bundle the CA
// sealed, so that the next one is newer (sites refuse a bundle not newer
// than the one they hold).
const GossipKeyEpochFile = "gossip-key-epoch.json"

// GossipKeyRotation is what RotateGossipKey sealed.
type GossipKeyRotation struct {
	Bundle *trust.GossipKeyBundle
	// Skipped names the sites left out and why (expired certificate).
	Skipped map[string]string
}

type gossipKeyEpoch struct {
	Epoch uint64 `json:"epoch"`
}

// RotateGossipKey makes a fresh cluster gossip key, seals it to every site
// of the inventory that is neither revoked nor expired (its newest
// certificate), under the next epoch, and writes the CA-signed bundle to
// out (0600, atomically). The key exists unsealed only in memory, and is
// erased before return. extra supplies certificates of sites issued by a
// version that did not keep them in the inventory (their site.crt).
func RotateGossipKey(dir, out string, extra []*trust.Certificate, now time.Time) (*GossipKeyRotation, error) {
	ca, inv, err := load(dir)
	if err != nil {
		return nil, err
	}
	certs, skipped, err := gossipKeyRecipients(ca, inv, extra, now)
	if err != nil {
		return nil, err
	}
	epochFile := filepath.Join(dir, GossipKeyEpochFile)
	last, err := loadGossipKeyEpoch(epochFile)
	if err != nil {
		return nil, err
	}
	epoch := trust.NextSeq(last, now)
	// The epoch is persisted before the bundle exists: it is never used twice.
	raw, _ := json.Marshal(gossipKeyEpoch{Epoch: epoch})
	if err := wg.WriteFileAtomic(epochFile, append(raw, '\n'), 0o600); err != nil {
		return nil, err
	}
	key := make([]byte, trust.GossipKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	b, err := trust.SealGossipKey(key, epoch, certs, ca, now)
	if err != nil {
		return nil, err
	}
	if err := wg.WriteFileAtomic(out, b.Raw, 0o600); err != nil {
		return nil, config.Optionf("Out", ": %w", err)
	}
	return &GossipKeyRotation{Bundle: b, Skipped: skipped}, nil
}

func loadGossipKeyEpoch(path string) (uint64, error) {
	raw, err := wg.ReadStateFile(path, 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var e gossipKeyEpoch
	if err := json.Unmarshal(raw, &e); err != nil || e.Epoch == 0 {
		return 0, fmt.Errorf("%s is corrupt (%v): it must hold the last epoch, {\"epoch\": N}", path, err)
	}
	return e.Epoch, nil
}

// gossipKeyRecipients picks each site's newest certificate that is not
// revoked; sites whose newest is expired are skipped (they cannot take part
// in gossip anyway) and reported.
func gossipKeyRecipients(ca *trust.CA, inv *Inventory, extra []*trust.Certificate, now time.Time) ([]*trust.Certificate, map[string]string, error) {
	newest := map[string]IssuedEntry{}
	for _, e := range inv.Issued {
		if e.Revoked {
			continue
		}
		if cur, ok := newest[e.Site]; !ok || e.NotBefore.After(cur.NotBefore) {
			newest[e.Site] = e
		}
	}
	bySerial := map[string]*trust.Certificate{}
	for _, c := range extra {
		if err := c.X509.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, nil, config.Optionf("Cert", " of site %s: not issued by this CA: %w", c.Site, err)
		}
		bySerial[c.Site+"/"+c.Serial.Text(16)] = c
	}
	var certs []*trust.Certificate
	var missing []string
	skipped := map[string]string{}
	for _, site := range sortedKeys(newest) {
		e := newest[site]
		if !now.Before(e.NotAfter) {
			skipped[site] = fmt.Sprintf("certificate %s expired %s", e.Serial, e.NotAfter.Format(time.RFC3339))
			continue
		}
		c := bySerial[site+"/"+e.Serial]
		if der := inv.Certificates[e.Serial]; c == nil && len(der) > 0 {
			var err error
			if c, err = trust.ParseCertificate(der); err != nil {
				return nil, nil, fmt.Errorf("CA inventory: the certificate of site %s: %w", site, err)
			}
		}
		if c == nil {
			missing = append(missing, fmt.Sprintf("%s (serial %s)", site, e.Serial))
			continue
		}
		certs = append(certs, c)
	}
	if len(missing) > 0 {
		return nil, nil, config.Optionf("Cert", ": the inventory holds no certificate of %s (issued by an older version): pass each site's site.crt with --cert FILE",
			strings.Join(missing, ", "))
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no site to seal the gossip key to: the inventory holds no certificate that is neither revoked nor expired")
	}
	return certs, skipped, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
