package trust

import (
	"crypto/ed25519"
	"encoding/asn1"
)

// SignRecordUnchecked signs without checking that the record's site is the
// certificate's, so tests can produce records CheckRecord must refuse.
func SignRecordUnchecked(r Record, key ed25519.PrivateKey) (*SignedRecord, error) {
	return signRecord(r, key, false)
}

// EncodeBody exposes the body encoder.
func EncodeBody(r *Record) ([]byte, error) { return encodeBody(r) }

// SealBody signs an arbitrary body and wraps it in an envelope, so tests
// can build validly signed but malformed records.
func SealBody(body []byte, key ed25519.PrivateKey) []byte {
	env, err := asn1.Marshal(wireEnvelope{Body: body, Sig: ed25519.Sign(key, signedMessage(body))})
	if err != nil {
		panic(err)
	}
	return env
}

// SplitEnvelope returns the body and signature of an encoded record.
func SplitEnvelope(b []byte) (body, sig []byte, err error) {
	var env wireEnvelope
	_, err = asn1.Unmarshal(b, &env)
	return env.Body, env.Sig, err
}

// GossipKeyBody and GossipKeyEntry expose the wire form of gossip key
// bundles, so tests can build validly signed but altered bundles.
type (
	GossipKeyBody  = wireGossipKeyBody
	GossipKeyEntry = wireGossipKeyEntry
)

// ResignGossipKeyBundle decodes der's body, lets mutate change it, and signs
// the result with key (which need not be the signer's).
func ResignGossipKeyBundle(der []byte, key ed25519.PrivateKey, mutate func(*GossipKeyBody)) []byte {
	var env wireGossipKeyEnvelope
	if _, err := asn1.Unmarshal(der, &env); err != nil {
		panic(err)
	}
	var body wireGossipKeyBody
	if _, err := asn1.Unmarshal(env.Body, &body); err != nil {
		panic(err)
	}
	mutate(&body)
	b, err := asn1.Marshal(body)
	if err != nil {
		panic(err)
	}
	out, err := asn1.Marshal(wireGossipKeyEnvelope{Body: b, Sig: ed25519.Sign(key, append([]byte(gossipKeySigContext), b...))})
	if err != nil {
		panic(err)
	}
	return out
}

// ResignGossipKeyBodyRaw lets mutate change the DER of der's body and signs
// the result with key.
func ResignGossipKeyBodyRaw(der []byte, key ed25519.PrivateKey, mutate func([]byte) []byte) []byte {
	var env wireGossipKeyEnvelope
	if _, err := asn1.Unmarshal(der, &env); err != nil {
		panic(err)
	}
	b := mutate(env.Body)
	out, err := asn1.Marshal(wireGossipKeyEnvelope{Body: b, Sig: ed25519.Sign(key, append([]byte(gossipKeySigContext), b...))})
	if err != nil {
		panic(err)
	}
	return out
}
