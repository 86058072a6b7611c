package trust

// Gossip-key rotation hands a new cluster gossip key to every enrolled site
// without it ever travelling readable by a machine that is not one: the
// operator seals it, on the CA's machine, to each site's identity key with
// HPKE (RFC 9180) and signs the bundle with the CA key. Whoever relays the
// bundle — the control socket, a file copied around, gossip itself — learns
// nothing, and a holder of the old gossip key cannot inject a key of its own
// (it has no CA signature) nor replay an older bundle (epochs).
//
// # Sealing to an Ed25519 identity
//
// Site identity keys are Ed25519; HPKE's KEMs take X25519 (or P-256 or
// ML-KEM) keys. The identity key is converted: its public key through the
// birational map from edwards25519 to Curve25519 (u = (1+y)/(1-y)), its
// private key as the X25519 scalar Ed25519 itself uses (the first half of
// SHA-512 of the seed). This is what age does for ssh-ed25519 recipients and
// libsodium's crypto_sign_ed25519_*_to_curve25519; using one key pair for
// both Ed25519 and an X25519 KEM is analysed as safe by Thormarker, "On
// using the same key pair for Ed25519 and an X25519 based KEM" (2021).
//
// The alternatives were weighed and refused:
//
//   - an X25519 key in the certificate (a new extension): every site would
//     have to be re-issued, and re-enrol a second private key, before its
//     first rotation; a site with an older certificate could not receive;
//   - an ephemeral X25519 key, signed by the identity key, in each site's
//     record: forward secrecy, but the offline CA machine would first have
//     to collect fresh records from the running mesh, a site must have
//     published one, and the record format would change.
//
// Conversion needs nothing but the certificates the CA already issued, and
// the CA's signature on the certificate already binds the key to the site.
// What it does not give: forward secrecy (whoever later steals a site's
// identity key can open the bundles sealed to it — and can then impersonate
// the site anyway) and post-quantum confidentiality (X25519; the gossip key
// protects gossip, whose payloads are signed records, not secrets).
//
// # Format
//
// A bundle is DER (encoding/asn1), strict and canonical like site records:
//
//	GossipKeyBundle ::= SEQUENCE { body OCTET STRING, sig OCTET STRING }
//	Body ::= SEQUENCE {
//	    version  INTEGER (1),
//	    signer   OCTET STRING (8),  -- CAID of the CA that signed
//	    epoch    INTEGER (1..2^63-1),
//	    keyID    OCTET STRING (8),  -- GossipKeyID of the sealed key
//	    issuedAt INTEGER,           -- Unix seconds
//	    entries  SEQUENCE OF SEQUENCE {
//	        site     UTF8String,
//	        identity OCTET STRING (32),  -- the recipient's Ed25519 public key
//	        sealed   OCTET STRING (80) } -- HPKE enc (32) || ciphertext (32+16)
//	}
//
// sig is Ed25519 by the CA over "dcmesh-gossip-key-v1\x00" || body. Each
// entry is HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// AES-256-GCM, info "dcmesh gossip key v1\x00" || epoch (8 bytes, big
// endian) || keyID || identity || site, so an entry opens only as what the
// CA signed it for.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"filippo.io/edwards25519"
)

const (
	// GossipKeySize is the size of a cluster gossip key (AES-256).
	GossipKeySize = 32
	// MaxGossipKeyBundleSize bounds a bundle read from a file, the control
	// socket or the network: 2,048 recipients of ~180 bytes fit.
	MaxGossipKeyBundleSize = 512 << 10
	// MaxGossipKeyRecipients bounds the sites of one bundle.
	MaxGossipKeyRecipients = MaxStateRecords

	gossipKeyVersion    = 1
	gossipKeySigContext = "dcmesh-gossip-key-v1\x00"
	gossipKeyInfo       = "dcmesh gossip key v1\x00"
	gossipKeyIDSize     = 8
	caIDSize            = 8
	sealedSize          = 32 + GossipKeySize + 16 // enc, key, tag
)

// ErrStaleGossipKey is returned (wrapped) by OpenGossipKey for a bundle
// whose epoch is not newer than the last one installed: a replay.
var ErrStaleGossipKey = errors.New("gossip key bundle is not newer than the installed one")

// GossipKeyID names a gossip key in status output, logs and bundles: the
// first 8 bytes, in hex, of its SHA-256. It is safe to show (a 256-bit
// random key cannot be found from it) and mesh/gossip computes the same.
func GossipKeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:gossipKeyIDSize])
}

// GossipKeyBundle is a parsed, CA-signed bundle: one gossip key sealed to
// each of its recipients.
type GossipKeyBundle struct {
	Raw        []byte // DER
	Epoch      uint64 // strictly increasing per rotation
	KeyID      string // GossipKeyID of the sealed key
	IssuedAt   time.Time
	SignerID   string   // CAID of the CA that signed it
	Recipients []string // site names, in bundle order
	entries    []wireGossipKeyEntry
}

type (
	wireGossipKeyEnvelope struct {
		Body []byte
		Sig  []byte
	}
	wireGossipKeyBody struct {
		Version  int
		Signer   []byte
		Epoch    int64
		KeyID    []byte
		IssuedAt int64
		Entries  []wireGossipKeyEntry
	}
	wireGossipKeyEntry struct {
		Site     string `asn1:"utf8"`
		Identity []byte
		Sealed   []byte
	}
)

func gossipKeySuite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.AES256GCM() }

func gossipKeyEntryInfo(epoch uint64, keyID []byte, e *wireGossipKeyEntry) []byte {
	info := make([]byte, 0, len(gossipKeyInfo)+8+len(keyID)+len(e.Identity)+len(e.Site))
	info = append(info, gossipKeyInfo...)
	info = binary.BigEndian.AppendUint64(info, epoch)
	info = append(info, keyID...)
	info = append(info, e.Identity...)
	return append(info, e.Site...)
}

// identityKEMPublicKey converts an Ed25519 public key to the X25519 HPKE
// key of the same key pair. It refuses encodings that are not a point, and
// points of small order (whose X25519 shared secret is fixed).
func identityKEMPublicKey(pub ed25519.PublicKey) (hpke.PublicKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("identity key is not an Ed25519 public key")
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, errors.New("identity key is not a valid Ed25519 point")
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, errors.New("identity key is a point of small order")
	}
	x, err := ecdh.X25519().NewPublicKey(p.BytesMontgomery())
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	return hpke.NewDHKEMPublicKey(x)
}

// identityKEMPrivateKey derives the X25519 HPKE private key of an Ed25519
// key pair: the scalar Ed25519 signs with (X25519 clamps it the same way).
func identityKEMPrivateKey(identity ed25519.PrivateKey) (hpke.PrivateKey, error) {
	if len(identity) != ed25519.PrivateKeySize {
		return nil, errors.New("not an Ed25519 private key")
	}
	h := sha512.Sum512(identity.Seed())
	defer clear(h[:])
	x, err := ecdh.X25519().NewPrivateKey(h[:32])
	if err != nil {
		return nil, errors.New("deriving the X25519 key failed")
	}
	return hpke.NewDHKEMPrivateKey(x)
}

// SealGossipKey seals a new gossip key to each recipient's identity key and
// signs the bundle with the CA's key. epoch must be higher than that of any
// bundle sealed before (sites refuse older ones); NextSeq(last, now) gives a
// good one. Recipients are the enrolled sites' certificates: each must be in
// date at now, and no site or identity key may appear twice. The key itself
// never appears in the bundle, an error or a log; only its GossipKeyID does.
func SealGossipKey(key []byte, epoch uint64, recipients []*Certificate, ca *CA, now time.Time) (*GossipKeyBundle, error) {
	if err := ca.check(); err != nil {
		return nil, err
	}
	if len(key) != GossipKeySize {
		return nil, fmt.Errorf("trust: seal gossip key: key of %d bytes, want %d", len(key), GossipKeySize)
	}
	if epoch == 0 || epoch > math.MaxInt64 {
		return nil, errors.New("trust: seal gossip key: epoch must be 1 to 2^63-1")
	}
	if len(recipients) == 0 || len(recipients) > MaxGossipKeyRecipients {
		return nil, fmt.Errorf("trust: seal gossip key: %d recipients, want 1 to %d", len(recipients), MaxGossipKeyRecipients)
	}
	sum := sha256.Sum256(key)
	signer := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	body := wireGossipKeyBody{Version: gossipKeyVersion, Signer: signer[:caIDSize], Epoch: int64(epoch),
		KeyID: sum[:gossipKeyIDSize], IssuedAt: now.Unix()}
	kdf, aead := gossipKeySuite()
	sites, keys := map[string]bool{}, map[string]string{}
	for _, c := range recipients {
		if c == nil || c.X509 == nil {
			return nil, errors.New("trust: seal gossip key: nil recipient certificate")
		}
		if sites[c.Site] {
			return nil, fmt.Errorf("trust: seal gossip key: site %q listed twice", c.Site)
		}
		if other, ok := keys[string(c.IdentityKey)]; ok {
			return nil, fmt.Errorf("trust: seal gossip key: sites %q and %q have the same identity key", other, c.Site)
		}
		sites[c.Site], keys[string(c.IdentityKey)] = true, c.Site
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("trust: seal gossip key: the certificate of site %q expired %s: renew it, or leave the site out", c.Site, fmtTime(c.NotAfter))
		}
		pk, err := identityKEMPublicKey(c.IdentityKey)
		if err != nil {
			return nil, fmt.Errorf("trust: seal gossip key: site %q: %w", c.Site, err)
		}
		e := wireGossipKeyEntry{Site: c.Site, Identity: bytes.Clone(c.IdentityKey)}
		sealed, err := hpke.Seal(pk, kdf, aead, gossipKeyEntryInfo(epoch, body.KeyID, &e), key)
		if err != nil {
			return nil, fmt.Errorf("trust: seal gossip key: site %q: %w", c.Site, err)
		}
		e.Sealed = sealed
		body.Entries = append(body.Entries, e)
	}
	bodyDER, err := asn1.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("trust: seal gossip key: %w", err)
	}
	sig := ed25519.Sign(ca.Key, append([]byte(gossipKeySigContext), bodyDER...))
	der, err := asn1.Marshal(wireGossipKeyEnvelope{Body: bodyDER, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("trust: seal gossip key: %w", err)
	}
	b, err := ParseGossipKeyBundle(der, []*x509.Certificate{ca.Cert}, now)
	if err != nil {
		return nil, fmt.Errorf("trust: seal gossip key: the bundle does not parse: %w", err)
	}
	return b, nil
}

// ParseGossipKeyBundle decodes a bundle of at most MaxGossipKeyBundleSize
// bytes and checks its signature: by one of the pinned CAs, in date at now.
// Decoding is strict — canonical DER with no trailing data, version 1,
// every field of its fixed size, 1 to MaxGossipKeyRecipients entries,
// valid and distinct site names and identity keys — and refuses before the
// signature check anything that is not exactly what SealGossipKey writes.
// The input is not retained.
func ParseGossipKeyBundle(der []byte, cas []*x509.Certificate, now time.Time) (*GossipKeyBundle, error) {
	if len(der) == 0 {
		return nil, errors.New("trust: empty gossip key bundle")
	}
	if len(der) > MaxGossipKeyBundleSize {
		return nil, fmt.Errorf("trust: gossip key bundle of %d bytes exceeds %d", len(der), MaxGossipKeyBundleSize)
	}
	var env wireGossipKeyEnvelope
	if rest, err := asn1.Unmarshal(der, &env); err != nil || len(rest) != 0 {
		return nil, errors.New("trust: gossip key bundle: malformed envelope")
	}
	if again, err := asn1.Marshal(env); err != nil || !bytes.Equal(again, der) {
		return nil, errors.New("trust: gossip key bundle: envelope not in canonical DER")
	}
	if len(env.Sig) != ed25519.SignatureSize {
		return nil, errors.New("trust: gossip key bundle: malformed signature")
	}
	body, err := decodeGossipKeyBody(env.Body)
	if err != nil {
		return nil, fmt.Errorf("trust: gossip key bundle: %w", err)
	}
	signer := hex.EncodeToString(body.Signer)
	var ca *x509.Certificate
	for _, c := range cas {
		if c != nil && c.IsCA && c.BasicConstraintsValid && CAID(c) == signer {
			ca = c
			break
		}
	}
	if ca == nil {
		return nil, fmt.Errorf("trust: gossip key bundle signed by CA %s, which is not pinned", signer)
	}
	pub, ok := ca.PublicKey.(ed25519.PublicKey)
	if !ok || !ed25519.Verify(pub, append([]byte(gossipKeySigContext), env.Body...), env.Sig) {
		return nil, fmt.Errorf("trust: gossip key bundle: signature of CA %s invalid", signer)
	}
	if r := checkValidity(now, 0, ca.NotBefore, ca.NotAfter); r != "" {
		return nil, fmt.Errorf("trust: gossip key bundle: CA %s that signed it is valid %s to %s, now %s",
			signer, fmtTime(ca.NotBefore), fmtTime(ca.NotAfter), fmtTime(now))
	}
	b := &GossipKeyBundle{Raw: bytes.Clone(der), Epoch: uint64(body.Epoch), KeyID: hex.EncodeToString(body.KeyID),
		IssuedAt: time.Unix(body.IssuedAt, 0).UTC(), SignerID: signer, entries: body.Entries}
	for _, e := range body.Entries {
		b.Recipients = append(b.Recipients, e.Site)
	}
	return b, nil
}

// decodeGossipKeyBody decodes and checks a bundle's body (not its
// signature).
func decodeGossipKeyBody(der []byte) (*wireGossipKeyBody, error) {
	var body wireGossipKeyBody
	if rest, err := asn1.Unmarshal(der, &body); err != nil || len(rest) != 0 {
		return nil, errors.New("malformed body")
	}
	if again, err := asn1.Marshal(body); err != nil || !bytes.Equal(again, der) {
		return nil, errors.New("body not in canonical DER")
	}
	switch {
	case body.Version != gossipKeyVersion:
		return nil, fmt.Errorf("version %d, want %d", body.Version, gossipKeyVersion)
	case len(body.Signer) != caIDSize:
		return nil, errors.New("malformed signer id")
	case body.Epoch <= 0:
		return nil, errors.New("epoch not positive")
	case len(body.KeyID) != gossipKeyIDSize:
		return nil, errors.New("malformed key id")
	case body.IssuedAt <= 0:
		return nil, errors.New("issue time not positive")
	case len(body.Entries) == 0 || len(body.Entries) > MaxGossipKeyRecipients:
		return nil, fmt.Errorf("%d recipients, want 1 to %d", len(body.Entries), MaxGossipKeyRecipients)
	}
	sites, keys := map[string]bool{}, map[string]bool{}
	for i, e := range body.Entries {
		switch {
		case !ValidSiteName(e.Site):
			return nil, fmt.Errorf("entry %d: invalid site name %q", i+1, truncate(e.Site, 64))
		case sites[e.Site]:
			return nil, fmt.Errorf("entry %d: site %q listed twice", i+1, e.Site)
		case len(e.Identity) != ed25519.PublicKeySize:
			return nil, fmt.Errorf("entry %d (%s): malformed identity key", i+1, e.Site)
		case keys[string(e.Identity)]:
			return nil, fmt.Errorf("entry %d (%s): identity key listed twice", i+1, e.Site)
		case len(e.Sealed) != sealedSize:
			return nil, fmt.Errorf("entry %d (%s): sealed key of %d bytes, want %d", i+1, e.Site, len(e.Sealed), sealedSize)
		}
		sites[e.Site], keys[string(e.Identity)] = true, true
	}
	return &body, nil
}

// OpenGossipKey opens the gossip key sealed in b to the site whose identity
// key is identity. It refuses a bundle whose epoch is not above lastEpoch,
// the epoch of the bundle last installed (ErrStaleGossipKey: a replay; 0
// before the first rotation), one not sealed to this identity, and one
// whose content does not match its key id. b must come from
// ParseGossipKeyBundle (or SealGossipKey), which checked the CA's
// signature. A retried delivery of the bundle already installed is the
// caller's to recognise (same Epoch and KeyID) before calling.
func OpenGossipKey(b *GossipKeyBundle, identity ed25519.PrivateKey, lastEpoch uint64) ([]byte, error) {
	if b == nil || b.entries == nil {
		return nil, errors.New("trust: open gossip key: bundle not parsed")
	}
	if b.Epoch <= lastEpoch {
		return nil, fmt.Errorf("trust: open gossip key: %w (epoch %d, installed %d)", ErrStaleGossipKey, b.Epoch, lastEpoch)
	}
	if len(identity) != ed25519.PrivateKeySize {
		return nil, errors.New("trust: open gossip key: identity is not an Ed25519 private key")
	}
	pub := identity.Public().(ed25519.PublicKey)
	var entry *wireGossipKeyEntry
	for i := range b.entries {
		if pub.Equal(ed25519.PublicKey(b.entries[i].Identity)) {
			entry = &b.entries[i]
			break
		}
	}
	if entry == nil {
		return nil, fmt.Errorf("trust: open gossip key: this site's identity key is not a recipient of bundle epoch %d (%d sites)", b.Epoch, len(b.entries))
	}
	priv, err := identityKEMPrivateKey(identity)
	if err != nil {
		return nil, fmt.Errorf("trust: open gossip key: %w", err)
	}
	keyID, _ := hex.DecodeString(b.KeyID)
	kdf, aead := gossipKeySuite()
	key, err := hpke.Open(priv, kdf, aead, gossipKeyEntryInfo(b.Epoch, keyID, entry), entry.Sealed)
	if err != nil {
		return nil, fmt.Errorf("trust: open gossip key: the entry of site %q does not open with this identity key", entry.Site)
	}
	if len(key) != GossipKeySize || GossipKeyID(key) != b.KeyID {
		clear(key)
		return nil, fmt.Errorf("trust: open gossip key: the key sealed for site %q does not match key id %s", entry.Site, b.KeyID)
	}
	return key, nil
}
