package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/dcmesh/dcmesh/mesh"
	"github.com/urfave/cli/v2"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run this site's agent (normally under systemd)",
		Description: `Brings up the WireGuard interface, one peer per remote site and a route
per remote prefix, and keeps them so: drift is repaired at once for deleted
routes and every resync_interval for everything else.

Signals: SIGHUP re-reads the configuration and key file and applies only what
changed (unchanged peers keep their sessions). SIGTERM or SIGINT stop the
agent: an embedded (userspace) device is removed; a kernel WireGuard link is
left running with its sessions, and a restarted agent adopts it without a new
handshake. Fail-closed routes always stay.`,
		Flags: append([]cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "wireguard", Usage: "WireGuard backend `MODE`: auto (kernel if available, else embedded), kernel or userspace; overrides the config file", EnvVars: []string{"DCMESH_WIREGUARD"}},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics on `ADDR`/metrics, e.g. 127.0.0.1:9469; overrides the configuration's metrics_addr (names in docs/METRICS.md)", EnvVars: []string{"DCMESH_METRICS_ADDR"}},
		}, logFlags...),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c, stderr)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			agent := mesh.NewAgent(mesh.Options{ConfigPath: configPath(c), WireGuard: c.String("wireguard"), Logger: log, MetricsAddr: c.String("metrics-addr"), Version: version()})
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-hup:
						agent.Reload()
					case <-ctx.Done():
						return
					}
				}
			}()
			return flagError(agent.Run(ctx))
		},
	}
}
