// Package mesh is the dcmesh agent: its configuration, its lifecycle and the
// reconcile loop that turns "which sites should this site reach" into
// WireGuard peers (package wg) and kernel routes (package netconfig).
//
// The desired state is a pure function of the configuration and the local
// key (desiredState); the reconciler compares it with what the device and the
// kernel report and applies only the difference, on start, on SIGHUP, when
// one of our routes is deleted, and periodically as a backstop.
//
// Today the sites come from the configuration's static peers; gossip-learned,
// signed site records will feed the same function.
package mesh
