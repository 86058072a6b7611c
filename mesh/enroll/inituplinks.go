package enroll

import (
	"fmt"
	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/config"
)

// uplinks returns the endpoints init configures, the preferred first: each
// an address other sites reach with a port, each once, at most
// config.MaxEndpoints, and Endpoint (when set with Endpoints) their first.
func (o *InitOptions) uplinks() ([]netip.AddrPort, error) {
	eps := o.Endpoints
	if len(eps) == 0 {
		if !o.Endpoint.IsValid() {
			return nil, config.Optionf("Endpoint", " is required: this site's underlay IP:PORT for WireGuard, e.g. 192.0.2.10:51820")
		}
		eps = []netip.AddrPort{o.Endpoint}
	} else if o.Endpoint.IsValid() && o.Endpoint != eps[0] {
		return nil, config.Optionf("Endpoint", " %s is not the first of Endpoints (%s): set Endpoints alone", o.Endpoint, eps[0])
	}
	if len(eps) > config.MaxEndpoints {
		return nil, config.Optionf("Endpoint", " is given %d times: a site announces at most %d uplinks", len(eps), config.MaxEndpoints)
	}
	out := make([]netip.AddrPort, 0, len(eps))
	for i, ep := range eps {
		if ep.Port() == 0 || !ep.Addr().IsValid() || ep.Addr().IsUnspecified() {
			return nil, config.Optionf("Endpoint", " %s%s: this site's underlay IP:PORT for WireGuard needs an address other sites reach and a port, e.g. 192.0.2.10:51820", ep, nth(i, len(eps)))
		}
		ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
		for j, prev := range out {
			if prev == ep {
				return nil, config.Optionf("Endpoint", " %s is given twice (%s and %s): list each uplink once", ep, ordinal(j+1), ordinal(i+1))
			}
		}
		out = append(out, ep)
	}
	return out, nil
}

// checkUplinks refuses an endpoint outside the certificate's underlay
// ranges (none: anywhere), the check the agent makes at start
// (checkEndpoints): other sites would reject every record of this site.
func checkUplinks(eps []netip.AddrPort, underlay []netip.Prefix) error {
	if len(underlay) == 0 {
		return nil
	}
	for i, ep := range eps {
		if !config.ContainedIn(config.Host(ep.Addr()), underlay) {
			return config.Optionf("Endpoint", " %s%s is outside the underlay ranges of the certificate (%s): other sites would reject this site's records; use an address in them, or issue a certificate with --underlay for it", ep, nth(i, len(eps)), joinPrefixes(underlay))
		}
	}
	return nil
}

// nth names the i-th of n endpoints when there are several.
func nth(i, n int) string {
	if n < 2 {
		return ""
	}
	return " (the " + ordinal(i+1) + ")"
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "1st"
	case 2:
		return "2nd"
	case 3:
		return "3rd"
	}
	return fmt.Sprintf("%dth", n)
}

func endpointStrings(eps []netip.AddrPort) []string {
	s := make([]string, len(eps))
	for i, ep := range eps {
		s[i] = ep.String()
	}
	return s
}
