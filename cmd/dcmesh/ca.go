package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/urfave/cli/v2"
)

func caCommand() *cli.Command {
	dir := &cli.StringFlag{Name: "dir", Usage: "CA `DIR` (keep it offline: it holds the CA key)", Required: true}
	return &cli.Command{
		Name:  "ca",
		Usage: "run the cluster's certificate authority (on the operator's machine, not on sites)",
		Description: `The CA certifies each site: its name, the prefixes it may announce, its
overlay address and the underlay ranges its endpoints may use. Agents believe
only records signed by a certified site, so a machine with the gossip key but no
certificate from this CA can change nothing.`,
		Subcommands: []*cli.Command{caInitCommand(dir), caIssueCommand(dir), caRevokeCommand(dir), caListCommand(dir), caGossipKeyCommand(dir)},
	}
}

func caInitCommand(dir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a CA directory: CA key and certificate, cluster gossip key",
		Description: `Writes DIR/ca.key (0600), DIR/ca.crt, DIR/gossip.key (0600) and an empty
inventory. Refuses a directory that already holds a CA.`,
		Flags: []cli.Flag{dir, &cli.StringFlag{Name: "cluster", Usage: "cluster `NAME` (keeps clusters that share a network apart)", Value: ca.DefaultCluster}},
		Action: func(c *cli.Context) error {
			if err := ca.Init(c.String("dir"), c.String("cluster"), time.Now()); err != nil {
				return flagError(err)
			}
			_, err := fmt.Fprintf(c.App.Writer, "CA for cluster %q created in %s\nnext: dcmesh ca issue --dir %s --site NAME --prefix CIDR --overlay ADDR --out BUNDLE\n",
				c.String("cluster"), c.String("dir"), c.String("dir"))
			return err
		},
	}
}

func caIssueCommand(dir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "issue",
		Usage: "certify a site and write its enrollment bundle",
		Description: `Writes BUNDLE/identity.key (0600), BUNDLE/site.crt, BUNDLE/ca.crt and
BUNDLE/gossip.key (0600): copy the bundle to the site and run 'dcmesh init'.
Refuses a prefix or overlay address that overlaps one issued to another site
(revoke that site first). Read the certificate with: openssl x509 -noout -text -in BUNDLE/site.crt

--gateway N certifies another gateway of the site: the same site name and
prefixes, its own overlay address, identity key and bundle; its certificate
carries dcmesh:gateway=N and is renewed on its own (absent: gateway 0, the
certificate a one-gateway site has). Each gateway runs an agent of its own;
the other sites hold gateway N on their WireGuard interface number N and
spread the site's prefixes over its healthy gateways (docs/design/gateways.md).
Start an agent with the bundle of gateway 1 or above only once every agent of
the cluster runs this version or a later one (the command says why).`,
		Flags: []cli.Flag{
			dir,
			&cli.StringFlag{Name: "site", Usage: "site `NAME` (lowercase letters, digits, '-')", Required: true},
			gatewayFlag(fmt.Sprintf("the gateway's index `N` among its site's, 0 to %d", trust.MaxGateways-1), "0, the site's first or only"),
			&cli.StringSliceFlag{Name: "prefix", Usage: "a `CIDR` the site owns; repeat for more", Required: true},
			&cli.StringFlag{Name: "overlay", Usage: "the site's overlay `ADDR` on the tunnel interface", Required: true},
			&cli.StringSliceFlag{Name: "underlay", Usage: "a `CIDR` the site's endpoints must be in; repeat for more (default: anywhere)"},
			durationFlag("valid", "certificate lifetime `DURATION`, e.g. 365d or 90d", ca.DefaultCertValidity),
			&cli.BoolFlag{Name: "allow-default", Usage: "let the site announce a default route (0.0.0.0/0, ::/0)"},
			&cli.StringFlag{Name: "out", Usage: "bundle `DIR` to create", Required: true},
			&cli.BoolFlag{Name: "replace", Usage: "re-issue a site the CA holds a live certificate for with other prefixes or overlay (default: only a renewal: same or narrower)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			cert, note, err := issueFromFlags(c)
			if err != nil {
				return err
			}
			if cert.Gateway != 0 {
				fmt.Fprint(c.App.ErrWriter, gatewayAgentWarning(cert.Site, cert.Gateway))
			}
			if !c.Bool("json") {
				if _, err := fmt.Fprint(c.App.Writer, note); err != nil {
					return err
				}
			}
			return printResult(c, issueResultJSON(cert, c.String("out")), func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s certified (serial %s, valid until %s) for %v\nbundle: %s\nnext, on the site: dcmesh init --bundle %s --state-dir /var/lib/dcmesh --endpoint IP:PORT\n",
					gatewayName(cert.Site, cert.Gateway), cert.Serial.Text(16), cert.NotAfter.Format(time.RFC3339), cert.Prefixes, c.String("out"), c.String("out"))
				return err
			})
		},
	}
}

func caRevokeCommand(dir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "revoke every certificate of a site (or of one of its gateways) and write the revocation list",
		Description: `Writes the CA-signed revocation list (all revocations so far) to FILE and
DIR/crl.pem. Hand it to any one agent with 'dcmesh revoke --in FILE': it
spreads to every site, and each drops the revoked site. --site alone revokes
every gateway of the site; with --gateway N only that gateway's certificates.`,
		Flags: []cli.Flag{
			dir,
			&cli.StringFlag{Name: "site", Usage: "site `NAME` to revoke", Required: true},
			gatewayFlag("revoke only the gateway with index `N` of the site", "every gateway"),
			&cli.StringFlag{Name: "out", Usage: "revocation list `FILE` to write", Required: true},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			return revokeFromFlags(c)
		},
	}
}

// issueOptions parses the flags of `ca issue`.
func issueOptions(c *cli.Context) (ca.IssueOptions, error) {
	o := ca.IssueOptions{Dir: c.String("dir"), Site: c.String("site"), AllowDefault: c.Bool("allow-default"),
		Valid: durationOf(c, "valid"), Out: c.String("out"), Now: time.Now(), Replace: c.Bool("replace")}
	var err error
	if o.Gateway, err = gatewayOf(c); err != nil {
		return o, err
	}
	if o.Prefixes, err = parsePrefixes("--prefix", c.StringSlice("prefix")); err != nil {
		return o, err
	}
	if o.Overlay, err = netip.ParseAddr(strings.TrimSpace(c.String("overlay"))); err != nil {
		return o, fmt.Errorf("--overlay %q: the site's overlay IP address, e.g. 10.255.0.1", c.String("overlay"))
	}
	o.Underlay, err = parsePrefixes("--underlay", c.StringSlice("underlay"))
	return o, err
}

// issueResultJSON is the --json shape of a certified site.
func issueResultJSON(cert *trust.Certificate, bundle string) issueJSON {
	out := issueJSON{Schema: jsonSchema, Site: cert.Site, Gateway: cert.Gateway, Serial: cert.Serial.Text(16), NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(),
		Prefixes: []string{}, Overlay: cert.Overlay.String(), Underlay: []string{}, AllowDefault: cert.AllowDefault, Bundle: bundle}
	for _, p := range cert.Prefixes {
		out.Prefixes = append(out.Prefixes, p.String())
	}
	for _, p := range cert.Underlay {
		out.Underlay = append(out.Underlay, p.String())
	}
	return out
}
