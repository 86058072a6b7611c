package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/config"
)

// optionFlags maps the options of mesh/ca, mesh/enroll and the agent, as
// their errors name them (config.OptionError), to the flags that set them:
// flag names are written only in this package.
var optionFlags = map[string]string{
	// ca init, ca issue, ca revoke
	"Cluster": "--cluster", "Dir": "--dir", "Site": "--site", "Prefixes": "--prefix", "Overlay": "--overlay",
	"Underlay": "--underlay", "AllowDefault": "--allow-default", "Valid": "--valid", "Out": "--out",
	"Replace": "--replace", "Gateway": "--gateway",
	// init
	"Bundle": "--bundle", "StateDir": "--state-dir", "Endpoint": "--endpoint", "ListenPort": "--listen-port",
	"Interface": "--interface", "GossipAddr": "--gossip-addr", "Join": "--join", "ConfigPath": "--config",
	// agent
	"WireGuard": "--wireguard", "MetricsAddr": "--metrics-addr",
}

// flagError rewrites an option error to name the flags (--prefix, not
// Prefixes); other errors are returned as they are.
func flagError(err error) error {
	var oe *config.OptionError
	if err == nil || !errors.As(err, &oe) || err.Error() != oe.Error() {
		return err
	}
	see := ""
	if oe.See != "" {
		see = flagOf(oe.See)
	}
	return &flaggedError{text: oe.Text(flagOf(oe.Option), see), err: oe}
}

func flagOf(option string) string {
	if f, ok := optionFlags[option]; ok {
		return f
	}
	return option
}

// flaggedError is an option error as the CLI words it.
type flaggedError struct {
	text string
	err  error
}

func (e *flaggedError) Error() string { return e.text }
func (e *flaggedError) Unwrap() error { return e.err }

// parsePrefixes parses the values of a prefix flag.
func parsePrefixes(flag string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range values {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		out = append(out, p)
	}
	return out, nil
}
