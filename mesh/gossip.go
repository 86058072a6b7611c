package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// The agent's side of gossip: its own record out, received payloads in
// (through ingest, which says what to do), and the messages of rotations
// handed to the rotator.

// startGossip joins the cluster and publishes this site's record.
func (a *Agent) startGossip(ctx context.Context, rt *siteRuntime) error {
	g := rt.cfg.Gossip
	keys, err := a.loadGossipKeys(rt)
	if err != nil {
		return err
	}
	gs, err := gossip.New(gossip.Config{
		NodeName:       rt.nodeName(),
		Bind:           g.Address,
		Advertise:      g.Advertise,
		SecretKey:      keys[0],
		Label:          "dcmesh/" + g.Cluster,
		Profile:        gossip.Profile(g.Profile),
		Seeds:          g.Join,
		RejoinInterval: g.RejoinInterval,
		KnownPeersFile: rt.cfg.StateDir.KnownPeers(),
		Logger:         a.log,
	})
	if err != nil {
		return err
	}
	rt.gossip = gs
	if len(keys) > 1 {
		if err := gs.InstallKey(keys[1]); err != nil {
			return err
		}
	}
	rt.rot.SetNode(rt.nodeName())
	rt.store.SetRecordExpiry(rt.cfg.Trust.RecordExpiry)
	// Only certified sites are members gossip sends to, counts and keeps:
	// start with the records kept from the last run.
	gs.SetRoster(rt.store.Roster(a.policy(rt)))
	if err := a.publish(rt); err != nil {
		return err
	}
	go gs.Run(ctx)
	return nil
}

// publish signs a new record of this site and sends it to the cluster.
func (a *Agent) publish(rt *siteRuntime) error {
	msg, err := a.signRecord(rt, false)
	if err != nil {
		return err
	}
	a.sendToAllAsync(rt, msg, "site record")
	return nil
}

// publishGoodbye signs a goodbye (other sites remove this site's peer and
// routes) and waits until it has gone to every member directly.
func (a *Agent) publishGoodbye(rt *siteRuntime) error {
	msg, err := a.signRecord(rt, true)
	if err != nil {
		return err
	}
	if err := rt.gossip.SendToAll(msg); err != nil {
		a.log.Warn("goodbye not delivered to every member directly; gossip will carry it", "err", err)
	}
	return nil
}

// signRecord signs a new record of this site (persisting its sequence number
// first, so a crash can never reuse it), sets it as this site's and
// broadcasts it; it returns the message for the direct sends. Gossip is
// probabilistic and a small cluster with dead members can miss a node for a
// whole push/pull interval; our own records are rare, so each also goes to
// every member directly.
func (a *Agent) signRecord(rt *siteRuntime, leaving bool) ([]byte, error) {
	now := time.Now()
	seq := trust.NextSeq(rt.seq, now)
	// Never publish a sequence number that is not on disk: after a crash
	// it could be used again. Until the write succeeds (retried at every
	// resync) the site does not refresh its record, and health says so.
	if err := rt.disk.wrote(config.SeqFile, records.SaveSeq(rt.cfg.StateDir.Seq(), seq)); err != nil {
		rt.disk.retryPublish = true
		return nil, fmt.Errorf("persist record sequence: %w", err)
	}
	rt.disk.retryPublish = false
	rt.seq = seq
	rec := trust.Record{
		Site:      rt.cfg.Site,
		Seq:       seq,
		IssuedAt:  now,
		Prefixes:  rt.cfg.LocalPrefixes,
		Endpoints: rt.cfg.UplinkEndpoints(),
		Gossip:    rt.cfg.Gossip.AdvertiseAddr(),
		BootID:    rt.bootID,
		Leaving:   leaving,
		Cert:      rt.enr.Cert,
		Drain:     rt.drain.on,
		Weight:    uint8(rt.cfg.GatewayWeight), // 0-255, checked by config
		Standby:   rt.cfg.GatewayWeight == 0,
	}
	if err := rt.rot.RecordKeys(&rec); err != nil {
		return nil, err
	}
	sr, err := trust.SignRecord(rec, rt.enr.Identity)
	if err != nil {
		return nil, fmt.Errorf("sign this site's record: %w", err)
	}
	rt.own = sr
	rt.in.SetOwn(rt.nodeName(), seq, rt.enr.Cert.Serial, sr.Raw)
	a.updateLocalState(rt)
	msg := records.Encode(records.KindRecord, sr.Raw)
	if len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast("record/"+rt.nodeName(), msg)
	}
	a.log.Debug("published site record", "seq", seq, "leaving", leaving, "bytes", len(sr.Raw))
	return msg, nil
}

// greet hands a member that just joined our record directly (see
// gossip.Joins).
func (a *Agent) greet(rt *siteRuntime, name string) {
	if rt.own == nil {
		return
	}
	g, msg := rt.gossip, records.Encode(records.KindRecord, rt.own.Raw)
	go func() {
		if err := g.SendTo(name, msg); err != nil {
			a.log.Debug("could not hand our record to a new member; push/pull will", "member", name, "err", err)
		}
	}()
	a.greetGossipKeys(rt, name)
}

func (a *Agent) updateLocalState(rt *siteRuntime) {
	st, err := rt.store.State(rt.own)
	if err != nil {
		a.log.Error("cannot encode gossip state", "err", err)
		return
	}
	rt.gossip.SetLocalState(st)
}

// nodeName is this gateway's node name (trust.GatewayID.String: the site
// name for gateway 0, "fra1.1" for gateway 1): its gossip node name, the
// name the other gateways hold its record under, the From of its acks and
// what they list in PSKSites.
func (rt *siteRuntime) nodeName() string {
	id := trust.GatewayID{Site: rt.cfg.Site}
	if rt.enr != nil && rt.enr.Cert != nil {
		id.Gateway = rt.enr.Cert.Gateway
	}
	return id.String()
}

// policy is what remote records are checked against, now.
func (a *Agent) policy(rt *siteRuntime) *trust.Policy {
	cfg := rt.cfg
	local := append(slices.Clone(cfg.LocalPrefixes), config.Host(cfg.OverlayAddress.Addr()))
	var underlay []netip.Prefix
	for _, e := range cfg.UplinkEndpoints() {
		underlay = append(underlay, config.Host(e.Addr()))
	}
	if cfg.Gossip != nil {
		underlay = append(underlay, config.Host(cfg.Gossip.Address.Addr()))
		if cfg.Gossip.Advertise.IsValid() {
			underlay = append(underlay, config.Host(cfg.Gossip.Advertise.Addr()))
		}
	}
	for _, p := range cfg.Peers {
		if p.Endpoint.IsValid() {
			underlay = append(underlay, config.Host(p.Endpoint.Addr()))
		}
	}
	underlay = append(underlay, rt.enr.Cert.Underlay...)
	return &trust.Policy{
		CAs: rt.enr.CAs, LocalSite: cfg.Site, LocalGateway: rt.enr.Cert.Gateway, LocalPrefixes: local, Underlay: underlay,
		CRLs: rt.store.CRLSet(rt.enr.CAs), Now: time.Now(), Skew: cfg.Trust.ClockSkew,
	}
}

// inboxWhenIdle is the gossip inbox while no received payload is being
// worked through, else nil: the loop takes the next payload only when it has
// finished the current one, so what waits stays in the gossip layer's
// bounded inbox (ingest.go).
func inboxWhenIdle(inbox <-chan gossip.Message, in *records.Ingest) <-chan gossip.Message {
	if in.Busy() {
		return nil
	}
	return inbox
}

// onGossip takes one received payload: records, lists and states go to
// ingest; a rotation's messages go to the rotator.
func (a *Agent) onGossip(rt *siteRuntime, m gossip.Message) {
	k, payload, ok := rt.in.Take(m)
	if !ok {
		return
	}
	switch k {
	case records.KindAck:
		if ack, peerKey, ok := rt.store.VerifyAck(payload, rt.nodeName()); ok {
			rt.rot.OnAck(ack, peerKey)
		}
	case records.KindSwitching:
		rt.rot.OnSwitching()
	case records.KindNudge:
		rt.rot.OnNudge(string(payload))
	case records.KindGossipKey:
		a.onGossipKeyBundle(rt, payload)
	case records.KindGossipKeyAck:
		a.onGossipKeyAck(rt, payload)
	}
}

// ingestTurn works through received gossip for one turn and does what it
// asks: spread what was accepted, forget what is gone, commit the store.
func (a *Agent) ingestTurn(rt *siteRuntime, inboxLen int) {
	res := rt.in.Turn(inboxLen)
	for _, name := range res.Forget {
		rt.gossip.Forget(name) // gone for good: stop re-joining it
	}
	for _, r := range res.Relay {
		rt.gossip.Broadcast(r.Key, r.Msg)
	}
	if res.CRL {
		a.sendToAllAsync(rt, records.Encode(records.KindCRL, rt.store.CRL().Raw), "revocation list")
	}
	if res.More {
		notify(a.ingestMore)
	}
	if res.Commit {
		a.commitStore(rt)
	}
}

// spreadCRL sends the revocation list held to the cluster: broadcast, and to
// every member directly.
func (a *Agent) spreadCRL(rt *siteRuntime) {
	msg := records.Encode(records.KindCRL, rt.store.CRL().Raw)
	if len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast("crl", msg)
	}
	a.sendToAllAsync(rt, msg, "revocation list")
}

// sendToAllAsync sends msg to every member over TCP without holding up the
// agent loop (an unreachable member costs a TCP timeout).
func (a *Agent) sendToAllAsync(rt *siteRuntime, msg []byte, what string) {
	g := rt.gossip
	go func() {
		if err := g.SendToAll(msg); err != nil {
			a.log.Debug(what+" not delivered to every member directly; gossip will carry it", "err", err)
		}
	}()
}

// commitStore persists the store, refreshes the push/pull state and
// reconciles.
func (a *Agent) commitStore(rt *siteRuntime) {
	if err := rt.disk.wrote(config.RecordsFile, rt.store.Save()); err != nil {
		rt.disk.retrySave = true
		a.log.Error("cannot persist site records; retrying at every resync", "err", err)
	} else {
		rt.disk.retrySave = false
	}
	a.updateLocalState(rt)
	a.logReconcileError(a.reconcile(rt))
}

// retryStateWrites checks the state directory's free space and retries the
// writes that failed, so a site whose disk filled up recovers by itself
// when space returns.
func (a *Agent) retryStateWrites(rt *siteRuntime) {
	rt.disk.check()
	if rt.disk.retrySave && rt.store != nil {
		if rt.disk.wrote(config.RecordsFile, rt.store.Save()) == nil {
			rt.disk.retrySave = false
			a.log.Info("site records persisted again", "file", rt.cfg.StateDir.Records())
		}
	}
	if rt.disk.retryPublish && rt.gossip != nil {
		if err := a.publish(rt); err == nil {
			a.log.Info("this site's record is published again: its state directory can be written", "dir", rt.cfg.StateDir)
		}
	}
}

// liveSites are the remote sites to program now (the store's active sites,
// overlaps resolved); conflicts are logged when they change.
func (a *Agent) liveSites(rt *siteRuntime) []records.Site {
	if rt.store == nil {
		return nil
	}
	sites, conflicts := rt.store.Active(a.policy(rt), rt.cfg.Trust.RecordExpiry)
	if s := fmt.Sprint(conflicts); s != rt.conflicts {
		rt.conflicts = s
		for _, c := range conflicts {
			a.log.Warn("site prefix refused: an older certificate owns it", "site", c.Site, "gateway", c.Gateway, "prefix", c.Prefix.String(), "owner", c.Winner, "reason", string(c.Reason))
		}
	}
	return sites
}

// agentEnv is the agent as the rotation sees it (rotation.Env).
type agentEnv struct {
	a  *Agent
	rt *siteRuntime
}

func (e agentEnv) Publish() error { return e.a.publish(e.rt) }

func (e agentEnv) LiveSites() []records.Site {
	sites, _ := e.rt.store.Active(e.a.policy(e.rt), e.rt.cfg.Trust.RecordExpiry)
	return sites
}

func (e agentEnv) SendTo(site string, msg []byte) error { return e.rt.gossip.SendTo(site, msg) }

func (e agentEnv) Kick() { notify(e.a.kick) }

func (e agentEnv) Counted(r control.RotateResult) {
	if e.a.metrics != nil {
		e.a.metrics.rotations.WithLabelValues(string(r)).Inc()
	}
}
