package main

import (
	"fmt"
	"io"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/urfave/cli/v2"
)

// gatewayFlag is --gateway of `ca issue` and `ca revoke`.
func gatewayFlag(usage, def string) cli.Flag {
	return &cli.IntFlag{Name: "gateway", Usage: usage, DefaultText: def}
}

// gatewayOf reads --gateway: 0 to trust.MaxGateways-1, 0 when absent. Out
// of range is a usage error (exit 2).
func gatewayOf(c *cli.Context) (uint8, error) {
	n := c.Int("gateway")
	if n < 0 || n >= trust.MaxGateways {
		return 0, usageError(c, "--gateway %d: a gateway index among its site's, 0 to %d (0, the default, is the site's first or only gateway)", n, trust.MaxGateways-1)
	}
	return uint8(n), nil
}

// gatewayName says which gateway a command acted on, as an operator reads
// it: "site fra1" for gateway 0, "gateway 1 of site fra1" otherwise.
func gatewayName(site string, gw uint8) string {
	if gw == 0 {
		return "site " + site
	}
	return fmt.Sprintf("gateway %d of site %s", gw, site)
}

// gatewayAgentWarning is what `ca issue --gateway N` (N > 0), and `init`
// from such a bundle, print on stderr: agents of earlier versions know one
// gateway per site (docs/ARCHITECTURE.md, "Gateways of a site").
func gatewayAgentWarning(site string, gw uint8) string {
	id := trust.GatewayID{Site: site, Gateway: gw}
	return fmt.Sprintf(`warning: start %s's agent only once every agent of the cluster runs this version or
  a later one. Earlier versions keep one record per site: there, %s's records would replace
  %s's, and %s would drop out of their routes until gateway 0 publishes again
  (docs/ARCHITECTURE.md, "Gateways of a site").
`, id, id, site, site)
}

// revokeFromFlags is `ca revoke`: every gateway of --site, or --gateway
// alone.
func revokeFromFlags(c *cli.Context) error {
	site, now := c.String("site"), time.Now()
	out := caRevokeJSON{Schema: jsonSchema, Site: site, Serials: []string{}, Out: c.String("out")}
	var crl *trust.RevocationList
	var err error
	what := "site " + site
	if c.IsSet("gateway") {
		gw, gerr := gatewayOf(c)
		if gerr != nil {
			return gerr
		}
		out.Gateway, what = &gw, fmt.Sprintf("gateway %d of site %s", gw, site)
		crl, err = ca.RevokeGateway(c.String("dir"), trust.GatewayID{Site: site, Gateway: gw}, c.String("out"), now)
	} else {
		crl, err = ca.Revoke(c.String("dir"), site, c.String("out"), now)
	}
	if err != nil {
		return flagError(err)
	}
	out.Number = crl.Number.String()
	for _, s := range crl.Serials {
		out.Serials = append(out.Serials, s.Text(16))
	}
	return printResult(c, out, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s revoked; revocation list #%s (%d certificates) in %s\nnext: dcmesh revoke --in %s (on any site)\n",
			what, crl.Number, len(crl.Serials), out.Out, out.Out)
		return err
	})
}
