package trust

import (
	"crypto/ed25519"
	"crypto/mlkem"
	"encoding/asn1"
	"errors"

	"github.com/dcmesh/dcmesh/wg"
)

// AckStage says how far a peer has got with another site's new key.
type AckStage int

const (
	// AckPreinstalled: the peer holds the new key, with no allowed IPs, and
	// will accept a handshake from it. The rotating site switches once every
	// live peer said so.
	AckPreinstalled AckStage = 1
	// AckCutOver: the peer routes the site's prefixes to the new key and has
	// dropped the old one.
	AckCutOver AckStage = 2
)

// Ack is a peer's signed statement about a rotating site's new key. It
// travels directly (TCP) from the peer to the rotating site.
type Ack struct {
	From  string       // the acknowledging gateway's node name (GatewayID.String)
	To    string       // the rotating gateway's node name
	Key   wg.PublicKey // the rotating site's new key
	Stage AckStage
	Seq   uint64 // the rotating site's record sequence that announced Key
	// KEMCiphertext, on a pre-install ack, encapsulates the pair's new
	// pre-shared key to the rotating site's announced KEM key.
	KEMCiphertext []byte
}

const ackSigContext = "dcmesh-ack-v1\x00"

// MaxAckSize bounds the input of DecodeAck and VerifyAck.
const MaxAckSize = 4096

type wireAck struct {
	Version int
	From    string `asn1:"utf8"`
	To      string `asn1:"utf8"`
	Key     []byte
	Stage   int
	Seq     int64
	KEMCT   []byte
}

// SignAck encodes a as DER SEQUENCE { body OCTET STRING, signature OCTET
// STRING }, body = SEQUENCE { version 1, from UTF8String, to UTF8String,
// key OCTET STRING (32), stage INTEGER, seq INTEGER }, signed with the
// acknowledging site's identity key over "dcmesh-ack-v1\0" || body.
func SignAck(a Ack, identity ed25519.PrivateKey) ([]byte, error) {
	if a.Seq > 1<<63-1 {
		return nil, errors.New("ack sequence out of range")
	}
	if len(a.KEMCiphertext) != 0 && len(a.KEMCiphertext) != mlkem.CiphertextSize768 {
		return nil, errors.New("ack: bad ML-KEM ciphertext length")
	}
	body, err := asn1.Marshal(wireAck{Version: 1, From: a.From, To: a.To, Key: a.Key[:], Stage: int(a.Stage), Seq: int64(a.Seq), KEMCT: nonNil(a.KEMCiphertext)})
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(identity, append([]byte(ackSigContext), body...))
	return asn1.Marshal(wireEnvelope{Body: body, Sig: sig})
}

// DecodeAck parses an ack without checking its signature: the receiver first
// needs the sender's identity key (from its record), then calls VerifyAck.
func DecodeAck(b []byte) (*Ack, error) {
	a, _, _, err := decodeAck(b)
	return a, err
}

// VerifyAck parses an ack and checks that identity signed it.
func VerifyAck(b []byte, identity ed25519.PublicKey) (*Ack, error) {
	a, body, sig, err := decodeAck(b)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(identity, append([]byte(ackSigContext), body...), sig) {
		return nil, reject(ReasonSignature, "ack from %q not signed by its identity key", a.From)
	}
	return a, nil
}

func decodeAck(b []byte) (*Ack, []byte, []byte, error) {
	if len(b) > MaxAckSize {
		return nil, nil, nil, reject(ReasonDecode, "ack of %d bytes exceeds %d", len(b), MaxAckSize)
	}
	var env wireEnvelope
	if err := unmarshalCanonical(b, &env); err != nil {
		return nil, nil, nil, reject(ReasonDecode, "ack envelope: %v", err)
	}
	var w wireAck
	if err := unmarshalCanonical(env.Body, &w); err != nil {
		return nil, nil, nil, reject(ReasonDecode, "ack body: %v", err)
	}
	if w.Version != 1 || len(w.Key) != wg.KeyLen || len(env.Sig) != ed25519.SignatureSize || w.Seq < 0 ||
		(w.Stage != int(AckPreinstalled) && w.Stage != int(AckCutOver)) || len(w.From) > maxNodeName || len(w.To) > maxNodeName ||
		(len(w.KEMCT) != 0 && len(w.KEMCT) != mlkem.CiphertextSize768) {
		return nil, nil, nil, reject(ReasonDecode, "malformed ack")
	}
	a := &Ack{From: w.From, To: w.To, Stage: AckStage(w.Stage), Seq: uint64(w.Seq)}
	if len(w.KEMCT) > 0 {
		a.KEMCiphertext = w.KEMCT
	}
	copy(a.Key[:], w.Key)
	return a, env.Body, env.Sig, nil
}
