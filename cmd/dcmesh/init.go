package main

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/urfave/cli/v2"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "set up this site from its enrollment bundle",
		Description: `Copies the bundle from 'dcmesh ca issue' into the state directory (0700),
creates the site's first WireGuard key and writes the agent configuration
(default STATE_DIR/dcmesh.yaml), last. Nothing is overwritten: a state directory
that already holds a site is refused before anything is written. Then run:
  dcmesh agent --config STATE_DIR/dcmesh.yaml`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "bundle `DIR` written by dcmesh ca issue", Required: true},
			&cli.StringFlag{Name: "state-dir", Usage: "state `DIR` for keys, records and the control socket", Required: true},
			&cli.StringSliceFlag{Name: "endpoint", Usage: "this site's underlay `IP:PORT` for WireGuard, as other sites reach it; repeat for several uplinks, the preferred first", Required: true},
			&cli.IntFlag{Name: "listen-port", Usage: "local WireGuard UDP `PORT`", DefaultText: "the endpoint's port"},
			&cli.StringFlag{Name: "interface", Usage: "WireGuard interface `NAME`", Value: config.DefaultInterface},
			&cli.StringFlag{Name: "gossip-addr", Usage: "gossip `IP:PORT` on the underlay, inside the certificate's underlay ranges", DefaultText: "the endpoint's IP, port 7946"},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip `IP:PORT` of an existing site; repeat for more"},
			&cli.StringFlag{Name: "config", Usage: "configuration `FILE` to write", DefaultText: "STATE_DIR/dcmesh.yaml"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			o, err := initOptions(c)
			if err != nil {
				return err
			}
			res, err := enroll.InitSite(o)
			if err != nil {
				return flagError(err)
			}
			if res.Gateway != 0 {
				fmt.Fprint(c.App.ErrWriter, gatewayAgentWarning(res.Site, res.Gateway))
			}
			next := "dcmesh agent --config " + res.ConfigPath
			out := initJSON{Schema: jsonSchema, Site: res.Site, PublicKey: res.PublicKey.String(), Config: res.ConfigPath, StateDir: o.StateDir, Next: next,
				Endpoints: endpointStrings(res.Endpoints)}
			return printResult(c, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "site %s initialised\nWireGuard public key: %s\nconfiguration: %s\nnext: %s\n", res.Site, res.PublicKey, res.ConfigPath, next)
				return err
			})
		},
	}
}

// initOptions parses the flags of `init`.
func initOptions(c *cli.Context) (enroll.InitOptions, error) {
	o := enroll.InitOptions{Bundle: c.String("bundle"), StateDir: c.String("state-dir"), ListenPort: c.Int("listen-port"),
		Interface: c.String("interface"), ConfigPath: c.String("config"), Now: time.Now()}
	for _, s := range c.StringSlice("endpoint") {
		ep, err := netip.ParseAddrPort(s)
		if err != nil || ep.Port() == 0 || ep.Addr().IsUnspecified() {
			return o, fmt.Errorf("--endpoint %q: this site's underlay IP:PORT for WireGuard, e.g. 192.0.2.10:51820 (host names are not resolved)", s)
		}
		o.Endpoints = append(o.Endpoints, ep)
	}
	var err error
	if s := c.String("gossip-addr"); s != "" {
		if o.GossipAddr, err = config.ParseGossipAddr(s); err != nil {
			return o, fmt.Errorf("--gossip-addr: %w", err)
		}
	}
	for _, s := range c.StringSlice("join") {
		ap, err := config.ParseGossipAddr(s)
		if err != nil {
			return o, fmt.Errorf("--join: %w", err)
		}
		o.Join = append(o.Join, ap)
	}
	return o, nil
}

func endpointStrings(eps []netip.AddrPort) []string {
	s := make([]string, len(eps))
	for i, ep := range eps {
		s[i] = ep.String()
	}
	return s
}
