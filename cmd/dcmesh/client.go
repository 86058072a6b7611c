package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

var socketFlag = &cli.StringFlag{Name: "socket", Usage: "agent control socket `PATH` (default: from the configuration's state_dir)", EnvVars: []string{"DCMESH_SOCKET"}}

// clientFlags are shared by the commands that talk to a running agent.
var clientFlags = []cli.Flag{configFlag, socketFlag}

// agentClient finds the agent's control socket through --socket or the
// configuration.
func agentClient(c *cli.Context) (*control.Client, *mesh.Config, error) {
	cfg, err := mesh.LoadConfig(configPath(c))
	if s := c.String("socket"); s != "" {
		return control.NewClient(s), cfg, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return control.NewClient(cfg.ControlSocket()), cfg, nil
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "take this site out of the mesh: every other site removes its peer and routes; the agent stops",
		Description: `Publishes a goodbye record signed by this site's identity, waits for it to
spread, and stops the agent. Starting the agent again rejoins the mesh.`,
		Flags: clientFlags,
		Action: func(c *cli.Context) error {
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
			defer cancel()
			if err := cl.Do(ctx, "POST", "/v1/leave", nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, "left the mesh; the agent is stopping")
			return err
		},
	}
}

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "hand a revocation list from 'dcmesh ca revoke' to the local agent, which spreads it",
		Flags: append([]cli.Flag{&cli.StringFlag{Name: "in", Usage: "revocation list `FILE`", Required: true}}, clientFlags...),
		Action: func(c *cli.Context) error {
			raw, err := os.ReadFile(c.String("in"))
			if err != nil {
				return err
			}
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			var reply mesh.RevokeReply
			if err := cl.Do(c.Context, "POST", "/v1/revoke", mesh.RevokeRequest{CRL: raw}, &reply); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.App.Writer, "revocation list #%s installed (%d certificates revoked); spreading to every site\n", reply.Number, reply.Revoked)
			return err
		},
	}
}

func downCommand() *cli.Command {
	return &cli.Command{
		Name:  "down",
		Usage: "stop the agent; with --purge also remove the interface and every dcmesh route",
		Description: `Without --purge, the fail-closed routes stay: traffic for remote sites
keeps being refused rather than leaking. With --purge, the WireGuard interface
and every route with dcmesh's protocol (220) in the configured table are
removed, also when the agent is not running.`,
		Flags: append([]cli.Flag{&cli.BoolFlag{Name: "purge", Usage: "remove the interface and all dcmesh routes, fail-closed ones included"}}, clientFlags...),
		Action: func(c *cli.Context) error {
			cl, cfg, err := agentClient(c)
			if err != nil {
				return err
			}
			err = cl.Do(c.Context, "POST", "/v1/down", mesh.DownRequest{Purge: c.Bool("purge")}, nil)
			switch {
			case err == nil:
				_, err = fmt.Fprintln(c.App.Writer, "agent stopping")
				return err
			case errors.Is(err, control.ErrAgentUnreachable) && c.Bool("purge"):
				if cfg == nil {
					return errors.New("the agent is not running and --purge needs --config to know the interface and table")
				}
				n, err := mesh.Purge(cfg)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "agent not running; removed interface %s and %d routes\n", cfg.Interface, n)
				return err
			case errors.Is(err, control.ErrAgentUnreachable):
				_, err = fmt.Fprintln(c.App.Writer, "agent not running; nothing to stop")
				return err
			}
			return err
		},
	}
}
