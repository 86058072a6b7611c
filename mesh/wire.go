package mesh

// msgKind is the first byte of a gossip user message: what the rest is.
// Every message the agent sends or takes goes through encodeMsg and
// decodeMsg.
type msgKind byte

const (
	kindRecord    msgKind = 'r' // a signed site record (also relayed)
	kindCRL       msgKind = 'c' // a CA-signed revocation list (also relayed)
	kindAck       msgKind = 'a' // a signed rotation acknowledgement, direct
	kindSwitching msgKind = 's' // "switching keys now", direct: poll faster
	kindNudge     msgKind = 'k' // "send me a keepalive", direct (confirm.go)
)

func (k msgKind) String() string {
	switch k {
	case kindRecord:
		return "record"
	case kindCRL:
		return "crl"
	case kindAck:
		return "ack"
	case kindSwitching:
		return "switching"
	case kindNudge:
		return "nudge"
	}
	return "unknown"
}

// encodeMsg frames payload as a message of kind k.
func encodeMsg(k msgKind, payload []byte) []byte {
	return append([]byte{byte(k)}, payload...)
}

// decodeMsg splits a message into its kind and payload; ok is false for an
// empty message or an unknown kind.
func decodeMsg(msg []byte) (k msgKind, payload []byte, ok bool) {
	if len(msg) == 0 {
		return 0, nil, false
	}
	k = msgKind(msg[0])
	switch k {
	case kindRecord, kindCRL, kindAck, kindSwitching, kindNudge:
		return k, msg[1:], true
	}
	return 0, nil, false
}
