package gossip

import "time"

// StreamLimits bounds what inbound gossip streams may cost before and while
// memberlist handles them. Zero fields take the defaults below. Addresses
// that are not a certified site's (nor this node's) — strangers — share half
// of MaxStreams and half of MaxInflightBytes, so they can never starve the
// certified sites.
type StreamLimits struct {
	// MaxStreams bounds the inbound streams being read or handled at once.
	MaxStreams int
	// MaxStreamsPerSource bounds those from one stranger address.
	MaxStreamsPerSource int
	// MaxStreamBytes bounds the encrypted length one stream may announce.
	MaxStreamBytes int
	// MaxInflightBytes bounds the announced (and decompressed) bytes of all
	// streams being read or handled, inbound and replies to our own dials.
	MaxInflightBytes int64
	// HeaderTimeout bounds the wait for a stream's label and length.
	HeaderTimeout time.Duration
	// StreamTimeout bounds reading a whole stream; memberlist's TCP timeout
	// of the profile (WAN 30 s, LAN 10 s) by default.
	StreamTimeout time.Duration
}

const (
	// DefaultMaxStreams: memberlist handles 128 push/pulls at once; 64
	// streams of any kind is several times what a cluster of a thousand
	// sites opens at once (one push/pull per node per interval).
	DefaultMaxStreams          = 64
	DefaultMaxStreamsPerSource = 4
	// DefaultMaxStreamBytes is the largest push/pull the agent can send:
	// a state of trust.MaxStateSize (4 MiB) that does not compress — LZW
	// makes random bytes 37% larger — plus the node list of 2,048 certified
	// and 1,024 other nodes (~0.3 MiB): 5.8 MiB. A real 1,000-site state is
	// about 0.6 MB (0.8 MB on the wire), 2,048 sites about 1.8 MB, so the
	// limit never cuts a real exchange; memory is bounded by the in-flight
	// budget, not by this.
	DefaultMaxStreamBytes = 6 << 20
	// DefaultMaxInflightBytes admits the largest push/pull the agent can
	// send, which is reserved twice, on the wire and decompressed (5.8 +
	// 4.3 MiB), or about seven real 1,000-site push/pulls at once.
	// memberlist's handling of an authenticated stream costs about 3.5
	// times what was reserved for it (see the package comment).
	DefaultMaxInflightBytes = 12 << 20
	DefaultHeaderTimeout    = 5 * time.Second
)

func (l StreamLimits) withDefaults(tcpTimeout time.Duration) StreamLimits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxStreamsPerSource <= 0 {
		l.MaxStreamsPerSource = DefaultMaxStreamsPerSource
	}
	if l.MaxStreamBytes <= 0 {
		l.MaxStreamBytes = DefaultMaxStreamBytes
	}
	if l.MaxInflightBytes <= 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = DefaultHeaderTimeout
	}
	if l.StreamTimeout <= 0 {
		l.StreamTimeout = tcpTimeout
	}
	return l
}

// reason is why an input was refused.
type reason uint8

const (
	reasonTooMany reason = iota
	reasonPerSource
	reasonTooLarge
	reasonBudget
	reasonTimeout
	reasonMalformed
	reasonUnauthenticated
	numReasons
)

func (r reason) String() string {
	return [...]string{"too many streams", "too many streams from one address", "too large",
		"byte budget spent", "too slow", "malformed", "not sealed with the gossip key"}[r]
}

// StreamStats counts gossip streams refused before memberlist read them.
type StreamStats struct {
	TooMany         uint64 // MaxStreams (or the strangers' half) reached
	PerSource       uint64 // MaxStreamsPerSource reached by a stranger address
	TooLarge        uint64 // announced more than MaxStreamBytes, or a header or decompression beyond its bound
	Budget          uint64 // the in-flight byte budget (or the strangers' half) could not hold it
	Timeout         uint64 // header or body not received in time
	Malformed       uint64 // no or another label, not encrypted, truncated, unexpected structure
	Unauthenticated uint64 // not sealed with the gossip key
	// BytesCut is what refused streams announced and were not allowed to
	// make memberlist buffer.
	BytesCut uint64
	// Active and InflightBytes are gauges: streams being read or handled,
	// and the bytes reserved for them.
	Active        int
	InflightBytes int64
}
