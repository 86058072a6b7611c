// Package gossip carries dcmesh's signed site records between sites with
// hashicorp/memberlist: discovery, push/pull anti-entropy, named broadcasts and
// direct messages, encrypted with the cluster's gossip key.
//
// It moves opaque bytes. Whether a payload is believed is for package trust
// and the agent to decide: memberlist's security model trusts whoever holds
// the gossip key, so gossip gives connectivity, not authority. Membership
// state (alive, suspect, dead) is reported but never acted on here: liveness
// is not authority, and the data plane keeps running through a control-plane
// partition.
//
// # Threat model and bounds
//
// An attacker on the underlay can reach the gossip port; any one compromised
// machine may hold the gossip key. What holds:
//
//   - Nothing unauthenticated reaches memberlist. A transport wrapped around
//     memberlist's own (transport.go, screen.go) reads each inbound stream's
//     label and encryption header itself, reserves the announced length from
//     a byte budget, reads the ciphertext into a buffer of exactly that size
//     and checks its AES-GCM tag with the gossip key (any key of the keyring:
//     two during a rotation, when the check needs a second buffer of the
//     stream's size, reserved from the same budget) before memberlist sees a
//     byte. UDP datagrams are authenticated the same way, refused above 8 KiB
//     (memberlist fills them to 1,400 bytes) and handed over as a copy of
//     their size, not in memberlist's 64 KiB read buffer. A peer without the
//     key therefore costs at most the bytes it announced, while it sends them,
//     within these limits (StreamLimits; defaults): 64 streams at once (32 from
//     addresses that are not a certified site's, 4 per such address), 6 MiB
//     per stream, 12 MiB in flight across all streams (6 MiB for uncertified
//     addresses, so strangers can never starve certified sites), the header
//     within 5 s and the stream within memberlist's TCP timeout. Streams over
//     a limit are closed at once and counted (Refused); garbage is counted
//     (Malformed) and logged rate-limited.
//   - A key holder cannot make memberlist allocate far beyond what it sends:
//     the same check decompresses (counting, not keeping) and refuses streams
//     that expand beyond 5 MiB, push/pull headers announcing more nodes or
//     user-state bytes than they carry, nested or oversized datagrams, and
//     the padded encryption version whose bad padding panics memberlist.
//     What memberlist then does with an authenticated stream costs about 3.5
//     times what was reserved for it (its size plus what it decompresses to):
//     a push/pull of the largest state, 10 MiB reserved, ~35 MiB while it is
//     handled; a key holder that is no certified site shares the strangers'
//     half of the budget. Measured on a real agent (cmd/dcmesh
//     TestAttackLargeStates): a key holder pushing 4 MiB states that do not
//     compress, ten times a second: 89 MB RSS at the peak. (With the earlier
//     limits of 8 MiB states and a 24 MiB budget, eight such key holders took
//     a node to 240 MB.) Without the key, 100 connections announcing 4 MiB
//     and 20 MB streams: at most 16 MiB more live heap (TestStreamFlood…),
//     34 MB RSS for a whole agent (TestAttackStreamMemory).
//   - Received payloads wait in the inbox within a byte budget: 12 MiB of
//     push/pull states (256 at most) and 8 MiB of user messages (768 at most).
//     Over budget they are dropped and counted (Dropped): push/pull repeats
//     everything, so a drop only delays convergence. The budget is released as
//     the agent receives each Message from Inbox — the channel's length tells
//     how many were taken — so there is nothing to call and nothing to leak.
//   - memberlist's log lines, and this package's own about refused input, are
//     aggregated per kind: the first is logged, then one summary per minute
//     with the count suppressed. Joins and departures of certified sites are
//     always logged.
//
// # The roster
//
// memberlist keeps the first node that claims a name. The agent therefore
// hands this package the roster of certified sites (SetRoster): each site's
// gossip address, from its signed, verified record. Until it does, nothing
// is certified: Members lists this node alone, SendTo refuses every name
// and Joins reports nothing. With it:
//
//   - a node claiming a certified name from another address (a squatter) is
//     refused when it announces itself, and nothing is ever sent under that
//     name to another address: packets are dropped and connections refused in
//     the transport, so a squatter admitted before the roster knew the name
//     stops answering probes, is declared dead, and the real site takes its
//     name back (memberlist's DeadNodeReclaimTime is set to reclaim at once;
//     only the roster's address can reclaim a certified name). That takes
//     memberlist's suspicion timeout and a probe or two: 7 s measured with the
//     LAN profile, at least 30 s with WAN. Until the roster knows the
//     name, memberlist treats the squatter as that site: gossip and probes
//     reach it — harmless, broadcasts are signed records that anyone with
//     the key receives anyway — but SendTo refuses uncertified names;
//   - SendTo dials the roster's address, never memberlist's; SendToAll sends
//     to certified sites memberlist reports alive at their roster address;
//   - Members lists this node and certified sites only; other nodes seen alive
//     are counted (Uncertified) and admitted — a new site must be able to join
//     to hand over its record — up to 1024 at once;
//   - Joins reports a node only once it is certified (a node that joined
//     before its record arrived is remembered, up to 1024 names, and reported
//     when the roster gains it); the known-peers file holds certified sites
//     only.
//
// What the roster does not give: a key holder can still claim uncertified
// names, send well-formed gossip (suspect and dead messages about real sites,
// which they refute) and push/pull states of records, which the agent
// verifies. The source of a connection is trusted for budgeting only (an
// address in the roster gets the certified share), never for content.
//
// Callbacks from memberlist never block: received payloads are copied into
// the bounded inbox that the agent drains; the push/pull state is a
// precomputed snapshot (SetLocalState).
//
// # Rotating the gossip key
//
// InstallKey, UseKey and RemoveKey change the keyring of memberlist and of
// the screening transport together; KeyIDs names the keys (ids, never
// keys). A rotation installs the new key on every node, then uses it, then
// removes the old one, with no partition at any step (keyring.go). A node
// that was down throughout cannot rejoin once the old key is gone: it must
// be handed the new one.
//
// A node that was declared dead is never probed again by memberlist, so a
// partition would be permanent. Run re-joins the configured seeds and the
// known-peers file periodically, and keeps that file up to date so a site
// restarted while isolated still finds its cluster.
package gossip
