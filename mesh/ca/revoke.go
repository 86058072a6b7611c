package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"path/filepath"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Revoke revokes every certificate of site, writes the CA's revocation list
// (all revocations so far) to dir/crl.pem and to out, and returns it.
func Revoke(dir, site, out string, now time.Time) (*trust.RevocationList, error) {
	ca, inv, err := load(dir)
	if err != nil {
		return nil, err
	}
	prev, err := loadCRL(dir, ca)
	if err != nil {
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
	// out first: if it fails, the CA directory is unchanged and the
	// command can simply be run again.
	pemCRL := trust.EncodeCRLPEM(crl.Raw)
	if err := wg.WriteFileAtomic(out, pemCRL, 0o644); err != nil {
		return nil, config.Optionf("Out", ": %w", err)
	}
	if err := wg.WriteFileAtomic(filepath.Join(dir, CRLFile), pemCRL, 0o644); err != nil {
		return nil, err
	}
	if err := saveInventory(dir, inv); err != nil {
		return nil, err
	}
	return crl, nil
}

// loadCRL reads the CA's last revocation list, or nil if it has none.
func loadCRL(dir string, ca *trust.CA) (*trust.RevocationList, error) {
	raw, err := wg.ReadStateFile(filepath.Join(dir, CRLFile), 4*trust.MaxCRLSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	der, err := trust.ParseCRLPEM(raw)
	var prev *trust.RevocationList
	if err == nil {
		prev, err = trust.ParseRevocationList(der, []*x509.Certificate{ca.Cert})
	}
	if err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, CRLFile), err)
	}
	return prev, nil
}
