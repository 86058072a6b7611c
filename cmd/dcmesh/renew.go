package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/urfave/cli/v2"
)

// renewCommand is `dcmesh renew --bundle DIR`: install a renewed bundle
// into the running agent (POST /v1/renew).
func renewCommand() *cli.Command {
	return &cli.Command{
		Name:  "renew",
		Usage: "install a renewed certificate bundle ('dcmesh ca issue') into the running agent, without a restart",
		Description: `Reads DIR/ca.crt, DIR/site.crt and DIR/identity.key (DIR/gossip.key is not
read: the gossip key does not change with a renewal) and hands them to the
running agent over its control socket. The agent checks them before it changes
anything: the certificate is for this site, signed by a CA of DIR/ca.crt, in
date and not revoked; the identity key belongs to it; it permits nothing the
running certificate does not (same or narrower prefixes and underlay, the same
overlay address) and still covers what the site announces; and every peer's
certificate still verifies under DIR/ca.crt (unless --allow-dropping-peers). A
refusal names what does not match and changes nothing. Then it replaces the
configured trust.ca_file, trust.cert_file and trust.identity_key_file
atomically, keeping each old file as FILE.prev, and publishes its record signed
with the new certificate: every peer adopts it, without a packet lost.
--dry-run checks only.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "the bundle `DIR` 'dcmesh ca issue' wrote", Required: true},
			&cli.BoolFlag{Name: "dry-run", Usage: "check the bundle against the running agent, change nothing"},
			&cli.BoolFlag{Name: "allow-dropping-peers", Usage: "install a ca.crt under which some peers' certificates no longer verify (those sites are dropped)"},
			&cli.BoolFlag{Name: "json", Usage: "print the agent's answer as JSON"},
		}, withTimeout(slowAskTimeout)...),
		Action: func(c *cli.Context) error {
			req, err := readRenewBundle(c.String("bundle"))
			if err != nil {
				return err
			}
			defer clear(req.Identity)
			req.DryRun, req.AllowDroppingPeers = c.Bool("dry-run"), c.Bool("allow-dropping-peers")
			cl, _, err := agentClient(c)
			if err != nil {
				return err
			}
			reply, err := ask(c, func(ctx context.Context) (control.RenewReply, error) { return cl.Renew(ctx, req) })
			if err != nil {
				return noAnswer(err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(reply)
			}
			_, err = fmt.Fprint(c.App.Writer, renewSummary(reply))
			return err
		},
	}
}

// readRenewBundle reads the files of a bundle directory for the agent.
func readRenewBundle(dir string) (control.RenewRequest, error) {
	f := enroll.BundleFiles(dir)
	var req control.RenewRequest
	var err error
	if req.CA, err = wg.ReadRegularFile(f.CA.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("--bundle: %s: %w", f.CA.Name, err)
	}
	if req.Cert, err = wg.ReadRegularFile(f.Cert.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("--bundle: %s: %w", f.Cert.Name, err)
	}
	if req.Identity, err = wg.ReadSecretFile(f.Identity.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("--bundle: %s: %w", config.IdentityKeyFile, err)
	}
	return req, nil
}

func renewSummary(r control.RenewReply) string {
	var b strings.Builder
	verb := "renewed"
	if r.DryRun {
		verb = "would be renewed (dry run: nothing changed)"
	}
	fmt.Fprintf(&b, "site %s %s: certificate %s replaces %s, valid until %s\n", r.Site, verb, r.Serial, r.PreviousSerial, r.NotAfter.Format(time.RFC3339))
	if r.IdentityKeyChanged {
		b.WriteString("new identity key: peers adopt it with the site's next record\n")
	}
	fmt.Fprintf(&b, "pinned CAs: %s\n", strings.Join(r.CAs, ", "))
	for _, n := range r.Narrower {
		fmt.Fprintf(&b, "narrower: %s\n", n)
	}
	for _, w := range r.Written {
		fmt.Fprintf(&b, "wrote %s (the old file is %s.prev)\n", w, w)
	}
	if !r.DryRun {
		b.WriteString("published; check with: dcmesh status (on any peer, the site's certificate serial)\n")
	}
	return b.String()
}
