package mesh

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Bounds on the enrollment and state files the agent and `dcmesh init` read
// (through wg.ReadRegularFile, ReadStateFile and ReadSecretFile, which also
// refuse FIFOs, devices and directories): generous multiples of what dcmesh
// writes, small enough that a wrong file costs nothing.
const (
	maxPEMFileSize     = 1 << 20 // ca.crt (may pin several CAs), site.crt
	maxIdentityKeySize = 4096    // identity.key, PKCS#8 PEM: ~120 bytes
	maxGossipKeySize   = 1024    // gossip.key, base64: 45 bytes
	maxSeqFileSize     = 4096    // seq.json: {"seq":N}
)

// enrollment is what `dcmesh ca issue` gave this site: the pinned CA, its
// certificate and identity key, and the cluster's gossip key.
type enrollment struct {
	cas       []*x509.Certificate
	cert      *trust.Certificate
	identity  ed25519.PrivateKey
	gossipKey []byte
}

// loadEnrollment reads and cross-checks the bundle files named in cfg, and
// fills cfg's overlay address and local prefixes from the certificate when
// the file leaves them out.
func loadEnrollment(cfg *config.Config, now time.Time) (*enrollment, error) {
	var e enrollment
	raw, err := wg.ReadRegularFile(cfg.Trust.CAFile, maxPEMFileSize)
	if err != nil {
		return nil, fmt.Errorf("trust.ca_file: %w", err)
	}
	if e.cas, err = trust.ParseCAPEM(raw); err != nil {
		return nil, fmt.Errorf("trust.ca_file %s: %w", cfg.Trust.CAFile, err)
	}
	if raw, err = wg.ReadRegularFile(cfg.Trust.CertFile, maxPEMFileSize); err != nil {
		return nil, fmt.Errorf("trust.cert_file: %w", err)
	}
	if e.cert, err = trust.ParseCertPEM(raw); err != nil {
		return nil, fmt.Errorf("trust.cert_file %s: %w", cfg.Trust.CertFile, err)
	}
	if err := e.cert.Verify(e.cas, nil, now, cfg.Trust.ClockSkew); err != nil {
		return nil, fmt.Errorf("trust.cert_file %s: this site's certificate is not usable (%w); issue a new one with `dcmesh ca issue`", cfg.Trust.CertFile, err)
	}
	if e.cert.Site != cfg.Site {
		return nil, fmt.Errorf("site: the config says %q but the certificate %s is for %q", cfg.Site, cfg.Trust.CertFile, e.cert.Site)
	}
	keyPEM, err := wg.ReadSecretFile(cfg.Trust.IdentityKeyFile, maxIdentityKeySize)
	if err != nil {
		return nil, fmt.Errorf("trust.identity_key_file: %w", err)
	}
	e.identity, err = trust.ParseKeyPEM(keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("trust.identity_key_file %s: %w", cfg.Trust.IdentityKeyFile, err)
	}
	if !e.identity.Public().(ed25519.PublicKey).Equal(e.cert.IdentityKey) {
		return nil, fmt.Errorf("trust.identity_key_file %s does not belong to the certificate %s", cfg.Trust.IdentityKeyFile, cfg.Trust.CertFile)
	}
	if cfg.Gossip != nil {
		if e.gossipKey, err = readGossipKey(cfg.Gossip.KeyFile); err != nil {
			return nil, fmt.Errorf("gossip.key_file: %w", err)
		}
	}
	ov := netip.PrefixFrom(e.cert.Overlay, e.cert.Overlay.BitLen())
	switch {
	case !cfg.OverlayAddress.IsValid():
		cfg.OverlayAddress = ov
	case cfg.OverlayAddress.Addr() != e.cert.Overlay:
		return nil, fmt.Errorf("overlay_address: the config says %s but the certificate gives %s", cfg.OverlayAddress, e.cert.Overlay)
	}
	if len(cfg.LocalPrefixes) == 0 {
		cfg.LocalPrefixes = e.cert.Prefixes
	}
	for i, p := range cfg.LocalPrefixes {
		if !coveredBy(p, e.cert.Prefixes) {
			return nil, fmt.Errorf("local_prefixes[%d]: %s is not in this site's certificate (%v); other sites would reject it", i, p, e.cert.Prefixes)
		}
	}
	return &e, nil
}

func coveredBy(p netip.Prefix, by []netip.Prefix) bool {
	for _, b := range by {
		if b.Bits() <= p.Bits() && b.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// GossipKeyLen is the size of the cluster gossip key (AES-256).
const GossipKeyLen = 32

// readGossipKey reads a base64 gossip key file (0600).
func readGossipKey(path string) ([]byte, error) {
	raw, err := wg.ReadSecretFile(path, maxGossipKeySize)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(k) != GossipKeyLen {
		return nil, fmt.Errorf("%s is corrupt: expected the base64 32-byte key written by `dcmesh ca init`", path)
	}
	return k, nil
}

// seqState is the persisted sequence number of this site's own record: it
// must never go backwards, or other sites would take a fresh record for a
// replay.
type seqState struct {
	Seq uint64 `json:"seq"`
}

func loadSeq(path string) (uint64, error) {
	raw, err := wg.ReadStateFile(path, maxSeqFileSize)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var s seqState
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("state file %s is corrupt (%v); move it away to start over (the next record then uses the clock as its sequence number)", path, err)
	}
	return s.Seq, nil
}

func saveSeq(path string, seq uint64) error {
	raw, _ := json.Marshal(seqState{Seq: seq})
	return wg.WriteFileAtomic(path, raw, 0o600)
}
