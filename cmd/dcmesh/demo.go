package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/demo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a whole mesh on this machine in network namespaces, show it working, then remove it",
		Description: `Brings up N sites (default 3) on this machine, each in its own network
namespace, joined by an underlay bridge, and runs the real bootstrap flow with
this dcmesh binary: ca init, ca issue and init for every site, then one agent
per site with the embedded WireGuard backend (no kernel module, no setup).
It shows the mesh forming (every site's handshakes), TCP traffic between every
pair of site prefixes through the tunnels, a forced key rotation of site1 with
traffic after it, and site1's status table. Then it removes everything it
created, also when a step fails or on Ctrl-C.

Needs root (network namespaces) and nsenter (util-linux). It touches only what
it creates, all named with one random id XXXX:
  network namespaces dcmdemo-XXXX-ul (bridge br0) and dcmdemo-XXXX-s1..sN
    (veths, 10.N.0.1 on lo, the WireGuard interface dcmdXXXXN, routes)
  one agent process per site, inside its namespace
  /var/run/wireguard/dcmdXXXXN.sock, the embedded devices' control sockets
  a temporary directory /tmp/dcmdemo-* (CA, bundles, keys, state, logs)
Nothing in this machine's own network namespace is changed: no interface,
address, route or firewall rule.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "sites", Usage: "number of sites `N`, 2 to 9", Value: demo.DefaultSites},
			&cli.BoolFlag{Name: "keep-logs", Usage: "keep the agents' logs (keys and state are still removed) and print where they are"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			err := demo.Run(ctx, demo.Options{
				Sites:    c.Int("sites"),
				Out:      c.App.Writer,
				KeepLogs: c.Bool("keep-logs"),
				Logf:     func(format string, args ...any) { fmt.Fprintf(stderr, "dcmesh demo: "+format+"\n", args...) },
			})
			if errors.Is(err, demo.ErrInterrupted) {
				return cli.Exit(err.Error(), 130)
			}
			return err
		},
	}
}
