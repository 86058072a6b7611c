// Package netconfig programs the kernel side of a dcmesh site through netlink:
// the WireGuard links' MTU, overlay addresses, state and per-link sysctls,
// and the routes that send every remote site's prefixes into the tunnel.
//
// Every route it creates carries dcmesh's own route protocol number
// (RouteProtocol, 220, shown as "dcmesh" once examples/rt_protos.d/dcmesh.conf
// is installed) in one configurable table. Ownership is decided by that
// number alone: routes of other protocols are never replaced or deleted, and
// a foreign route in the way is reported as a conflict.
//
// A prefix goes through one link (Config.Routes, or a Group with one
// member: a plain `dev` route), or over several at once (a Group with two or
// more members: one route over a kernel nexthop group, `nhid`, of single
// `dev dcmK` nexthops with weights; resilient where the kernel has them,
// hash-threshold before Linux 5.13). A group changes members in one atomic
// replace, and when a member's link goes away the kernel shrinks the group
// instead of dropping the route, which a plain multipath route would do.
// Nexthop objects are ours by protocol 220 and an id range derived from the
// table (see the id derivation in nexthop.go); foreign ones are never
// touched, stale ones of ours are swept by every Apply, and Purge removes
// them. vishvananda/netlink has no nexthop objects, so Handle adds the
// RTM_*NEXTHOP messages and routes with RTA_NH_ID on its netlink socket.
//
// Fail closed: for every remote prefix there is, besides the route through the
// tunnel, an "unreachable" route of ours with a worse metric. It is not bound
// to any link, so when the tunnel route disappears (the agent died and took
// its embedded device with it, someone deleted the link, or no member of a
// group is left) traffic for the remote site is refused locally instead of
// following a default route out of the underlay in cleartext. Those routes
// stay when the agent stops; only an explicit Purge (`dcmesh down --purge`)
// removes them. Shadowing reports the routes of others (a fabric /25 inside
// a remote /24) that would take such traffic away all the same.
//
// What it does not do: WireGuard keys and peers (package wg), deciding which
// prefixes are wanted or which gateways are healthy (package mesh: a Group
// lists only the members to use now). It imports no other dcmesh package.
package netconfig
