package trust

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
)

// The X25519 key derived from an Ed25519 public key is the public half of
// the one derived from its private key: sealing to a certificate's key
// reaches the site that holds the identity.
func TestIdentityKEMKeysMatch(t *testing.T) {
	for range 20 {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		pk, err := identityKEMPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := identityKEMPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pk.Bytes(), sk.PublicKey().Bytes()) {
			t.Fatalf("public %x, derived from private %x", pk.Bytes(), sk.PublicKey().Bytes())
		}
	}
}

func TestIdentityKEMPublicKeyRefusesBadPoints(t *testing.T) {
	identity := make([]byte, 32)
	identity[0] = 1 // y = 1: the neutral element
	order2 := bytes.Repeat([]byte{0xff}, 32)
	order2[0], order2[31] = 0xec, 0x7f // y = -1: a point of order 2
	notPoint := make([]byte, 32)
	notPoint[0] = 2 // y = 2: no x puts it on the curve
	for name, tc := range map[string]struct {
		key  []byte
		want string
	}{
		"neutral":     {identity, "small order"},
		"order 2":     {order2, "small order"},
		"not a point": {notPoint, "not a valid Ed25519 point"},
		"short":       {identity[:31], "not an Ed25519 public key"},
	} {
		if _, err := identityKEMPublicKey(tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
