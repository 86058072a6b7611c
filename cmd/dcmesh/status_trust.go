package main

import (
	"fmt"
	"strings"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// writeTrustSummary writes the trust lines of `dcmesh status`: this site's
// certificate, each pinned CA and each peer's certificate, with expiry
// (the message says degraded or critical when it is).
func writeTrustSummary(b *strings.Builder, t *control.TrustStatus) {
	if t == nil {
		return
	}
	c := t.Certificate
	fmt.Fprintf(b, "certificate: serial %s, %s\n", c.Serial, c.Message)
	for _, ca := range t.CAs {
		fmt.Fprintf(b, "CA %q (id %s): %s\n", ca.Subject, ca.IssuerID, ca.Message)
	}
	for _, p := range t.Peers {
		fmt.Fprintf(b, "peer certificate %s: serial %s, %s\n", p.Subject, p.Serial, p.Message)
	}
}
