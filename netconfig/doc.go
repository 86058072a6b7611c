// Package netconfig programs the kernel side of a dcmesh site through netlink:
// the WireGuard link's MTU, overlay addresses and state, and the routes that
// send every remote site's prefixes into the tunnel.
//
// Every route it creates carries dcmesh's own route protocol number
// (RouteProtocol, 220, shown as "dcmesh" once examples/rt_protos.d/dcmesh.conf
// is installed) in one configurable table. Ownership is decided by that
// number alone: routes of other protocols are never replaced or deleted, and
// a foreign route in the way is reported as a conflict.
//
// Fail closed: for every remote prefix there is, besides the route through the
// tunnel, an "unreachable" route of ours with a worse metric. It is not bound
// to any link, so when the tunnel route disappears (the agent died and took
// its embedded device with it, or someone deleted the link) traffic for the
// remote site is refused locally instead of following a default route out of
// the underlay in cleartext. Those routes stay when the agent stops; only an
// explicit Purge (`dcmesh down --purge`) removes them.
//
// What it does not do: WireGuard keys and peers (package wg) or deciding
// which prefixes are wanted (package mesh). It imports no other dcmesh
// package.
package netconfig
