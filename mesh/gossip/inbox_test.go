package gossip

import (
	"runtime"
	"testing"
)

// The inbox held 1,024 payloads whatever their size: 1,024 push/pull states
// of 8 MiB are 8 GiB. Now states and messages each have a byte budget,
// released as the agent receives them.
func TestInboxBudget(t *testing.T) {
	g := newNode(t, "a", key(t))
	d := &delegate{g: g}
	runtime.GC()
	base := readMemory()
	check := func(what string) {
		t.Helper()
		if q := g.inbox.queuedBytes(); q > inboxStateBytes+inboxUserBytes {
			t.Fatalf("%s: %d bytes queued, over the budget", what, q)
		}
	}

	state := make([]byte, 4<<20) // trust.MaxStateSize
	for range 10 {
		d.MergeRemoteState(state, false)
		check("states")
	}
	if got := g.Dropped(); got.States != 7 || got.StateBytes != 7*4<<20 || got.Messages != 0 {
		t.Errorf("after 10 states of 4 MiB: %+v, want 7 dropped (12 MiB hold 3)", got)
	}
	msg := make([]byte, 16<<10) // trust.MaxRecordSize
	for range 1000 {
		d.NotifyMsg(msg)
		check("messages")
	}
	if got := g.Dropped(); got.Messages != 1000-512 || got.MessageBytes != (1000-512)*16<<10 {
		t.Errorf("after 1,000 messages of 16 KiB: %+v, want 488 dropped (8 MiB hold 512)", got)
	}
	runtime.GC()
	if grew := readMemory().live - base.live; grew > (inboxStateBytes+inboxUserBytes)*5/4 {
		t.Errorf("live heap grew by %d MiB, more than the budget", grew/mib)
	}

	// Receiving is all it takes to release a message's share.
	if m := <-g.Inbox(); m.Kind != MsgState {
		t.Fatalf("first message of kind %d", m.Kind)
	}
	d.MergeRemoteState(state, false)
	if got := g.Dropped(); got.States != 7 {
		t.Errorf("a state was dropped after one was received: %+v", got)
	}
	for len(g.Inbox()) > 0 {
		<-g.Inbox()
	}
	if q := g.inbox.queuedBytes(); q != 0 {
		t.Errorf("%d bytes still counted after draining", q)
	}

	// The counts bound small payloads: 768 messages, 256 states.
	for range inboxUsers + 10 {
		d.NotifyMsg([]byte("x"))
	}
	for range inboxStates + 10 {
		d.MergeRemoteState([]byte("s"), false)
	}
	if got := g.Dropped(); got.Messages != 488+10 || got.States != 7+10 {
		t.Errorf("count bounds: %+v", got)
	}
	if n := len(g.Inbox()); n != inboxSize {
		t.Errorf("%d queued, want %d", n, inboxSize)
	}
}
