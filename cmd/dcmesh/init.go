package main

import (
	"fmt"
	"time"

	"github.com/dcmesh/dcmesh/mesh"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/urfave/cli/v2"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "set up this site from its enrollment bundle",
		Description: `Copies the bundle from 'dcmesh ca issue' into the state directory (0700),
creates the site's first WireGuard key and writes the agent configuration
(default STATE_DIR/dcmesh.yaml), last. Nothing is overwritten: a state directory
that already holds a site is refused before anything is written. Then run:
  dcmesh agent --config STATE_DIR/dcmesh.yaml`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "bundle `DIR` written by dcmesh ca issue", Required: true},
			&cli.StringFlag{Name: "state-dir", Usage: "state `DIR` for keys, records and the control socket", Required: true},
			&cli.StringFlag{Name: "endpoint", Usage: "this site's underlay `IP:PORT` for WireGuard, as other sites reach it", Required: true},
			&cli.IntFlag{Name: "listen-port", Usage: "local WireGuard UDP `PORT` (default: the endpoint's port)"},
			&cli.StringFlag{Name: "interface", Usage: "WireGuard interface `NAME`", Value: config.DefaultInterface},
			&cli.StringFlag{Name: "gossip-addr", Usage: "gossip `IP:PORT` on the underlay (default: the endpoint's IP, port 7946)"},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip `IP:PORT` of an existing site; repeat for more"},
			&cli.StringFlag{Name: "config", Usage: "configuration `FILE` to write (default: STATE_DIR/dcmesh.yaml)"},
		},
		Action: func(c *cli.Context) error {
			res, err := mesh.InitSite(mesh.InitOptions{
				Bundle: c.String("bundle"), StateDir: c.String("state-dir"), Endpoint: c.String("endpoint"),
				ListenPort: c.Int("listen-port"), Interface: c.String("interface"), GossipAddr: c.String("gossip-addr"),
				Join: c.StringSlice("join"), ConfigPath: c.String("config"), Now: time.Now(),
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.App.Writer, "site %s initialised\nWireGuard public key: %s\nconfiguration: %s\nnext: dcmesh agent --config %s\n",
				res.Site, res.PublicKey, res.ConfigPath, res.ConfigPath)
			return err
		},
	}
}
