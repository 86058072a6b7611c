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

func rotateCommand() *cli.Command {
	return &cli.Command{
		Name:  "rotate",
		Usage: "replace this site's WireGuard key now, without dropping its tunnels",
		Description: `Make-before-break: the new key is announced, every live peer pre-installs it
and acknowledges, then this site switches and each peer cuts over as soon as it
sees a handshake on the new key. Tunnels keep carrying traffic throughout.

--wait blocks until every live peer carried data both ways under the new key
(a handshake under it, data received by the peer, acknowledged, and data
received from the peer after that) and exits 1 naming each peer that did not,
with what is missing, at the timeout. --emergency is for a suspected key compromise: the site switches at once and
every peer drops the old key as soon as it hears, without waiting for
acknowledgements (traffic pauses for about one handshake).

Keys also rotate on the schedule in the configuration (rotation.interval).`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "wait", Usage: "wait until every peer cut over"},
			durationFlag("timeout", "with --wait, give up waiting after `DURATION`", 3*time.Minute),
			&cli.BoolFlag{Name: "emergency", Usage: "switch at once; peers drop the old key immediately"},
			jsonFlag(),
		}, clientFlags...),
		Action: func(c *cli.Context) error {
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			req := control.RotateRequest{Emergency: c.Bool("emergency"), Wait: c.Bool("wait"), Timeout: durationOf(c, "timeout")}
			ctx, cancel := context.WithTimeout(c.Context, rotateAskTimeout(req))
			defer cancel()
			r, err := cl.Rotate(ctx, req)
			if err != nil {
				return noAnswer(err)
			}
			if err := printResult(c, rotateResultJSON(r), func(w io.Writer) error { return writeRotateText(w, r) }); err != nil {
				return err
			}
			if r.Result != control.RotateStarted && r.Result != control.RotateComplete {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// rotateResultJSON is the --json shape of a rotation's reply.
func rotateResultJSON(r control.RotateReply) rotateJSON {
	pending := r.Pending
	if pending == nil {
		pending = map[string]string{}
	}
	return rotateJSON{Schema: jsonSchema, Epoch: r.Epoch, PublicKey: r.PublicKey, Result: r.Result,
		CutOver: orEmpty(r.CutOver), Missing: orEmpty(r.Missing), Pending: pending}
}

// writeRotateText says how a rotation went, in one line.
func writeRotateText(w io.Writer, r control.RotateReply) error {
	var err error
	switch r.Result {
	case control.RotateStarted:
		_, err = fmt.Fprintf(w, "rotation %d started: new key %s; follow it with dcmesh status, or use --wait\n", r.Epoch, r.PublicKey)
	case control.RotateComplete:
		if len(r.CutOver) == 0 {
			_, err = fmt.Fprintf(w, "rotation %d complete: new key %s; no live peer to wait for\n", r.Epoch, r.PublicKey)
			break
		}
		_, err = fmt.Fprintf(w, "rotation %d complete: new key %s; all %d peers cut over (%s)\n", r.Epoch, r.PublicKey, len(r.CutOver), strings.Join(r.CutOver, ", "))
	default:
		var missing []string
		for _, s := range r.Missing {
			if why := r.Pending[s]; why != "" {
				s += " (" + why + ")"
			}
			missing = append(missing, s)
		}
		_, err = fmt.Fprintf(w, "rotation %d %s: new key %s; confirmed: %s; not confirmed: %s\n", r.Epoch, r.Result, r.PublicKey, strings.Join(r.CutOver, ", "), strings.Join(missing, "; "))
	}
	return err
}
