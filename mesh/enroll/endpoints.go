package enroll

import (
	"fmt"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// checkEndpoints refuses endpoints outside the certificate's underlay
// ranges (none: anywhere): other sites would reject every record of this
// site (trust.ReasonEndpoint), so say it here, at start, naming the field.
func checkEndpoints(cfg *config.Config, cert *trust.Certificate) error {
	if len(cert.Underlay) == 0 {
		return nil
	}
	eps := cfg.UplinkEndpoints()
	for i, e := range eps {
		if config.ContainedIn(config.Host(e.Addr()), cert.Underlay) {
			continue
		}
		field := "endpoint"
		if len(cfg.Endpoints) > 1 {
			field = fmt.Sprintf("endpoints[%d]", i)
		}
		return fmt.Errorf("%s: %s is outside the underlay ranges of the certificate %s (%v): other sites would reject this site's records; use an address in them, or issue a certificate with --underlay for it", field, e, cfg.Trust.CertFile, cert.Underlay)
	}
	return nil
}
