package wg

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PresharedKey is a per-pair WireGuard pre-shared key: a symmetric secret
// mixed into every handshake of the pair, so that recorded traffic stays
// confidential even to someone who later breaks Curve25519. Like PrivateKey
// it never prints or marshals itself.
type PresharedKey struct{ secretKey }

// NewPresharedKey copies 32 bytes into a key.
func NewPresharedKey(b []byte) (PresharedKey, error) {
	if len(b) != KeyLen {
		return PresharedKey{}, fmt.Errorf("pre-shared key of %d bytes, want %d", len(b), KeyLen)
	}
	var k PresharedKey
	copy(k.k[:], b)
	return k, nil
}

// Equal compares in constant time.
func (k PresharedKey) Equal(o PresharedKey) bool { return k.equal(o.secretKey) }

func (k PresharedKey) GoString() string { return "wg.PresharedKey" + redacted }

// PresharedKeys maps a peer's public key to the pre-shared key of the pair.
type PresharedKeys map[PublicKey]PresharedKey

// LoadPresharedKeys reads a file written by SavePresharedKeys; a missing
// file is an empty set. The file must not be readable by group or others.
func LoadPresharedKeys(path string) (PresharedKeys, error) {
	raw, err := ReadSecretFile(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return PresharedKeys{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pre-shared keys: %w", err)
	}
	defer clear(raw)
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("pre-shared keys %s: %w (corrupt; remove it to run without pre-shared keys until the next rotation)", path, ErrCorruptKeyFile)
	}
	out := PresharedKeys{}
	for pub, b64 := range m {
		p, err1 := ParsePublicKey(pub)
		k, err2 := decodeKey(b64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("pre-shared keys %s: %w", path, ErrCorruptKeyFile)
		}
		out[p] = PresharedKey{secretKey{k: wgtypes.Key(k)}}
	}
	return out, nil
}

// SavePresharedKeys writes keys atomically, mode 0600.
func SavePresharedKeys(path string, keys PresharedKeys) error {
	m := make(map[string]string, len(keys))
	for p, k := range keys {
		if !k.IsZero() {
			m[p.String()] = base64.StdEncoding.EncodeToString(k.k[:])
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	defer clear(raw)
	return WriteFileAtomic(path, raw, 0o600)
}
