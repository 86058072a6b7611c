package trust_test

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

func TestExpiryState(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	cases := []struct {
		left       time.Duration
		warn, crit time.Duration
		want       trust.ExpiryLevel
		msg        string
	}{
		{200 * day, 0, 0, trust.ExpiryHealthy, "expires 2026-11-17T12:00:00Z, in 200d"},
		{30*day + time.Second, 0, 0, trust.ExpiryHealthy, "in 30d"},
		{30 * day, 0, 0, trust.ExpiryDegraded, "in 30d (degraded: within 30d)"},
		{8*day + 3*time.Hour, 0, 0, trust.ExpiryDegraded, "in 8d3h (degraded: within 30d)"},
		{7 * day, 0, 0, trust.ExpiryCritical, "in 7d (critical: within 7d)"},
		{6*day + 23*time.Hour, 0, 0, trust.ExpiryCritical, "in 6d23h"},
		{90 * time.Minute, 0, 0, trust.ExpiryCritical, "in 1h30m"},
		{0, 0, 0, trust.ExpiryCritical, "expired 2026-05-01T12:00:00Z, 0s ago"},
		{-3 * day, 0, 0, trust.ExpiryCritical, "expired 2026-04-28T12:00:00Z, 3d ago"},
		// Configured thresholds.
		{40 * day, 60 * day, 14 * day, trust.ExpiryDegraded, "(degraded: within 60d)"},
		{10 * day, 60 * day, 14 * day, trust.ExpiryCritical, "(critical: within 14d)"},
		{3 * day, 2 * day, time.Hour, trust.ExpiryHealthy, "in 3d"},
		// Negative disables a level; expired stays critical.
		{10 * day, -1, -1, trust.ExpiryHealthy, "in 10d"},
		{3 * day, -1, 0, trust.ExpiryCritical, "critical"},
		{-time.Minute, -1, -1, trust.ExpiryCritical, "expired"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.left, tc.warn, tc.crit), func(t *testing.T) {
			got, msg := trust.ExpiryState(now.Add(tc.left), now, tc.warn, tc.crit)
			if got != tc.want || !strings.Contains(msg, tc.msg) {
				t.Errorf("ExpiryState = %s, %q; want %s, containing %q", got, msg, tc.want, tc.msg)
			}
		})
	}
}

func TestCertAndCAExpiry(t *testing.T) {
	ca, other := trusttest.NewCA(t), trusttest.NewCA(t)
	nb := time.Now().Add(-time.Hour).Truncate(time.Second)
	c, _ := trusttest.IssueWith(t, ca, "fra1", trusttest.CertOptions{NotBefore: nb, NotAfter: nb.Add(10 * 24 * time.Hour)}, "10.1.0.0/16")
	now := nb.Add(5 * 24 * time.Hour)
	cas := []*x509.Certificate{other.Cert, ca.Cert}

	e := trust.CertExpiry(c, cas, now, 0, 0)
	if e.Subject != "fra1" || e.Serial != fmt.Sprintf("%x", c.Serial) || e.Issuer != ca.Cert.Subject.CommonName ||
		e.IssuerID != trust.CAID(ca.Cert) || !e.NotAfter.Equal(c.NotAfter) || !e.NotBefore.Equal(nb) {
		t.Errorf("CertExpiry = %+v", e)
	}
	if e.Left != 5*24*time.Hour || e.LeftSeconds != 5*24*3600 || e.State != trust.ExpiryCritical || !strings.Contains(e.Message, "in 5d") {
		t.Errorf("CertExpiry left %v (%d s), %s %q", e.Left, e.LeftSeconds, e.State, e.Message)
	}
	if e := trust.CertExpiry(c, []*x509.Certificate{other.Cert}, now, 0, 0); e.IssuerID != "" {
		t.Errorf("IssuerID %q for a certificate no pinned CA signed", e.IssuerID)
	}
	if e := trust.CertExpiry(nil, cas, now, 0, 0); e.State != trust.ExpiryCritical {
		t.Errorf("no certificate: %s", e.State)
	}

	infos := trust.CAExpiry(cas, now, 0, 0)
	if len(infos) != 2 || infos[1].IssuerID != trust.CAID(ca.Cert) || infos[1].Subject != ca.Cert.Subject.CommonName ||
		!infos[1].NotAfter.Equal(ca.Cert.NotAfter) || infos[1].State != trust.ExpiryHealthy {
		t.Errorf("CAExpiry = %+v", infos)
	}
}
