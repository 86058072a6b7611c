package wg

import (
	"encoding/base64"
	"errors"
	"fmt"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyLen is the length in bytes of WireGuard keys.
const KeyLen = wgtypes.KeyLen

// redacted is what a private key prints as, whatever the verb or logger.
const redacted = "(redacted)"

// PublicKey is a WireGuard (Curve25519) public key. Its text form is the
// standard base64 encoding used by wireguard-tools.
type PublicKey [KeyLen]byte

// ParsePublicKey parses the base64 form printed by `wg pubkey` and
// `dcmesh key public`.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := decodeKey(s)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey(k), nil
}

// String returns the base64 form.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns the first 8 characters of the base64 form, enough to tell keys
// apart in logs.
func (k PublicKey) Short() string { return k.String()[:8] }

// IsZero reports whether k is the all-zero key (unset).
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// MarshalText implements encoding.TextMarshaler.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// PrivateKey is a WireGuard private key. It never prints itself: String,
// GoString, every fmt verb and slog all render "(redacted)", and it refuses to
// be marshalled. The only ways out are WritePrivateKeyFile and the device
// configuration inside this package.
type PrivateKey struct{ secretKey }

// GeneratePrivateKey returns a new random private key.
func GeneratePrivateKey() (PrivateKey, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	return PrivateKey{secretKey{k: k}}, nil
}

// parsePrivateKey parses the base64 form. Errors never include the input.
func parsePrivateKey(s string) (PrivateKey, error) {
	k, err := decodeKey(s)
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey{secretKey{k: wgtypes.Key(k)}}, nil
}

// Public returns the public key that belongs to k.
func (k PrivateKey) Public() PublicKey { return PublicKey(k.k.PublicKey()) }

// Equal reports whether k and o are the same key, in constant time.
func (k PrivateKey) Equal(o PrivateKey) bool { return k.equal(o.secretKey) }

func (k PrivateKey) GoString() string { return "wg.PrivateKey" + redacted }

// encode returns the base64 form; only the key file writer uses it.
func (k PrivateKey) encode() string { return base64.StdEncoding.EncodeToString(k.k[:]) }

// ErrInvalidKey is returned for text that is not a base64 WireGuard key.
var ErrInvalidKey = errors.New("not a WireGuard key: want 44 characters of base64 encoding 32 bytes")

// decodeKey never puts its input into the error: the input may be a private
// key.
func decodeKey(s string) ([KeyLen]byte, error) {
	var k [KeyLen]byte
	if len(s) != base64.StdEncoding.EncodedLen(KeyLen) {
		return k, ErrInvalidKey
	}
	var buf [KeyLen + 1]byte // DecodedLen(44) is 33
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil || n != KeyLen {
		return k, ErrInvalidKey
	}
	copy(k[:], buf[:KeyLen])
	clear(buf[:])
	return k, nil
}
