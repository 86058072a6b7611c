package gossip

import (
	"slices"
	"sync"
)

// Inbox budgets, per kind so that neither can crowd out the other: a flood
// of states (each up to trust.MaxStateSize, 4 MiB) must not delay the acks
// of a key rotation, nor a flood of small messages the states.
//
// 12 MiB holds three states of the largest size or about twenty of a real
// 1,000-site cluster (0.6 MB); 8 MiB of user messages holds 768 (the count
// bound) of records well above their real size (~600 bytes). Together, 20
// MiB: an eighth of the agent's memory target under attack, for a queue that
// only smooths bursts — push/pull repeats everything, so a drop only delays
// convergence.
const (
	inboxSize       = 1024 // the channel; the two counts below add up to it
	inboxStates     = 256
	inboxStateBytes = 12 << 20
	inboxUsers      = inboxSize - inboxStates
	inboxUserBytes  = 8 << 20
)

// DropStats counts what the inbox and the joins queue dropped.
type DropStats struct {
	States       uint64 // push/pull states dropped: the state budget was spent
	StateBytes   uint64
	Messages     uint64 // broadcasts and direct messages dropped
	MessageBytes uint64
	Joins        uint64 // join notifications dropped: the agent did not take them
}

// inbox is a buffered channel of Messages with a byte budget. Only put
// sends on the channel, under mu, and it remembers the size of each message
// sent, in order; the channel is FIFO, so of the n messages sent and not yet
// known to be received, the first n - len(ch) have been. Their bytes are
// released at the next put: the receiver does nothing but receive.
type inbox struct {
	ch chan Message

	mu    sync.Mutex
	ring  [inboxSize]queued
	head  int
	n     int
	count [2]int // by kindIndex
	bytes [2]int
	drops DropStats
}

type queued struct {
	kind MsgKind
	size int
}

func newInbox() *inbox { return &inbox{ch: make(chan Message, inboxSize)} }

func kindIndex(k MsgKind) int {
	if k == MsgState {
		return 1
	}
	return 0
}

var inboxLimits = [2]struct{ count, bytes int }{{inboxUsers, inboxUserBytes}, {inboxStates, inboxStateBytes}}

// put queues a copy of b, or drops and counts it. It never blocks.
func (q *inbox) put(kind MsgKind, b []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reconcile()
	k := kindIndex(kind)
	if q.count[k] >= inboxLimits[k].count || q.bytes[k]+len(b) > inboxLimits[k].bytes {
		q.drop(kind, len(b))
		return false
	}
	select {
	case q.ch <- Message{Kind: kind, Data: slices.Clone(b)}:
	default: // cannot happen: the counts bound what is in the channel
		q.drop(kind, len(b))
		return false
	}
	q.ring[(q.head+q.n)%inboxSize] = queued{kind, len(b)}
	q.n++
	q.count[k]++
	q.bytes[k] += len(b)
	return true
}

// reconcile releases the messages the receiver has taken.
func (q *inbox) reconcile() {
	for taken := q.n - len(q.ch); taken > 0; taken-- {
		e := q.ring[q.head]
		q.head = (q.head + 1) % inboxSize
		q.n--
		k := kindIndex(e.kind)
		q.count[k]--
		q.bytes[k] -= e.size
	}
}

func (q *inbox) drop(kind MsgKind, size int) {
	if kind == MsgState {
		q.drops.States++
		q.drops.StateBytes += uint64(size)
	} else {
		q.drops.Messages++
		q.drops.MessageBytes += uint64(size)
	}
}

// queuedBytes is what waits in the channel (or was taken since the last put).
func (q *inbox) queuedBytes() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reconcile()
	return q.bytes[0] + q.bytes[1]
}

func (q *inbox) dropped() DropStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.drops
}
