package gossip

import (
	"context"
	"math/rand/v2"
	"time"
)

// Run joins the seeds and known peers, then re-joins those that are not alive
// members every RejoinInterval and keeps the known-peers file current, until
// ctx is done. It does not leave or shut down: see Leave and Shutdown.
//
// Until it has reached anyone, it retries sooner — after 1 s, doubling up to
// RejoinInterval — so sites started together, before their seeds listen,
// meet within seconds rather than a whole interval later.
func (g *Gossip) Run(ctx context.Context) {
	wait := min(time.Second, g.cfg.RejoinInterval)
	for {
		g.rejoin(ctx)
		g.saveKnown()
		if g.ml.NumMembers() > 1 {
			wait = g.cfg.RejoinInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, g.cfg.RejoinInterval)
	}
}

const (
	// rejoinContacts is how many addresses a rejoin must reach: each
	// contact is a full push/pull that merges the whole membership, so one
	// heals a partition; a second covers a contact that is itself cut off.
	rejoinContacts = 2
	// rejoinAttempts bounds the addresses tried per round. Joining every
	// known peer that is not alive, one after another, each a push/pull of
	// every record, is what kept a 1,000-site benchmark from converging.
	rejoinAttempts = 8
)

// rejoin contacts seeds and known peer addresses that are not alive members
// — seeds first, then known peers in random order — until rejoinContacts
// answered or rejoinAttempts were tried. memberlist never probes dead
// nodes, so without this a healed partition would stay split.
func (g *Gossip) rejoin(ctx context.Context) {
	alive := map[string]bool{}
	g.mu.Lock()
	for _, m := range g.view { // every node alive, certified or not: no need to join it
		if m.State == "alive" {
			alive[m.Addr.String()] = true
		}
	}
	g.mu.Unlock()
	self := g.cfg.Advertise.String()
	var targets []string
	seen := map[string]bool{}
	for _, a := range g.cfg.Seeds {
		if !alive[a] && a != self && !seen[a] {
			targets = append(targets, a)
			seen[a] = true
		}
	}
	var known []string
	g.mu.Lock()
	for name, a := range g.known {
		if !alive[a] && a != self && !seen[a] {
			known = append(known, name+"/"+a)
			seen[a] = true
		}
	}
	g.mu.Unlock()
	rand.Shuffle(len(known), func(i, j int) { known[i], known[j] = known[j], known[i] })
	targets = append(targets, known...)
	if len(targets) == 0 {
		return
	}
	contacted, tried := 0, 0
	for _, t := range targets {
		if contacted >= rejoinContacts || tried >= rejoinAttempts || ctx.Err() != nil {
			break
		}
		tried++
		if n, err := g.ml.Join([]string{t}); err == nil && n > 0 {
			contacted++
		}
	}
	if contacted == 0 {
		g.log.Debug("gossip join found nobody", "tried", targets[:tried])
		return
	}
	g.log.Debug("gossip joined", "contacted", contacted, "tried", tried, "candidates", len(targets))
}
