package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

// drainAskTimeout bounds `drain`: with --wait, the wait plus a margin
// longer than the agent's own (control.LongPollMargin), so that its answer
// at the end of the wait arrives; without, as leave.
func drainAskTimeout(req control.DrainRequest) time.Duration {
	if !req.Wait {
		return slowAskTimeout
	}
	return req.WaitFor() + control.LongPollMargin + 5*time.Second
}

func drainCommand() *cli.Command {
	return &cli.Command{
		Name:  "drain",
		Usage: "take this gateway out of service for maintenance without dropping traffic; --wait until it carries nothing",
		Description: `Planned maintenance of this gateway. The agent
  - publishes its record with "drain": every peer takes this gateway out of the
    nexthop groups it uses for the site, so traffic moves to the site's other
    gateways (a one-gateway site keeps its traffic: there is nowhere else);
  - moves its own tunnel routes from routes.metric to routes.metric - 1. The
    shipped FRR and BIRD configurations (examples/frr, examples/bird) match
    that metric and export the routes to the fabric with an AS-path prepend and
    the GRACEFUL_SHUTDOWN community, so the site's routers prefer the other
    gateways. Nothing is withdrawn: whatever still reaches this gateway is
    delivered, and the fail-closed routes (routes.metric + 1) stay.
The state is kept in the state directory: the gateway stays drained across
restarts and upgrades until 'dcmesh undrain'. status, health (degraded) and
the dcmesh_drained metric show it; peers' status shows the peer as draining.

--wait returns once every WireGuard peer of this gateway has carried nothing
but in-tunnel probes and keepalives for --settle, and exits 1 at --timeout
naming the peers still carrying traffic, with their rates. Then the agent
can be stopped or upgraded without losing a packet.

The last gateway of a site in service (every other gateway of the site
drained or down, or none known) keeps its traffic when drained: peers have
nowhere else to send it. drain warns on stderr, naming the other gateways
and their states ("last_in_service" and "siblings" in --json). --wait there
is refused (exit 1, nothing changed) when the site has other gateways, all
drained or down: the wait could only end at its timeout. --force drains and
waits anyway. A site with no other gateway known waits as always, until its
traffic itself stops.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "wait", Usage: "wait until no peer carries traffic"},
			&cli.BoolFlag{Name: "force", Usage: "with --wait, drain and wait even when every other gateway of the site is drained or down"},
			durationFlag("timeout", "with --wait, give up waiting after `DURATION`", control.DefaultDrainWait),
			durationFlag("settle", "with --wait, count a peer idle after `DURATION` without traffic", control.DefaultDrainSettle),
			jsonFlag(),
		}, clientFlags...),
		Action: func(c *cli.Context) error {
			req := control.DrainRequest{Wait: c.Bool("wait"), Timeout: durationOf(c, "timeout"), Settle: durationOf(c, "settle"), Force: c.Bool("force")}
			if err := req.Validate(); err != nil {
				return fmt.Errorf("--%w", err)
			}
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, drainAskTimeout(req))
			defer cancel()
			r, err := cl.Drain(ctx, req)
			if err != nil {
				return noAnswer(err)
			}
			if err := printResult(c, drainResultJSON(r), func(w io.Writer) error { return writeDrainText(w, r, req) }); err != nil {
				return err
			}
			if w := lastInServiceWarning(r); w != "" {
				fmt.Fprint(c.App.ErrWriter, w)
			}
			if r.Result == control.DrainBusy {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

func undrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "undrain",
		Usage: "return this gateway to service after 'dcmesh drain'",
		Description: `Publishes this gateway's record without "drain" (peers put it back in
their nexthop groups) and moves its tunnel routes back to routes.metric, so the
fabric exports them with normal attributes again. Removes the drain state from
the state directory. Undraining a gateway in service changes nothing.`,
		Flags: append([]cli.Flag{jsonFlag()}, withTimeout(slowAskTimeout)...),
		Action: func(c *cli.Context) error {
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			r, err := ask(c, cl.Undrain)
			if err != nil {
				return noAnswer(err)
			}
			return printResult(c, drainResultJSON(r), func(w io.Writer) error { return writeDrainText(w, r, control.DrainRequest{}) })
		},
	}
}

// drainResultJSON is the --json shape of drain and undrain.
func drainResultJSON(r control.DrainReply) drainJSON {
	return drainJSON{Schema: jsonSchema, Result: r.Result, Drained: r.Drained, Since: r.Since, Changed: r.Changed, Busy: orEmpty(r.Busy),
		LastInService: r.LastInService, Siblings: orEmpty(r.Siblings)}
}

// lastInServiceWarning is what drain says on stderr when the gateway is
// the last of its site in service; "" otherwise, and for an agent too old
// to say (no siblings in its answer).
func lastInServiceWarning(r control.DrainReply) string {
	if r.Siblings == nil || !r.LastInService || !r.Drained {
		return ""
	}
	others := "no other gateway of this site is known to this agent"
	if len(r.Siblings) > 0 {
		parts := make([]string, len(r.Siblings))
		for i, s := range r.Siblings {
			parts[i] = s.String()
		}
		others = "this is the last gateway of its site in service: " + strings.Join(parts, ", ")
	}
	return fmt.Sprintf("dcmesh: warning: %s. Peers keep sending to this gateway while it is drained, so nothing moves away; "+
		"stopping it takes the site off the backbone until another gateway is back in service.\n", others)
}

// writeDrainText says where the drain stands, in one line.
func writeDrainText(w io.Writer, r control.DrainReply, req control.DrainRequest) error {
	already := ""
	if !r.Changed {
		already = " (it already was)"
	}
	var err error
	switch r.Result {
	case control.DrainUndrained:
		_, err = fmt.Fprintf(w, "gateway back in service%s: peers use it again, tunnel routes at routes.metric\n", already)
	case control.DrainDraining:
		_, err = fmt.Fprintf(w, "gateway drained%s: peers move their traffic away, tunnel routes at routes.metric-1; wait for it to empty with dcmesh drain --wait\n", already)
	case control.DrainIdle:
		_, err = fmt.Fprintf(w, "gateway drained%s and idle: no peer carried traffic for %s; it can be stopped\n", already, req.SettleFor())
	default:
		var busy []string
		for _, p := range r.Busy {
			busy = append(busy, fmt.Sprintf("%s (rx %.0f B/s, tx %.0f B/s, idle %.1fs of %s)", p.Site, p.RxPerSec, p.TxPerSec, p.IdleSeconds, req.SettleFor()))
		}
		_, err = fmt.Fprintf(w, "gateway drained%s but still carrying traffic after %s: %s\n", already, req.WaitFor(), strings.Join(busy, ", "))
	}
	return err
}
