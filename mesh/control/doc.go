// Package control is the agent's local API, both ends: HTTP+JSON over a unix
// socket in the state directory, mode 0600, so only root (the agent's user)
// can use it. `dcmesh status`, `health`, `rotate`, `drain`, `undrain`,
// `leave`, `down` and `revoke` and the demo are its clients.
//
// It declares every call once (Endpoint: method, path, request and answer
// types), with the wire types (Status, Health, Rotate*, Drain*, Revoke*,
// Down*, Records) and their typed enums, and the health criteria (EvaluateHealth);
// the agent serves the calls (Serve) and clients make them (Client.Status
// and the other methods). It is a leaf: it imports no dcmesh package, so its
// types are its own, not the agent's or gossip's.
//
// It transports requests; the agent decides what they do. Its clients are
// local and privileged, but a crowd of stuck or buggy ones (a monitoring
// check spawned every minute that never finishes) must not cost the agent
// more than a bounded number of file descriptors, goroutines and bytes:
//
//   - at most MaxConns connections are open at once; over the cap, the
//     connection that has waited longest without a request being served is
//     closed to make room, and if every one is being served the newcomer is
//     refused (both are counted, Server.Stats, and logged, rate-limited);
//   - a request's header must arrive within ReadHeaderTimeout, the whole
//     request within ReadTimeout, and a body is at most MaxBodyBytes;
//   - every request is answered or abandoned within RequestTimeout, unless
//     its body asks for a long poll (ResponseWithin, e.g. `rotate --wait`,
//     `drain --wait`),
//     which gets that long plus LongPollMargin;
//   - request bodies are decoded strictly (one JSON value, no unknown field,
//     no trailing data) and validated (Validator) before the agent sees them.
//
// The client distinguishes why it got no answer: the agent is not running
// (ErrAgentUnreachable), the caller may not use the socket
// (ErrPermissionDenied), or the agent did not answer in time
// (ErrAgentTimeout). It makes one connection per request (no keep-alive), so
// a connection the agent closed while idle is never mistaken for an answer.
//
// It does not authenticate beyond the socket's file mode, and does not know
// the agent's routes.
package control
