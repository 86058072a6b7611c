// Package probe measures the health of the tunnels from the data plane: a
// Prober runs one BFD session (RFC 5880, asynchronous mode) with each
// remote gateway, between overlay addresses, so the probes travel inside
// WireGuard like the traffic they stand for. It reports, per peer, a state
// with an anti-flap hold, the round-trip time and the loss, for the agent to
// act on (nexthop groups, status, metrics). It imports no other dcmesh
// package.
//
// # Transport
//
// One UDP socket per Prober, bound to Config.Local (the gateway's overlay
// address) and Config.Port (DefaultPort, 3786, not an IANA BFD port: see
// there). Probes go to the same port on the remote overlay address and
// follow the kernel's route into the WireGuard device, kernel or wireguard-go
// TUN alike. The socket sets IP_FREEBIND, so it can be opened before the
// address is on the device. Packets leave with TTL (hop limit) 255 and, with
// Config.CheckTTL, arrive only with 255 (the GTSM rule of RFC 5881 §5; on
// Linux, where the socket reports it): WireGuard does not decrement the
// inner TTL, so a probe forwarded by a router - a host behind the remote
// gateway spoofing the gateway's overlay address - is dropped. One Prober
// speaks one address family.
//
// # Protocol
//
// Control packets follow RFC 5880 §4.1 exactly (24 bytes, version 1, no
// authentication section); ParsePacket applies the reception checks of
// §6.8.6 and drops what fails them, never panicking. Sessions are
// demultiplexed by Your Discriminator, or by source address while it is 0
// (Down, AdminDown); a discriminator arriving from another address than its
// session's is dropped. The state machine is §6.8.6's (Down → Init → Up,
// AdminDown). Each side transmits at the larger of its desired TX and the
// remote's required RX, each interval jittered to 75-100 % (§6.8.7); the
// detection time is the remote's multiplier times the remote's agreed
// interval (§6.8.4). While not Up a session advertises at least 1 s (§6.8.3),
// so a dead peer costs one packet a second; reaching Up it switches to
// Config.Interval and starts a Poll Sequence, as §6.8.3 requires for a
// changed interval. Those are the only parameter changes: a Prober's timers
// are fixed for its life (a new Interval means a new Prober). A Poll is
// answered with Final at once, from the receiving goroutine. A target removed
// with SetTargets, and every session when Run ends, sends AdminDown (diag 7),
// so the peer goes down at once rather than after its detection time.
//
// Wakeups, not packets, are most of what a Prober with many peers costs
// (an empty Go timer wakeup is about 0.18 ms of CPU on the project's 2-vCPU
// test machine), so a steady Prober wakes once per interval, not once per
// packet:
//
//   - Transmission rounds: the jitter is drawn once per round, so sessions
//     that transmitted together keep doing so, and a session due within a
//     tenth of its interval leaves with whatever woke the timer (never
//     earlier than the jitter floor), which pulls the others into the
//     round. Each session's intervals stay random within 75-100 %.
//   - Two sockets on one port (Linux): a classic BPF reuseport program puts
//     the steady packets (state Up, no Poll) into a socket outside Go's
//     poller that nothing waits on; the timer loop reads it each time it
//     wakes, and the kernel's receive timestamps keep detection, loss and
//     RTT exact. Polls and every packet that is not Up go to a socket with a
//     reader goroutine, handled at once: a Poll is answered with Final
//     immediately (the remote's RTT depends on it), a state change is acted
//     on immediately. What the two sockets hold is handled in arrival order.
//
// With 31 sessions at 200 ms that is about 6 timer wakeups a second plus one
// per remote Poll (one per peer every RTTInterval), against one per packet
// (about 380 a second) before.
//
// Before acting on an expired detection time the timer loop drains both
// sockets, so that packets which arrived in time while this process was
// starved of CPU are not taken for silence. If the loop woke more than half
// an interval late (the process, or the whole host, was stalled: the
// embedded WireGuard device in this process had not delivered the peer's
// packets either), an expired session
// gets one more interval to be heard, once per silence: a dead peer is
// still declared down, one interval after the wake. Stats reports how late
// the timer loop ran (LateTimers, MaxTimerDelay, StallGraces): a host too
// busy to run the prober on time shows there before it shows as flapping
// peers.
//
// # What is reported
//
// PeerState.State is the session state with an anti-flap hold: once a
// session that had been reported Up goes down, it is reported Up again only
// after its BFD state has stayed Up for Config.Hold (during the hold the
// reported state keeps its last value and HoldUntil says when the hold
// ends). A session that was never reported Up is reported Up at once, so a
// gateway that starts joins without delay. Session is the raw BFD state.
//
// RTT: control packets carry no timestamp, so the round trip is timed with
// a Poll Sequence every Config.RTTInterval: from the periodic packet that
// carries P to the Final that answers it. If the first P was lost and a
// second one left, the Final may answer either, and the sequence gives no
// sample (Karn's rule). The time includes the remote's time to answer, like
// ping. SRTT is the RFC 6298 moving average (1/8).
//
// Loss: the remote sends every agreed interval t, jittered to 0.75t-t, so
// the gap between two periodic packets (Final answers excluded) holds a
// known number of intervals: under 1.5t none lost, under 2.25t one, beyond
// that rounded against the mean 0.875t. Loss is lost / (received + lost)
// over Config.LossWindow (ten buckets), counted while the session is Up,
// including the gap still open (up to the last read of the sockets), so a
// peer that just fell silent shows loss before it is declared down. A packet later than half an interval counts
// as lost.
//
// # What it does not do
//
// No BFD authentication: WireGuard authenticates and source-validates every
// packet already; packets with the A bit are dropped. No Echo function
// (Required Min Echo RX is 0), no Demand mode of its own (a remote's request
// is honoured: periodic packets stop while both are Up), no multipoint. It
// is always the active role. The C bit is clear: the prober runs in the agent
// and shares its fate, so a hung or restarting agent looks dead to its peers
// (detection time, then their hold) even where a kernel device keeps
// forwarding. It does not speak RFC 5881 on the wire: source and
// destination port are both Config.Port, so a standard RFC 5881 speaker
// such as FRR's bfdd (port 3784) is not a peer without a compatibility
// option, which is not built. Just after a session
// comes up, until the remote's first fast packet arrives (about one
// interval), the detection time still follows the remote's 1 s Down-state
// interval. It programs nothing and decides nothing about routes.
package probe
