package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseCertificateExpiry(t *testing.T) {
	base := "site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.1\n"
	c, err := Parse([]byte(base), "/")
	if err != nil {
		t.Fatal(err)
	}
	if c.Health.CertificateWarn != 30*Day || c.Health.CertificateCritical != 7*Day {
		t.Errorf("defaults: %v %v", c.Health.CertificateWarn, c.Health.CertificateCritical)
	}
	c, err = Parse([]byte(base+"health:\n  certificate_warn: 60d\n  certificate_critical: 36h\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if c.Health.CertificateWarn != 60*Day || c.Health.CertificateCritical != 36*time.Hour {
		t.Errorf("set: %v %v", c.Health.CertificateWarn, c.Health.CertificateCritical)
	}
	for _, tc := range []struct{ yaml, field, hint string }{
		{"  certificate_warn: soon\n", "health.certificate_warn", "between 1h and 365d"},
		{"  certificate_warn: 400d\n", "health.certificate_warn", "between 1h and 365d"},
		{"  certificate_critical: 10m\n", "health.certificate_critical", "e.g. 7d"},
		{"  certificate_warn: 5d\n", "health.certificate_critical", "longer than health.certificate_warn (5d)"},
	} {
		_, err := Parse([]byte(base+"health:\n"+tc.yaml), "/")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("%q: %v, want %s: …%s…", tc.yaml, err, tc.field, tc.hint)
		}
	}
}
