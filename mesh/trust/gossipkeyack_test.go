package trust

import (
	"crypto/ed25519"
	"errors"
	"testing"
)

func TestGossipKeyAckRoundTripAndRefusals(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	in := GossipKeyAck{Site: "east", Seq: 42, Epoch: 7, Held: []string{"0011223344556677", "8899aabbccddeeff"}}
	raw, err := SignGossipKeyAck(in, priv)
	if err != nil {
		t.Fatal(err)
	}
	a, err := VerifyGossipKeyAck(raw, pub)
	if err != nil {
		t.Fatal(err)
	}
	if a.Site != "east" || a.Seq != 42 || a.Epoch != 7 || a.Primary() != "0011223344556677" || !a.Holds("8899aabbccddeeff") || a.Holds("ffffffffffffffff") {
		t.Fatalf("round trip: %+v", a)
	}
	var re *RejectError
	if _, err := VerifyGossipKeyAck(raw, otherPub); !errors.As(err, &re) || re.Reason != ReasonSignature {
		t.Fatalf("foreign key: %v", err)
	}
	for n := range raw {
		if _, err := VerifyGossipKeyAck(raw[:n], pub); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	if _, err := VerifyGossipKeyAck(append(raw, 0), pub); err == nil {
		t.Fatal("trailing byte accepted")
	}
	for _, bad := range []GossipKeyAck{
		{Site: "east", Held: nil},
		{Site: "east", Held: []string{"00", "11", "22"}},
		{Site: "east", Held: []string{"not hex at all!!"}},
		{Site: "East!", Held: []string{"0011223344556677"}},
	} {
		if _, err := SignGossipKeyAck(bad, priv); err == nil {
			t.Errorf("%+v: signed", bad)
		}
	}
}
