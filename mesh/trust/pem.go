package trust

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types, as openssl writes them.
const (
	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY"
	pemCRL  = "X509 CRL"
)

// GenerateIdentity creates a site identity key pair. The private key never
// leaves the site; the CA certifies the public key.
func GenerateIdentity() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: generating identity key: %w", err)
	}
	return pub, priv, nil
}

// EncodeCertPEM wraps a DER certificate (CA or site) in a PEM
// "CERTIFICATE" block.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

// EncodeCRLPEM wraps a DER revocation list in a PEM "X509 CRL" block.
func EncodeCRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: der})
}

// pemBlocks returns every PEM block in b. Text between blocks is allowed
// (openssl writes a human-readable dump before the block); at least one
// block is required.
func pemBlocks(b []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			break
		}
		blocks = append(blocks, blk)
		b = rest
	}
	if len(blocks) == 0 {
		return nil, errors.New("trust: no PEM block found")
	}
	return blocks, nil
}

// ParseCAPEM parses the pinned CA file: one or more CA certificates (several
// during a CA rollover). A file containing anything but CA certificates is
// refused, so that pinning a site certificate (or a key) by mistake fails
// loudly instead of trusting the wrong thing.
func ParseCAPEM(b []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(b)
	if err != nil {
		return nil, err
	}
	var cas []*x509.Certificate
	for i, blk := range blocks {
		if blk.Type != pemCert {
			return nil, fmt.Errorf("trust: CA file: block %d is %q, want %q", i+1, truncate(blk.Type, 32), pemCert)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust: CA file: block %d: %w", i+1, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("trust: CA file: block %d (%q) is not a CA certificate", i+1, truncate(c.Subject.CommonName, 64))
		}
		if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
			return nil, fmt.Errorf("trust: CA file: block %d: CA key is not Ed25519", i+1)
		}
		cas = append(cas, c)
	}
	return cas, nil
}

// ParseCertPEM parses a PEM file holding exactly one site certificate.
func ParseCertPEM(b []byte) (*Certificate, error) {
	blocks, err := pemBlocks(b)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 || blocks[0].Type != pemCert {
		return nil, fmt.Errorf("trust: want exactly one %q PEM block", pemCert)
	}
	return ParseCertificate(blocks[0].Bytes)
}

// ParseCRLPEM returns the DER of the single "X509 CRL" block in b. It does
// not verify the list: ParseRevocationList does, against the pinned CAs.
func ParseCRLPEM(b []byte) ([]byte, error) {
	blocks, err := pemBlocks(b)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 || blocks[0].Type != pemCRL {
		return nil, fmt.Errorf("trust: want exactly one %q PEM block", pemCRL)
	}
	return blocks[0].Bytes, nil
}

// EncodeKeyPEM encodes an Ed25519 private key (CA or identity) as an
// unencrypted PKCS#8 "PRIVATE KEY" block, the form openssl and most tools
// read. Protecting the file is the caller's job (mode 0600, offline CA).
func EncodeKeyPEM(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("trust: not an Ed25519 private key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, errors.New("trust: encoding private key failed")
	}
	out := pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der})
	clear(der)
	return out, nil
}

// ParseKeyPEM parses an Ed25519 private key in a PKCS#8 "PRIVATE KEY" block.
// Errors are fixed strings: they must never carry key bytes into a log, and
// the parser errors underneath make no such promise. The decoded DER is
// wiped after use.
func ParseKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("trust: no PEM block found in key file")
	}
	defer clear(blk.Bytes)
	if blk.Type != pemKey {
		return nil, fmt.Errorf("trust: key file holds a %q block, want %q (PKCS#8)", truncate(blk.Type, 32), pemKey)
	}
	if len(blk.Headers) != 0 {
		return nil, errors.New("trust: encrypted or annotated PEM keys are not supported")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, errors.New("trust: key file: malformed PKCS#8 private key")
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("trust: key file: not an Ed25519 private key")
	}
	return key, nil
}
