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
