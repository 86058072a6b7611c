package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/urfave/cli/v2"
)

// caListCommand is `dcmesh ca list`: what the CA issued, with expiry.
func caListCommand(dir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list every certificate the CA issued: site, gateway, serial, prefixes, not-after, state",
		Description: `One line per certificate, by site, gateway and then issue time. GATEWAY is
the gateway's index among its site's (0: the first or only). STATE is valid,
expired or revoked; LEFT is the time until not-after. --json: docs/CLI.md.`,
		Flags: []cli.Flag{dir, jsonFlag()},
		Action: func(c *cli.Context) error {
			now := time.Now()
			list, err := ca.List(c.String("dir"), now)
			if err != nil {
				return flagError(err)
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, caListJSON{Schema: jsonSchema, Certificates: append([]ca.Listed{}, list...)})
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SITE\tGATEWAY\tSERIAL\tPREFIXES\tOVERLAY\tNOT AFTER\tLEFT\tSTATE")
			for _, l := range list {
				left := "-"
				if l.State == ca.ListedValid {
					left = daysLeft(time.Duration(l.LeftSeconds) * time.Second)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Site, l.Gateway, l.Serial, strings.Join(l.Prefixes, ","), l.Overlay,
					l.NotAfter.UTC().Format(time.RFC3339), left, l.State)
			}
			return tw.Flush()
		},
	}
}

// daysLeft writes a certificate's remaining life as an operator reads a
// deadline: days and hours, or roundAge below a day.
func daysLeft(d time.Duration) string {
	const day = 24 * time.Hour
	if d < day {
		return roundAge(d)
	}
	if h := (d % day) / time.Hour; h > 0 {
		return fmt.Sprintf("%dd%dh", d/day, h)
	}
	return fmt.Sprintf("%dd", d/day)
}

// issueFromFlags is `ca issue`: it works out what the issue is to the
// site's live certificate (issuePlanNote, for the text output), then issues.
func issueFromFlags(c *cli.Context) (cert *trust.Certificate, note string, err error) {
	o, err := issueOptions(c)
	if err != nil {
		return nil, "", err
	}
	if note, err = issuePlanNote(o); err != nil {
		return nil, "", err
	}
	if cert, err = ca.Issue(o); err != nil {
		return nil, "", flagError(err)
	}
	return cert, note, nil
}

// issuePlanNote says what `ca issue` is about to do when the site already
// holds a live certificate: a renewal (and what it narrows) or a replacement
// (refused without --replace, by ca.Issue itself).
func issuePlanNote(o ca.IssueOptions) (string, error) {
	p, err := ca.Plan(o)
	if err != nil {
		return "", flagError(err)
	}
	switch p.Kind {
	case ca.IssueRenewal:
		s := fmt.Sprintf("renewal of %s (replaces certificate %s, valid until %s): install it on the running site with dcmesh renew --bundle %s\n",
			gatewayName(o.Site, o.Gateway), p.Previous.Serial, p.Previous.NotAfter.UTC().Format(time.RFC3339), o.Out)
		for _, n := range p.Narrower {
			s += "narrower: " + n + " (stop announcing it on the site before renewing)\n"
		}
		return s, nil
	case ca.IssueReplacement:
		if o.Replace {
			return fmt.Sprintf("replacement of %s (%s): the old certificate %s keeps its prefixes until it is revoked or expires\n",
				gatewayName(o.Site, o.Gateway), strings.Join(p.Changes, "; "), p.Previous.Serial), nil
		}
	}
	return "", nil
}
