package records

// Kind is the first byte of a gossip user message: what the rest is.
// Every message the agent sends or takes goes through Encode and
// Decode.
type Kind byte

const (
	KindRecord    Kind = 'r' // a signed site record (also relayed)
	KindCRL       Kind = 'c' // a CA-signed revocation list (also relayed)
	KindAck       Kind = 'a' // a signed rotation acknowledgement, direct
	KindSwitching Kind = 's' // "switching keys now", direct: poll faster
	KindNudge     Kind = 'k' // "send me a keepalive", direct (confirm.go)
	// KindGossipKey is a CA-signed gossip-key bundle (trust.SealGossipKey),
	// relayed; KindGossipKeyAck a site's signed list of the gossip keys it
	// holds (trust.GossipKeyAck), relayed. Both are handed to the agent.
	KindGossipKey    Kind = 'g'
	KindGossipKeyAck Kind = 'h'
)

func (k Kind) String() string {
	switch k {
	case KindRecord:
		return "record"
	case KindCRL:
		return "crl"
	case KindAck:
		return "ack"
	case KindSwitching:
		return "switching"
	case KindNudge:
		return "nudge"
	case KindGossipKey:
		return "gossip-key"
	case KindGossipKeyAck:
		return "gossip-key-ack"
	}
	return "unknown"
}

// Encode frames payload as a message of kind k.
func Encode(k Kind, payload []byte) []byte {
	return append([]byte{byte(k)}, payload...)
}

// Decode splits a message into its kind and payload; ok is false for an
// empty message or an unknown kind.
func Decode(msg []byte) (k Kind, payload []byte, ok bool) {
	if len(msg) == 0 {
		return 0, nil, false
	}
	k = Kind(msg[0])
	switch k {
	case KindRecord, KindCRL, KindAck, KindSwitching, KindNudge, KindGossipKey, KindGossipKeyAck:
		return k, msg[1:], true
	}
	return 0, nil, false
}
