package main

import (
	"fmt"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/urfave/cli/v2"
)

// manCommand prints dcmesh(8) in roff, generated from the same command and
// flag definitions as --help, so the man page the Debian package installs
// cannot drift from the binary (packaging/build-deb runs it). Hidden: it is
// a build step, not something an operator types.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the dcmesh(8) manual page in roff (used to build the package)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("man: render the manual page: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page+manFooter)
			return err
		},
	}
}

// manFooter adds what --help has no place for: the files and where to read
// on.
var manFooter = `
.SH FILES
.TP
.I ` + config.DefaultConfigPath + `
the agent configuration, if present
.TP
.I ` + config.DefaultStateDir.Config() + `
the configuration \fBdcmesh init\fP writes, used when the one above is absent
.TP
.I ` + string(config.DefaultStateDir) + `/
keys (0600), certificates, site records and the control socket \fI` + config.ControlSocketFile + `\fP
.TP
.I /etc/default/dcmesh
environment for the systemd unit: DCMESH_METRICS_ADDR, DCMESH_LOG_FORMAT, DCMESH_WIREGUARD
.TP
.I /etc/iproute2/rt_protos.d/dcmesh.conf
names route protocol 220, so \fBip route show proto dcmesh\fP lists the routes dcmesh owns

.SH SEE ALSO
\fBwg\fP(8), \fBip-route\fP(8), \fBsystemd.exec\fP(5);
/usr/share/doc/dcmesh/examples/ (configuration, runbook, alert rules, dashboard)
`
