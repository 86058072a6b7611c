package trust

import (
	"crypto/ed25519"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math"
)

// GossipKeyAck is a site's signed statement of the gossip keys it holds:
// during a gossip-key rotation every site switches to the new key only once
// every live site holds it, and removes the old one only once every live
// site sends with the new one. It is a message of its own rather than a
// field of the site record, so that sites of the previous version, which
// refuse records with fields they do not know, keep accepting this
// version's records; they drop a message kind they do not know.
type GossipKeyAck struct {
	// Site is the acking gateway's node name (GatewayID.String: the site
	// name for gateway 0, "fra1.1" for gateway 1): the gateways of a site
	// each hold the gossip keys.
	Site string
	// Seq orders a site's acks (the newest wins): NextSeq.
	Seq uint64
	// Epoch of the newest gossip-key bundle the site installed (0: none).
	Epoch uint64
	// Held names the keys held (GossipKeyID), the one it sends with first.
	Held []string
}

// Primary is the id of the key the site sends with.
func (a *GossipKeyAck) Primary() string {
	if len(a.Held) == 0 {
		return ""
	}
	return a.Held[0]
}

// Holds reports whether the site holds key id.
func (a *GossipKeyAck) Holds(id string) bool {
	for _, h := range a.Held {
		if h == id {
			return true
		}
	}
	return false
}

const gossipKeyAckSigContext = "dcmesh-gossip-key-ack-v1\x00"

// MaxGossipKeyAckSize bounds the input of VerifyGossipKeyAck.
const MaxGossipKeyAckSize = 512

// maxGossipKeysHeld is mesh/gossip.MaxKeys (trust does not import gossip).
const maxGossipKeysHeld = 2

type wireGossipKeyAck struct {
	Version int
	Site    string `asn1:"utf8"`
	Seq     int64
	Epoch   int64
	Held    [][]byte
}

// SignGossipKeyAck encodes a as DER SEQUENCE { body OCTET STRING, signature
// OCTET STRING }, body = SEQUENCE { version 1, site UTF8String, seq
// INTEGER, epoch INTEGER, held SEQUENCE OF OCTET STRING (8) }, signed with
// the site's identity key over "dcmesh-gossip-key-ack-v1\0" || body.
func SignGossipKeyAck(a GossipKeyAck, identity ed25519.PrivateKey) ([]byte, error) {
	if a.Seq > math.MaxInt64 || a.Epoch > math.MaxInt64 || !validNodeName(a.Site) {
		return nil, errors.New("gossip key ack: site name, sequence or epoch out of range")
	}
	if len(a.Held) == 0 || len(a.Held) > maxGossipKeysHeld {
		return nil, errors.New("gossip key ack: 1 or 2 keys held")
	}
	w := wireGossipKeyAck{Version: 1, Site: a.Site, Seq: int64(a.Seq), Epoch: int64(a.Epoch)}
	for _, id := range a.Held {
		b, err := hex.DecodeString(id)
		if err != nil || len(b) != gossipKeyIDSize {
			return nil, errors.New("gossip key ack: malformed key id")
		}
		w.Held = append(w.Held, b)
	}
	body, err := asn1.Marshal(w)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(identity, append([]byte(gossipKeyAckSigContext), body...))
	return asn1.Marshal(wireEnvelope{Body: body, Sig: sig})
}

// DecodeGossipKeyAck parses an ack without checking its signature: the
// receiver looks up the sender's identity key (from its record) by the
// site named, then calls VerifyGossipKeyAck.
func DecodeGossipKeyAck(b []byte) (*GossipKeyAck, error) {
	a, _, _, err := decodeGossipKeyAck(b)
	return a, err
}

// VerifyGossipKeyAck parses an ack and checks that identity signed it.
func VerifyGossipKeyAck(b []byte, identity ed25519.PublicKey) (*GossipKeyAck, error) {
	a, body, sig, err := decodeGossipKeyAck(b)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(identity, append([]byte(gossipKeyAckSigContext), body...), sig) {
		return nil, reject(ReasonSignature, "gossip key ack from %q not signed by its identity key", a.Site)
	}
	return a, nil
}

func decodeGossipKeyAck(b []byte) (*GossipKeyAck, []byte, []byte, error) {
	if len(b) > MaxGossipKeyAckSize {
		return nil, nil, nil, reject(ReasonDecode, "gossip key ack of %d bytes exceeds %d", len(b), MaxGossipKeyAckSize)
	}
	var env wireEnvelope
	if err := unmarshalCanonical(b, &env); err != nil {
		return nil, nil, nil, reject(ReasonDecode, "gossip key ack envelope: %v", err)
	}
	var w wireGossipKeyAck
	if err := unmarshalCanonical(env.Body, &w); err != nil {
		return nil, nil, nil, reject(ReasonDecode, "gossip key ack body: %v", err)
	}
	if w.Version != 1 || len(env.Sig) != ed25519.SignatureSize || w.Seq < 0 || w.Epoch < 0 ||
		!validNodeName(w.Site) || len(w.Held) == 0 || len(w.Held) > maxGossipKeysHeld {
		return nil, nil, nil, reject(ReasonDecode, "malformed gossip key ack")
	}
	a := &GossipKeyAck{Site: w.Site, Seq: uint64(w.Seq), Epoch: uint64(w.Epoch)}
	for _, id := range w.Held {
		if len(id) != gossipKeyIDSize {
			return nil, nil, nil, reject(ReasonDecode, "malformed gossip key ack: key id of %d bytes", len(id))
		}
		a.Held = append(a.Held, hex.EncodeToString(id))
	}
	return a, env.Body, env.Sig, nil
}
