package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

func graphCommand() *cli.Command {
	return &cli.Command{
		Name:      "graph",
		Usage:     "print the mesh as a Graphviz DOT graph: sites, tunnels coloured by state",
		ArgsUsage: " ",
		Description: `Draws this site's view of the mesh from its agent's status (as dcmesh status
does): sites are nodes (this site filled, static peers as boxes, gossip members
that are not alive dashed), tunnels are edges coloured by the peer's state: green
up, orange degraded (stale), red down, grey unknown; labelled with the handshake
age and the in-tunnel probe round trip. Render it with Graphviz:

  dcmesh graph | dot -Tsvg > mesh.svg        # or circo, for a ring

--json-input FILE reads a saved "dcmesh status --json" instead of asking the
agent ("-": standard input). Repeat it with the statuses of several sites to draw
the whole mesh: a tunnel both ends reported is drawn once, in the worse of the
two states, labelled with both views.`,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "json-input", Usage: "read a `FILE` written by dcmesh status --json instead of asking the agent (\"-\": stdin; repeatable)"},
		}, withTimeout(quickAskTimeout)...),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("graph takes no arguments (got %q); statuses come from the agent or --json-input", c.Args().First())
			}
			statuses, err := graphInputs(c)
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, meshDOT(statuses))
			return err
		},
	}
}

// graphInputs returns the statuses to draw: the files of --json-input, or
// the agent's.
func graphInputs(c *cli.Context) ([]control.Status, error) {
	files := c.StringSlice("json-input")
	if len(files) == 0 {
		cl, _, err := agentClient(c)
		if err != nil {
			return nil, err
		}
		st, err := ask(c, cl.Status)
		if err != nil {
			return nil, noAnswer(err)
		}
		return []control.Status{st}, nil
	}
	var out []control.Status
	for _, f := range files {
		st, err := readStatusFile(f, c.App.Reader)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// maxStatusFile bounds a --json-input file: a status of 1,000 sites is
// well under it.
const maxStatusFile = 64 << 20

// readStatusFile reads one `dcmesh status --json` ("-": stdin).
func readStatusFile(name string, stdin io.Reader) (control.Status, error) {
	var st control.Status
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return st, fmt.Errorf("--json-input: %w", err)
		}
		defer f.Close()
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, maxStatusFile+1))
	if err != nil {
		return st, fmt.Errorf("--json-input %s: %w", name, err)
	}
	if len(raw) > maxStatusFile {
		return st, fmt.Errorf("--json-input %s: larger than %d MiB; is it a dcmesh status --json?", name, maxStatusFile>>20)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("--json-input %s: not a dcmesh status --json: %w", name, err)
	}
	switch {
	case st.Schema != control.StatusSchema:
		return st, fmt.Errorf("--json-input %s: \"schema\" is %d; this dcmesh reads schema %d (write it with this version's dcmesh status --json)", name, st.Schema, control.StatusSchema)
	case st.Site == "":
		return st, fmt.Errorf("--json-input %s: no \"site\"; write it with dcmesh status --json", name)
	}
	return st, nil
}
