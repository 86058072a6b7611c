package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show this site: key and rotation, gossip members, every peer with its state, routes",
		Description: `Peer states: up (a session exists and the peer was heard from within a
keepalive period), stale (a session exists but the peer went quiet), down (no
handshake yet, or none for 3 minutes). ROUTES says whether every allowed prefix of
the peer has both its tunnel route and its fail-closed twin in the kernel.

--json prints the documented, versioned form ("schema": 1, see docs/STATUS.md) for
scripts.`,
		Flags: append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON (schema 1, docs/STATUS.md)"}}, withTimeout(quickAskTimeout)...),
		Action: func(c *cli.Context) error {
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			st, err := ask(c, cl.Status)
			if err != nil {
				return noAnswer(err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return writeStatusTable(c.App.Writer, st, time.Now())
		},
	}
}

func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "check this site for monitoring: exit 0 healthy, 1 degraded, 2 critical, 3 unknown (cannot check)",
		Description: `critical (2): the agent is not running; or no peer is up; or fail-closed routes
           are missing (traffic for a remote site could leave in cleartext).
degraded (1): a peer is stale or down; tunnel routes are missing; no peers at all;
           the key is overdue for rotation; a rotation is stuck.
healthy (0): everything else.
unknown (3): the site could not be checked: permission denied on the control
           socket (run as root), no answer within --timeout, a configuration
           that cannot be read.
Prints one line per reason; --json prints {"schema":1,"status",...} (docs/STATUS.md).`,
		Flags: append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}}, withTimeout(quickAskTimeout)...),
		Action: func(c *cli.Context) error {
			h := askHealth(c)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(h); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(c.App.Writer, "%s: %s\n", h.Status, orDefault(h.Site, "this site"))
				for _, r := range h.Reasons {
					fmt.Fprintf(c.App.Writer, "  %s\n", r)
				}
			}
			if h.ExitCode != 0 {
				return cli.Exit("", h.ExitCode)
			}
			return nil
		},
	}
}

// askHealth asks the agent, or says why it could not.
func askHealth(c *cli.Context) control.Health {
	cl, cfg, err := agentClient(c)
	if err == nil {
		var h control.Health
		if h, err = ask(c, cl.Health); err == nil {
			return h
		}
	}
	h := control.Health{Schema: control.StatusSchema, Status: control.HealthUnknown, ExitCode: exitNoAnswer, Reasons: []string{oneLine(err)}}
	if cfg != nil {
		h.Site = cfg.Site
	}
	var ae *control.Error
	switch {
	case errors.Is(err, control.ErrAgentUnreachable):
		// Known, not unknown: a site whose agent is not running is not
		// being kept.
		h.Status, h.ExitCode = control.Critical, control.Critical.ExitCode()
	case errors.As(err, &ae):
		// The agent answered that it cannot tell (its loop is stuck, it
		// cannot read its device).
		h.Status, h.ExitCode = control.Critical, control.Critical.ExitCode()
		h.Reasons = []string{"agent error: " + ae.Message}
	}
	return h
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
