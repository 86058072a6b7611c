package gossip

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"

	"github.com/dcmesh/dcmesh/wg"
)

// The known-peers file keeps the certified sites' gossip addresses (the
// roster, less this node and forgotten sites), so that a site restarted
// while its seeds are unreachable still finds its cluster. Until the first
// SetRoster it holds what the file held.

// maxKnownPeersFile bounds the file: a name and an address per site, for
// thousands of sites.
const maxKnownPeersFile = 1 << 20

func (g *Gossip) loadKnown() {
	if g.cfg.KnownPeersFile == "" {
		return
	}
	raw, err := wg.ReadStateFile(g.cfg.KnownPeersFile, maxKnownPeersFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			g.log.Warn("cannot read known gossip peers; using the seeds only", "file", g.cfg.KnownPeersFile, "err", err)
		}
		return
	}
	var known map[string]string
	if err := json.Unmarshal(raw, &known); err != nil {
		g.log.Warn("known gossip peers file is corrupt; ignoring it", "file", g.cfg.KnownPeersFile, "err", err)
		return
	}
	for name, a := range known {
		if _, err := netip.ParseAddrPort(a); err == nil && name != g.cfg.NodeName {
			g.known[name] = a
		}
	}
}

func (g *Gossip) saveKnown() {
	if g.cfg.KnownPeersFile == "" {
		return
	}
	g.saveMu.Lock() // Run and Shutdown both save
	defer g.saveMu.Unlock()
	g.mu.Lock()
	raw, err := json.MarshalIndent(g.known, "", "  ")
	g.mu.Unlock()
	if err == nil && bytes.Equal(raw, g.savedKnown) {
		return // unchanged: no write, no fsync every interval
	}
	if err == nil {
		err = wg.WriteFileAtomic(g.cfg.KnownPeersFile, append(raw, '\n'), 0o600)
	}
	if err == nil {
		g.savedKnown = raw
	}
	if err != nil {
		g.log.Warn("cannot save known gossip peers", "file", g.cfg.KnownPeersFile, "err", err)
	}
}

// Forget drops a node that is gone for good (a signed leave, a revoked
// certificate) from the known peers: otherwise every agent would try to
// re-join it every RejoinInterval, forever. Members still lists it while it
// is in the roster (the agent shows it as left). A node that comes back
// alive at its certified address is learnt again.
func (g *Gossip) Forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.known, name)
	g.forgotten[name] = true
}
