// Package rotation is WireGuard key rotation, make-before-break, as a state
// machine the agent's loop drives (run.go has the protocol): this site's own
// rotations over wg.KeyStore (prepare, wait for pre-installs, switch, commit,
// confirm), the other sites' rotations as this site follows them
// (pre-install, hold a switched site until its handshake, cut over, ack,
// confirm: confirm.go), the watcher that cuts over at a completed handshake
// on its own goroutine (cutover.go), and the ML-KEM exchange of pre-shared
// keys (psk.go).
//
// A Rotator owns all of that state. It reaches the agent only through Env
// (publish a record, the live sites, send to a site, ask for a reconcile,
// count a result) and the device through wg.Client; it does not import the
// agent, gossip or the control socket.
package rotation
