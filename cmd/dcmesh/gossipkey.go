package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/urfave/cli/v2"
)

// caGossipKeyCommand is `dcmesh ca gossip-key rotate`, on the CA's machine.
func caGossipKeyCommand(dir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "gossip-key",
		Usage: "replace the cluster's gossip key",
		Subcommands: []*cli.Command{{
			Name:  "rotate",
			Usage: "make a new gossip key, sealed to every enrolled site, and write the bundle",
			Description: `Makes a fresh 32-byte gossip key and seals it, with HPKE, to the identity key
of every site in the inventory that is neither revoked nor expired, under the
next epoch (DIR/gossip-key-epoch.json); the CA signs the bundle. FILE (0600)
can travel anywhere: only the enrolled sites can open it, and the key is never
written unsealed. Then, on any one site: dcmesh gossip-key install --file FILE --wait.
Sites issued by an older version have no certificate in the inventory: pass
their site.crt with --cert.`,
			Flags: []cli.Flag{
				dir,
				&cli.StringFlag{Name: "out", Usage: "bundle `FILE` to write (0600)", Required: true},
				&cli.StringSliceFlag{Name: "cert", Usage: "a site's certificate `FILE` the inventory lacks; repeat for more"},
				jsonFlag(),
			},
			Action: rotateGossipKeyAction,
		}},
	}
}

// caGossipKeyJSON is `dcmesh ca gossip-key rotate --json`.
type caGossipKeyJSON struct {
	Schema     int               `json:"schema"`
	KeyID      string            `json:"key_id"`
	Epoch      uint64            `json:"epoch"`
	Recipients []string          `json:"recipients"`
	Skipped    map[string]string `json:"skipped"`
	Out        string            `json:"out"`
}

func rotateGossipKeyAction(c *cli.Context) error {
	certs, err := readCerts(c.StringSlice("cert"))
	if err != nil {
		return err
	}
	r, err := ca.RotateGossipKey(c.String("dir"), c.String("out"), certs, time.Now())
	if err != nil {
		return flagError(certFlagError(err))
	}
	b, out := r.Bundle, c.String("out")
	skipped := r.Skipped
	if skipped == nil {
		skipped = map[string]string{}
	}
	v := caGossipKeyJSON{Schema: jsonSchema, KeyID: b.KeyID, Epoch: b.Epoch, Recipients: orEmpty(b.Recipients), Skipped: skipped, Out: out}
	return printResult(c, v, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "gossip key %s (epoch %d) sealed to %d sites (%s) in %s\n", b.KeyID, b.Epoch, len(b.Recipients), strings.Join(b.Recipients, ", "), out); err != nil {
			return err
		}
		for _, s := range sortedNames(r.Skipped) {
			fmt.Fprintf(w, "left out: %s (%s)\n", s, r.Skipped[s])
		}
		_, err := fmt.Fprintf(w, "next, on any one site: dcmesh gossip-key install --file %s --wait\n", out)
		return err
	})
}

// certFlagError names --cert in an option error of RotateGossipKey.
func certFlagError(err error) error {
	var oe *config.OptionError
	if errors.As(err, &oe) && oe.Option == "Cert" {
		return errors.New("--cert" + oe.Err.Error())
	}
	return err
}

func readCerts(files []string) ([]*trust.Certificate, error) {
	var out []*trust.Certificate
	for _, f := range files {
		raw, err := wg.ReadRegularFile(f, enroll.MaxPEMFileSize)
		if err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}
		c, err := trust.ParseCertPEM(raw)
		if err != nil {
			return nil, fmt.Errorf("--cert %s: %w", f, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// gossipKeyCommand is `dcmesh gossip-key install`, on a site.
func gossipKeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "gossip-key",
		Usage: "rotate the cluster's gossip key on the running mesh",
		Subcommands: []*cli.Command{{
			Name:  "install",
			Usage: "hand a gossip-key bundle to the local agent; it spreads to every site",
			Description: `The agent checks the bundle (signed by a pinned CA, newer than the one it
holds), opens its share with the site's identity key, keeps the sealed bundle
(gossip-key.json) and gossips it. Every site accepts the new key at once, sends
with it once every live site holds it, and drops the old one once every live
site sends with it: no gossip partition at any moment.

--wait blocks until every live site uses the new key alone, and exits 1 naming
the sites that do not at the timeout. A site that was down during the rotation
cannot talk to the others any more: run this command on it with the same FILE.`,
			Flags: append([]cli.Flag{
				&cli.StringFlag{Name: "file", Usage: "the bundle `FILE` dcmesh ca gossip-key rotate wrote", Required: true},
				&cli.BoolFlag{Name: "wait", Usage: "wait until every live site uses the new key alone"},
				durationFlag("timeout", "with --wait, give up waiting after `DURATION`", 3*time.Minute),
				jsonFlag(),
			}, clientFlags...),
			Action: installGossipKey,
		}},
	}
}

func installGossipKey(c *cli.Context) error {
	raw, err := wg.ReadRegularFile(c.String("file"), control.MaxGossipKeyBundle)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	cl, _, err := agentClient(c)
	if err != nil {
		return err
	}
	req := control.GossipKeyRequest{Bundle: raw, Wait: c.Bool("wait"), Timeout: durationOf(c, "timeout")}
	ask := slowAskTimeout
	if req.Wait {
		ask = req.WaitFor() + control.LongPollMargin + 5*time.Second
	}
	ctx, cancel := context.WithTimeout(c.Context, ask)
	defer cancel()
	r, err := cl.InstallGossipKey(ctx, req)
	if err != nil {
		return noAnswer(err)
	}
	pending := r.Pending
	if pending == nil {
		pending = map[string]string{}
	}
	v := gossipKeyInstallJSON{Schema: jsonSchema, Epoch: r.Epoch, KeyID: r.KeyID, Result: r.Result, Using: orEmpty(r.Using), Pending: pending}
	if err := printResult(c, v, func(w io.Writer) error { return writeGossipKeyInstall(w, r) }); err != nil {
		return err
	}
	if r.Result == control.GossipKeyIncomplete {
		return cli.Exit("", 1)
	}
	return nil
}

// gossipKeyInstallJSON is `dcmesh gossip-key install --json`.
type gossipKeyInstallJSON struct {
	Schema  int                     `json:"schema"`
	Epoch   uint64                  `json:"epoch"`
	KeyID   string                  `json:"key_id"`
	Result  control.GossipKeyResult `json:"result"`
	Using   []string                `json:"using"`
	Pending map[string]string       `json:"pending"`
}

// writeGossipKeyInstall says how the rotation stands, in one line.
func writeGossipKeyInstall(w io.Writer, r control.GossipKeyReply) error {
	var err error
	switch r.Result {
	case control.GossipKeyStarted:
		_, err = fmt.Fprintf(w, "gossip key %s (epoch %d) installed; follow it with dcmesh status, or use --wait\n", r.KeyID, r.Epoch)
	case control.GossipKeyComplete:
		_, err = fmt.Fprintf(w, "gossip key %s (epoch %d) in use by every live site (%s); the old key is removed\n", r.KeyID, r.Epoch, strings.Join(r.Using, ", "))
	default:
		var pending []string
		for _, s := range sortedNames(r.Pending) {
			pending = append(pending, s+" ("+r.Pending[s]+")")
		}
		_, err = fmt.Fprintf(w, "gossip key %s (epoch %d) %s: using it: %s; not yet: %s\n", r.KeyID, r.Epoch, r.Result, strings.Join(r.Using, ", "), strings.Join(pending, "; "))
	}
	return err
}

// writeGossipKey writes the status line of the gossip key: ids, never keys.
func writeGossipKey(b *strings.Builder, k *control.GossipKeyStatus) {
	if k == nil {
		return
	}
	fmt.Fprintf(b, "gossip key: %s in use, installed %s, epoch %d, %s", k.InUse, strings.Join(k.Installed, ", "), k.Epoch, k.Phase)
	for _, s := range sortedNames(k.Pending) {
		fmt.Fprintf(b, "; %s: %s", s, k.Pending[s])
	}
	b.WriteString("\n")
}
