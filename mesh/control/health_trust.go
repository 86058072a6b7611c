package control

import "fmt"

// trustHealth adds what the trust material's expiry says to critical and
// degraded: this site's certificate and each pinned CA, by the state the
// agent classified them in. Each reason names the file and the fix. Peers'
// certificates are shown in status but judged by their own sites' health.
func trustHealth(t *TrustStatus, critical, degraded []string) ([]string, []string) {
	if t == nil {
		return critical, degraded
	}
	add := func(state ExpiryState, reason string) {
		switch state {
		case ExpiryCritical:
			critical = append(critical, reason)
		case ExpiryDegraded:
			degraded = append(degraded, reason)
		}
	}
	c := t.Certificate
	add(c.State, fmt.Sprintf("this site's certificate (serial %s, trust.cert_file %s) %s: every other site drops this one when it expires; renew: dcmesh ca issue --site %s ... on the CA host, then dcmesh renew --bundle DIR on this site",
		c.Serial, t.CertFile, c.Message, c.Subject))
	for _, ca := range t.CAs {
		add(ca.State, fmt.Sprintf("pinned CA %q (id %s, trust.ca_file %s) %s: every certificate it signed stops verifying then; roll over to a new CA (examples/bootstrap.md, \"Rolling over the CA\")",
			ca.Subject, ca.IssuerID, t.CAFile, ca.Message))
	}
	return critical, degraded
}
