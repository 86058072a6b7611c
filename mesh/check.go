package mesh

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/rotation"
	"github.com/dcmesh/dcmesh/wg"
)

// CheckConfig validates the configuration at path and reads every file it
// names as the agent does at start — the WireGuard key and the rotation
// state, the pre-shared keys, the state directory and, with gossip, the
// enrollment (CA, certificate, identity and gossip keys, cross-checked with
// the configuration), the site records and the sequence number — and
// returns the same errors. It starts nothing and writes nothing: no
// device, socket, route or file (`dcmesh config check`).
func CheckConfig(path string, now time.Time) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if _, err := rotation.LoadKeys(cfg); err != nil {
		return nil, err
	}
	if err := checkStateDir(cfg); err != nil {
		return nil, err
	}
	if _, err := wg.LoadPresharedKeys(cfg.StateDir.PSK()); err != nil {
		return nil, err
	}
	if cfg.Gossip == nil {
		return cfg, nil
	}
	enr, err := enroll.Load(cfg, now)
	if err != nil {
		return nil, err
	}
	clear(enr.Identity)
	clear(enr.GossipKey)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := records.LoadStore(cfg.StateDir.Records(), quiet, enr.CAs); err != nil {
		return nil, err
	}
	if _, err := records.LoadSeq(cfg.StateDir.Seq()); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkStateDir: the state directory is a directory the agent can list, or
// (a site with static peers only) one it will create.
func checkStateDir(cfg *config.Config) error {
	dir := string(cfg.StateDir)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.Gossip == nil:
		return nil // the agent creates it (0700)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("state_dir: %s does not exist: it holds the enrollment bundle; run dcmesh init, or point state_dir at the directory it wrote", dir)
	case err != nil:
		return fmt.Errorf("state_dir: %w", err)
	case !st.IsDir():
		return fmt.Errorf("state_dir: %s is not a directory", dir)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("state_dir: %w (the agent runs as root: check as root)", err)
	}
	return nil
}
