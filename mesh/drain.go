package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// Planned maintenance (`dcmesh drain`, control.EndpointDrain): a drained
// gateway publishes its record with Drain set, so that peers take it out of
// their nexthop groups, and moves its own tunnel routes to route_metric-1,
// which the site's FRR or BIRD (examples/) export with AS-path prepend and
// the GRACEFUL_SHUTDOWN community: the fabric prefers the other gateways
// while this one still carries, without a gap, whatever reaches it. The
// fail-closed routes stay at route_metric+1, worse than both. The state is
// a file in the state directory, so a restart or an upgrade stays drained
// until `dcmesh undrain`.

// drainState is whether the gateway is drained, and since when.
type drainState struct {
	on    bool
	since time.Time
}

// drainFile is config.DrainFile's content.
type drainFile struct {
	Drained bool      `json:"drained"`
	Since   time.Time `json:"since"`
}

// maxDrainFile bounds what is read of the file (it holds one small object).
const maxDrainFile = 4 << 10

// loadDrain reads the drain state kept at path. No file: in service. A
// file that cannot be read or parsed leaves the gateway drained (an
// engineer who drained it must not find it back in service by surprise)
// and returns why, for the log.
func loadDrain(path string, now time.Time) (drainState, error) {
	raw, err := wg.ReadRegularFile(path, maxDrainFile)
	if errors.Is(err, fs.ErrNotExist) {
		return drainState{}, nil
	}
	var f drainFile
	if err == nil {
		err = json.Unmarshal(raw, &f)
	}
	if err != nil {
		return drainState{on: true, since: now}, fmt.Errorf("drain state %s: %w: staying drained; dcmesh undrain returns the gateway to service and rewrites it", path, err)
	}
	if !f.Drained {
		return drainState{}, nil
	}
	return drainState{on: true, since: f.Since}, nil
}

// saveDrain keeps d at path: written atomically when drained, removed
// (and the removal synced) when not.
func saveDrain(path string, d drainState) error {
	if !d.on {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove drain state: %w", err)
		}
		if err := wg.SyncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("remove drain state: fsync directory: %w", err)
		}
		return nil
	}
	raw, err := json.Marshal(drainFile{Drained: true, Since: d.since.UTC()})
	if err != nil {
		return err
	}
	return wg.WriteFileAtomic(path, raw, 0o600)
}

// drainedNet moves the tunnel routes of n one metric better while drained,
// leaving the fail-closed routes where they are.
func drainedNet(n netconfig.Config, d drainState) netconfig.Config {
	if d.on {
		n.FailClosedMetric = n.Metric + 1
		n.Metric--
	}
	return n
}

// tunnelMetric is the metric of the tunnel routes now.
func (rt *siteRuntime) tunnelMetric() int {
	if rt.drain.on {
		return rt.cfg.RouteMetric - 1
	}
	return rt.cfg.RouteMetric
}

func (d drainState) status() control.DrainStatus {
	if !d.on {
		return control.DrainStatus{}
	}
	since := d.since.UTC()
	return control.DrainStatus{Drained: true, Since: &since}
}

// setDrain changes the drain state: on disk first (a state the agent
// cannot keep is refused, not half applied), then the record (peers) and
// the routes (the fabric). It reports whether anything changed.
func (a *Agent) setDrain(rt *siteRuntime, on bool) (bool, error) {
	if rt.drain.on == on {
		return false, nil
	}
	next := drainState{on: on}
	if on {
		next.since = time.Now()
	}
	if err := saveDrain(rt.cfg.StateDir.Drain(), next); err != nil {
		return false, err
	}
	rt.drain = next
	a.log.Info("drain state changed", "drained", on, "tunnel_route_metric", rt.tunnelMetric())
	if rt.gossip != nil {
		if err := a.publish(rt); err != nil {
			a.log.Error("cannot publish this gateway's record with the new drain state; it goes out with the next refresh", "err", err)
		}
	}
	a.logReconcileError(a.reconcile(rt))
	return true, nil
}

// drainReply answers a drain or undrain, with the site's other gateways
// as they are now.
func (a *Agent) drainReply(rt *siteRuntime, changed bool, r control.DrainResult, sibs []control.Sibling) control.DrainReply {
	st := rt.drain.status()
	return control.DrainReply{Result: r, Drained: st.Drained, Since: st.Since, Changed: changed, Busy: []control.DrainPeer{},
		Siblings: sibs, LastInService: lastInService(sibs)}
}

func (a *Agent) apiUndrain(rt *siteRuntime, _ control.Empty) (control.DrainReply, error) {
	changed, err := a.setDrain(rt, false)
	if err != nil {
		return control.DrainReply{}, err
	}
	return a.drainReply(rt, changed, control.DrainUndrained, siblings(rt, time.Now())), nil
}

// drainSampleEvery is how often `drain --wait` reads the counters.
const drainSampleEvery = 250 * time.Millisecond

// apiDrain drains on the loop and, for `drain --wait`, follows the
// counters off the loop (each sample is a short call on it).
func (a *Agent) apiDrain(ctx context.Context, in control.DrainRequest) (control.DrainReply, error) {
	var probeBytes uint64
	reply, err := call(ctx, a, func(rt *siteRuntime) (control.DrainReply, error) {
		sibs := siblings(rt, time.Now())
		if err := refuseLastWait(in, rt.cfg.Site, sibs, rt.drain.on); err != nil {
			a.log.Warn("drain --wait refused: the last gateway of the site in service", "siblings", describeSiblings(sibs))
			return control.DrainReply{}, err
		}
		changed, err := a.setDrain(rt, true)
		if err != nil {
			return control.DrainReply{}, err
		}
		switch {
		case changed && len(sibs) > 0 && lastInService(sibs):
			a.log.Warn("drained the last gateway of the site in service: peers keep sending to it", "siblings", describeSiblings(sibs))
		case changed && len(sibs) == 0:
			a.log.Info("drained with no other gateway of the site known: peers keep sending to it")
		}
		probeBytes = probeWireBytes(rt.cfg.OverlayAddress.Addr()) // read by this goroutine only after the call
		return a.drainReply(rt, changed, control.DrainDraining, sibs), nil
	})
	if err != nil || !in.Wait {
		return reply, err
	}
	busy, err := a.waitIdle(ctx, newDrainMeter(in.SettleFor(), probeBytes), in.WaitFor())
	if err != nil {
		return reply, err
	}
	reply.Result, reply.Busy = control.DrainIdle, busy
	if len(busy) > 0 {
		reply.Result = control.DrainBusy
	}
	return reply, nil
}

// waitIdle samples until no peer is busy or wait has passed, and returns
// the busy ones. An undrain meanwhile ends the wait with an error.
func (a *Agent) waitIdle(ctx context.Context, m *drainMeter, wait time.Duration) ([]control.DrainPeer, error) {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(drainSampleEvery)
	defer tick.Stop()
	for {
		var still bool
		s, err := call(ctx, a, func(rt *siteRuntime) (drainSample, error) {
			still = rt.drain.on
			return rt.drainSample(time.Now())
		})
		if err != nil {
			return nil, err
		}
		if !still {
			return nil, errors.New("the gateway was undrained during the wait")
		}
		m.observe(s)
		busy := m.busy()
		if len(busy) == 0 || !time.Now().Before(deadline) {
			return busy, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// drainSample reads the counters of every peer on every slot's device,
// with the probes the prober counted for it, by node name.
func (rt *siteRuntime) drainSample(now time.Time) (drainSample, error) {
	dev, err := rt.wgc.Device(rt.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("read WireGuard device %s: %w", rt.cfg.Interface, err)
	}
	dev = mergedDevice(dev, rt.readSlotDevices()) // the remote gateways on every slot
	ids := peerIdentities(rt)
	probes := rt.probeStates()
	s := drainSample{}
	for _, p := range dev.Peers {
		k := wg.PublicKey(p.PublicKey)
		c := drainCounters{at: now, rxBytes: uint64(max(p.ReceiveBytes, 0)), txBytes: uint64(max(p.TransmitBytes, 0)),
			persistentKeepalive: p.PersistentKeepaliveInterval}
		name := k.Short()
		if id, ok := ids[k]; ok {
			name = id.node // two gateways of a site are two peers
			if id.role == control.RoleNext {
				name += " (next key)"
			}
			if pr, ok := probes[id.node]; ok && id.role == control.RoleCurrent && id.source == control.SourceGossip {
				c.probeRx, c.probeTx = pr.RxPackets, pr.TxPackets
			}
		}
		s[name] = c
	}
	return s, nil
}

// markDraining sets Draining on the gossip peers whose record says their
// gateway is drained.
func markDraining(rt *siteRuntime, peers []control.PeerStatus) {
	if rt.store == nil {
		return
	}
	for i, p := range peers {
		if p.Source != control.SourceGossip {
			continue
		}
		if sr, ok := rt.store.Record(p.Name()); ok && sr.Drain {
			peers[i].Draining = true
		}
	}
}
