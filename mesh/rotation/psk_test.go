package rotation

import (
	"crypto/mlkem"
	"testing"

	"github.com/dcmesh/dcmesh/wg"
)

// Both ends of a pair derive the same pre-shared key from one ML-KEM
// exchange, and any other input gives another key.
func TestDerivePSKAgrees(t *testing.T) {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	aNext, _ := wg.GeneratePrivateKey()
	b, _ := wg.GeneratePrivateKey()
	c, _ := wg.GeneratePrivateKey()

	secret, ct := dk.EncapsulationKey().Encapsulate() // the peer's side
	peerPSK, err := derivePSK(secret, aNext.Public(), b.Public())
	if err != nil {
		t.Fatal(err)
	}
	got, err := dk.Decapsulate(ct) // the rotating site's side
	if err != nil {
		t.Fatal(err)
	}
	sitePSK, _ := derivePSK(got, aNext.Public(), b.Public())
	if !sitePSK.Equal(peerPSK) || sitePSK.IsZero() {
		t.Fatal("the two ends derived different keys")
	}
	other, _ := derivePSK(got, aNext.Public(), c.Public())
	if other.Equal(peerPSK) {
		t.Error("another peer key gave the same pre-shared key")
	}
	secret2, _ := dk.EncapsulationKey().Encapsulate()
	fresh, _ := derivePSK(secret2, aNext.Public(), b.Public())
	if fresh.Equal(peerPSK) {
		t.Error("a second encapsulation gave the same key")
	}
}
