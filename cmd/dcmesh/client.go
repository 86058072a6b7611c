package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dcmesh/dcmesh/mesh"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/urfave/cli/v2"
)

var socketFlag = &cli.StringFlag{Name: "socket", Usage: "agent control socket `PATH` (default: from the configuration's state_dir)", EnvVars: []string{"DCMESH_SOCKET"}}

// leaveNext is what keeps a site that left out of the mesh: the unit
// would start the agent, which rejoins, at the next boot.
const leaveNext = "systemctl disable --now dcmesh"

// clientFlags are shared by the commands that talk to a running agent.
var clientFlags = []cli.Flag{configFlag, socketFlag}

// Default --timeout of the commands that ask the agent: status, health
// and down answer at once; leave waits for its goodbye to spread (about
// 6 s), revoke for the list to be stored.
const (
	quickAskTimeout = 10 * time.Second
	slowAskTimeout  = 30 * time.Second
)

// exitNoAnswer is the exit code of a command that got no answer from the
// agent (permission denied, timeout, not running): its state is unknown
// (monitoring's UNKNOWN). `health` exits 2 instead when the agent is
// plainly not running.
const exitNoAnswer = 3

// withTimeout is clientFlags with --timeout defaulting to def.
func withTimeout(def time.Duration) []cli.Flag {
	return append([]cli.Flag{durationFlag("timeout", "give up when the agent has not answered within `DURATION`", def)}, clientFlags...)
}

// askContext bounds a request by --timeout.
func askContext(c *cli.Context) (context.Context, context.CancelFunc, error) {
	d := durationOf(c, "timeout")
	if d <= 0 {
		return nil, nil, fmt.Errorf("--timeout %s: use a positive duration, e.g. 10s", d)
	}
	ctx, cancel := control.WithTimeout(c.Context, d)
	return ctx, cancel, nil
}

// rotateAskTimeout bounds `rotate`: with --wait, the wait plus a margin
// longer than the agent's own (control.LongPollMargin), so that the
// agent's answer at the end of the wait arrives; without, as leave.
func rotateAskTimeout(req control.RotateRequest) time.Duration {
	if !req.Wait {
		return slowAskTimeout
	}
	return req.WaitFor() + control.LongPollMargin + 5*time.Second
}

// noAnswer gives a request that got no answer from the agent exit code 3;
// other errors stay as they are (exit 1).
func noAnswer(err error) error {
	var se *control.SocketError
	if errors.As(err, &se) {
		return cli.Exit(se.Error(), exitNoAnswer)
	}
	return err
}

// ask makes one request (a control.Client method) bounded by --timeout.
func ask[T any](c *cli.Context, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel, err := askContext(c)
	if err != nil {
		var zero T
		return zero, err
	}
	defer cancel()
	return call(ctx)
}

// askNothing is ask for a request without an answer.
func askNothing(c *cli.Context, call func(context.Context) error) error {
	_, err := ask(c, func(ctx context.Context) (struct{}, error) { return struct{}{}, call(ctx) })
	return err
}

// agentClient finds the agent's control socket through --socket or the
// configuration.
func agentClient(c *cli.Context) (*control.Client, *config.Config, error) {
	cfg, err := config.Load(configPath(c))
	if s := c.String("socket"); s != "" {
		return control.NewClient(s), cfg, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return control.NewClient(cfg.StateDir.ControlSocket()), cfg, nil
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "take this site out of the mesh: every other site removes its peer and routes; the agent stops",
		Description: `Publishes a goodbye record signed by this site's identity, waits for it to
spread, and stops the agent. Starting the agent again rejoins the mesh, and so
does an enabled systemd unit at the next boot: to keep the site out, also run
  systemctl disable --now dcmesh`,
		Flags: append([]cli.Flag{jsonFlag()}, withTimeout(slowAskTimeout)...),
		Action: func(c *cli.Context) error {
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			if err := askNothing(c, cl.Leave); err != nil {
				return noAnswer(err)
			}
			return printResult(c, leaveJSON{Schema: jsonSchema, Result: "left", Next: leaveNext}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "left the mesh; the agent is stopping\n"+
					"an enabled dcmesh unit rejoins the mesh at the next boot; to keep this site out, run: %s\n", leaveNext)
				return err
			})
		},
	}
}

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "hand a revocation list from 'dcmesh ca revoke' to the local agent, which spreads it",
		Flags: append([]cli.Flag{&cli.StringFlag{Name: "in", Usage: "revocation list `FILE`", Required: true}, jsonFlag()}, withTimeout(slowAskTimeout)...),
		Action: func(c *cli.Context) error {
			raw, err := wg.ReadRegularFile(c.String("in"), 1<<20)
			if err != nil {
				return err
			}
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			reply, err := ask(c, func(ctx context.Context) (control.RevokeReply, error) {
				return cl.Revoke(ctx, control.RevokeRequest{CRL: raw})
			})
			if err != nil {
				return noAnswer(err)
			}
			return printResult(c, revokeJSON{Schema: jsonSchema, Number: reply.Number, Revoked: reply.Revoked}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "revocation list #%s installed (%d certificates revoked); spreading to every site\n", reply.Number, reply.Revoked)
				return err
			})
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
		Flags: append([]cli.Flag{&cli.BoolFlag{Name: "purge", Usage: "remove the interface and all dcmesh routes, fail-closed ones included"}, jsonFlag()},
			withTimeout(quickAskTimeout)...),
		Action: func(c *cli.Context) error {
			res, err := down(c)
			if err != nil {
				return err
			}
			return printResult(c, res, func(w io.Writer) error {
				var err error
				switch res.Result {
				case "stopping":
					_, err = fmt.Fprintln(w, "agent stopping")
				case "purged":
					_, err = fmt.Fprintf(w, "agent not running; removed interface %s and %d routes\n", res.Interface, res.RoutesRemoved)
				default:
					_, err = fmt.Fprintln(w, "agent not running; nothing to stop")
				}
				return err
			})
		},
	}
}

// down asks the agent to stop or, with --purge and no agent, purges here.
func down(c *cli.Context) (downJSON, error) {
	res := downJSON{Schema: jsonSchema, Purge: c.Bool("purge")}
	cl, cfg, err := agentClient(c)
	if err != nil {
		return res, err
	}
	if cfg != nil {
		res.Interface = cfg.Interface
	}
	err = askNothing(c, func(ctx context.Context) error { return cl.Down(ctx, control.DownRequest{Purge: res.Purge}) })
	switch {
	case err == nil:
		res.Result = "stopping"
		return res, nil
	case errors.Is(err, control.ErrAgentUnreachable) && res.Purge:
		if cfg == nil {
			return res, errors.New("the agent is not running and --purge needs --config to know the interface and table")
		}
		n, err := mesh.Purge(cfg)
		if err != nil {
			return res, err
		}
		res.Result, res.RoutesRemoved = "purged", n
		return res, nil
	case errors.Is(err, control.ErrAgentUnreachable):
		res.Result = "not_running"
		return res, nil
	}
	return res, noAnswer(err)
}
