package control

import (
	"strings"
	"testing"
	"time"
)

// This site's certificate and each pinned CA drive health by the state the
// agent classified them in; a peer's expiring certificate does not (its own
// site's health reports it). Each reason names the file and the fix.
func TestHealthCertificateExpiry(t *testing.T) {
	base := func(site, ca, peer ExpiryState) Status {
		return Status{Site: "fra1", Peers: []PeerStatus{{Site: "ams1", State: PeerUp, Role: RoleCurrent}},
			Trust: &TrustStatus{CertFile: "/var/lib/dcmesh/site.crt", CAFile: "/var/lib/dcmesh/ca.crt",
				Certificate: CertificateStatus{Subject: "fra1", Serial: "abc", State: site, Message: "expires soon"},
				CAs:         []CertificateStatus{{Subject: "dcmesh CA prod", IssuerID: "0011", State: ca, Message: "expires later"}},
				Peers:       []CertificateStatus{{Subject: "ams1", State: peer}}}}
	}
	cases := []struct {
		name           string
		site, ca, peer ExpiryState
		code           int
		want           []string
	}{
		{"all in date", ExpiryHealthy, ExpiryHealthy, ExpiryHealthy, 0, nil},
		{"peer expiring only", ExpiryHealthy, ExpiryHealthy, ExpiryCritical, 0, nil},
		{"site within warn", ExpiryDegraded, ExpiryHealthy, ExpiryHealthy, 1,
			[]string{"this site's certificate (serial abc, trust.cert_file /var/lib/dcmesh/site.crt) expires soon", "dcmesh ca issue --site fra1", "dcmesh renew --bundle DIR"}},
		{"site critical or expired", ExpiryCritical, ExpiryHealthy, ExpiryHealthy, 2, []string{"site.crt", "dcmesh renew --bundle DIR"}},
		{"CA within warn", ExpiryHealthy, ExpiryDegraded, ExpiryHealthy, 1,
			[]string{`pinned CA "dcmesh CA prod" (id 0011, trust.ca_file /var/lib/dcmesh/ca.crt) expires later`, "Rolling over the CA"}},
		{"CA critical", ExpiryDegraded, ExpiryCritical, ExpiryHealthy, 2, []string{"ca.crt", "site.crt"}},
	}
	for _, tc := range cases {
		h := EvaluateHealth(base(tc.site, tc.ca, tc.peer), 0, 0, time.Now())
		all := strings.Join(h.Reasons, "\n")
		if h.ExitCode != tc.code {
			t.Errorf("%s: exit %d %q, want %d", tc.name, h.ExitCode, h.Reasons, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: reasons %q lack %q", tc.name, h.Reasons, w)
			}
		}
	}
	// A static-only site has no trust section.
	st := base(ExpiryHealthy, ExpiryHealthy, ExpiryHealthy)
	st.Trust = nil
	if h := EvaluateHealth(st, 0, 0, time.Now()); h.ExitCode != 0 {
		t.Errorf("static site: %d %q", h.ExitCode, h.Reasons)
	}
}
