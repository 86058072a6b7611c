// Package records is what the agent knows of the other sites: the store of
// their signed records (the newest valid one per site, the highest sequence
// number ever accepted, the revocation list, persisted in records.json), the
// ingest of received gossip into it (decode, dedupe, CheckRecord, a cache of
// what was refused, the CRL install), the gossip wire's message kinds with
// their one codec, and this site's own sequence number (seq.json).
//
// Ingest changes only the store: what the gossip layer should do about it —
// relay a record, forget a site, send a list to everyone, commit — it
// returns to the agent (Result). It does not program anything, and it does
// not import the agent.
package records
