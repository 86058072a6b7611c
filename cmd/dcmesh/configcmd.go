package main

import (
	"fmt"
	"time"

	"github.com/dcmesh/dcmesh/mesh"
	"github.com/urfave/cli/v2"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "check the agent configuration",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate the configuration and the files it names, without starting anything",
			Description: `Reads the configuration as 'dcmesh agent' does at start, and every file it
names: the WireGuard key and rotation state, the pre-shared keys, the state
directory and, with gossip, the enrollment (CA, certificate, identity and
gossip keys, checked against the configuration), the site records and the
sequence number. Nothing is started, written or sent: no interface, route,
socket or packet.

Exit 0 with one line when the agent would accept it; 1 with the agent's
errors, one per line, each naming its field. Run it as the agent runs (root)
so that the files' permissions are the agent's.`,
			Flags: []cli.Flag{configFlag},
			Action: func(c *cli.Context) error {
				cfg, err := mesh.CheckConfig(configPath(c), time.Now())
				if err != nil {
					return err
				}
				mode := fmt.Sprintf("static peers only (%d)", len(cfg.Peers))
				if cfg.Gossip != nil {
					mode = fmt.Sprintf("gossip on %s, %d static peers", cfg.Gossip.Address, len(cfg.Peers))
				}
				_, err = fmt.Fprintf(c.App.Writer, "config %s OK: site %s, interface %s, %s\n", cfg.Path, cfg.Site, cfg.Interface, mode)
				return err
			},
		}},
	}
}
