package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/rand"
	"errors"
	"reflect"
	"testing"
)

func TestAckRoundTripAndTampering(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	a := Ack{From: "ams1", To: "fra1", Stage: AckPreinstalled, Seq: 42}
	a.Key[0] = 7
	b, err := SignAck(a, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyAck(b, pub)
	if err != nil || !reflect.DeepEqual(*got, a) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	var re *RejectError
	if _, err := VerifyAck(b, otherPub); !errors.As(err, &re) || re.Reason != ReasonSignature {
		t.Errorf("wrong identity: %v", err)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x01
		if _, err := VerifyAck(bad, pub); err == nil {
			t.Fatalf("flipping byte %d still verifies", i)
		}
	}
	if _, err := DecodeAck(append(bytes.Clone(b), 0)); err == nil {
		t.Error("trailing data accepted")
	}
	if _, err := DecodeAck(make([]byte, MaxAckSize+1)); err == nil {
		t.Error("oversized ack accepted")
	}
}

func FuzzDecodeAck(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b, _ := SignAck(Ack{From: "a", To: "b", Stage: AckCutOver, Seq: 1}, priv)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAck(b)
		if err == nil && (a.Stage != AckPreinstalled && a.Stage != AckCutOver) {
			t.Fatalf("decoded a bad stage %d", a.Stage)
		}
	})
}

func TestRecordAndAckCarryKEM(t *testing.T) {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	_, ct := dk.EncapsulationKey().Encapsulate()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b, err := SignAck(Ack{From: "a", To: "b", Stage: AckPreinstalled, Seq: 3, KEMCiphertext: ct}, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAck(b)
	if err != nil || !bytes.Equal(got.KEMCiphertext, ct) {
		t.Fatalf("ack ciphertext round trip: %v", err)
	}
	if _, err := SignAck(Ack{From: "a", To: "b", Stage: AckPreinstalled, KEMCiphertext: ct[:10]}, priv); err == nil {
		t.Error("a truncated ciphertext was signed")
	}
}
