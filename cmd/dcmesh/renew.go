package main

import (
	"context"
	"errors"
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
		Usage: "install a renewed certificate bundle ('dcmesh ca issue') or a new CA bundle into the running agent, without a restart",
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
--dry-run checks only.

A CA rollover uses --ca FILE: the CAs to pin, in place of the bundle's ca.crt.
Without --bundle it keeps the running certificate and only changes the pinned
CAs: first to the old and the new CA together (on every site), at the end to
the new CA alone (refused while a peer's certificate is still the old CA's).
See examples/bootstrap.md, "Rolling over the CA".`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "the bundle `DIR` 'dcmesh ca issue' wrote (default: keep the running certificate; then --ca is required)"},
			&cli.StringFlag{Name: "ca", Usage: "a CA bundle `FILE` (PEM, one or more CAs) to pin instead of the bundle's ca.crt: a CA rollover"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check the bundle against the running agent, change nothing"},
			&cli.BoolFlag{Name: "allow-dropping-peers", Usage: "install a ca.crt under which some peers' certificates no longer verify (those sites are dropped)"},
			jsonFlag(),
		}, withTimeout(slowAskTimeout)...),
		Action: func(c *cli.Context) error {
			cl, cfg, err := agentClient(c)
			if err != nil {
				return err
			}
			req, err := renewRequest(c, cfg)
			if err != nil {
				return err
			}
			defer clear(req.Identity)
			reply, err := ask(c, func(ctx context.Context) (control.RenewReply, error) { return cl.Renew(ctx, req) })
			if err != nil {
				return noAnswer(err)
			}
			if c.Bool("json") {
				reply.Written, reply.CAs = orEmpty(reply.Written), orEmpty(reply.CAs)
				return writeJSON(c.App.Writer, renewJSON{Schema: jsonSchema, RenewReply: reply})
			}
			_, err = fmt.Fprint(c.App.Writer, renewSummary(reply))
			return err
		},
	}
}

// renewRequest reads what `renew` sends: the bundle's files, or the
// installed certificate and key (no --bundle), with --ca's CA bundle in
// place of the bundle's ca.crt.
func renewRequest(c *cli.Context, cfg *config.Config) (control.RenewRequest, error) {
	dir, caFile := c.String("bundle"), c.String("ca")
	var req control.RenewRequest
	var err error
	switch {
	case dir != "":
		req, err = readRenewFiles(enroll.BundleFiles(dir), "--bundle")
	case caFile == "":
		return req, errors.New("renew: give --bundle DIR (a renewed certificate) or --ca FILE (a new CA bundle for the running certificate), or both")
	case cfg == nil:
		return req, errors.New("--ca without --bundle: the installed certificate is read from the configuration: give --config")
	default:
		req, err = readRenewFiles(enroll.Files{CA: enroll.File{Path: cfg.Trust.CAFile, Name: "trust.ca_file"},
			Cert:     enroll.File{Path: cfg.Trust.CertFile, Name: "trust.cert_file"},
			Identity: enroll.File{Path: cfg.Trust.IdentityKeyFile, Name: "trust.identity_key_file"}}, cfg.Path)
	}
	if err != nil {
		return req, err
	}
	if caFile != "" {
		if req.CA, err = wg.ReadRegularFile(caFile, enroll.MaxPEMFileSize); err != nil {
			clear(req.Identity)
			return req, fmt.Errorf("--ca: %w", err)
		}
	}
	req.DryRun, req.AllowDroppingPeers = c.Bool("dry-run"), c.Bool("allow-dropping-peers")
	return req, nil
}

// readRenewFiles reads the CA bundle, certificate and identity key of f;
// errors name where (the flag, or the configuration file).
func readRenewFiles(f enroll.Files, where string) (control.RenewRequest, error) {
	var req control.RenewRequest
	var err error
	if req.CA, err = wg.ReadRegularFile(f.CA.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("%s: %s: %w", where, f.CA.Name, err)
	}
	if req.Cert, err = wg.ReadRegularFile(f.Cert.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("%s: %s: %w", where, f.Cert.Name, err)
	}
	if req.Identity, err = wg.ReadSecretFile(f.Identity.Path, enroll.MaxPEMFileSize); err != nil {
		return req, fmt.Errorf("%s: %s: %w", where, f.Identity.Name, err)
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
