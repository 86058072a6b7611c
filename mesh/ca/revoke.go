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

// Revoke revokes every certificate of site, of every gateway, writes the
// CA's revocation list (all revocations so far) to dir/crl.pem and to out,
// and returns it.
func Revoke(dir, site, out string, now time.Time) (*trust.RevocationList, error) {
	return revoke(dir, func(e *IssuedEntry) bool { return e.Site == site }, fmt.Sprintf("site %q", site), out, now)
}

// RevokeGateway is Revoke for the certificates of one gateway of a site
// only (gateway 0 included: the site's other gateways keep theirs).
func RevokeGateway(dir string, gw trust.GatewayID, out string, now time.Time) (*trust.RevocationList, error) {
	return revoke(dir, func(e *IssuedEntry) bool { return e.ID() == gw },
		fmt.Sprintf("gateway %d of site %q", gw.Gateway, gw.Site), out, now)
}

// revoke revokes the certificates of the inventory that match (what names
// them in the error when none is left to revoke).
func revoke(dir string, match func(*IssuedEntry) bool, what, out string, now time.Time) (*trust.RevocationList, error) {
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
		if !match(&e) || e.Revoked {
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
		return nil, fmt.Errorf("no certificate of %s to revoke in %s (already revoked, or never issued by this CA)", what, dir)
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
