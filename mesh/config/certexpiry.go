package config

import "time"

// Defaults of health.certificate_warn and health.certificate_critical: the
// site's health turns degraded 30 days before its certificate or a pinned CA
// expires, critical 7 days before — time to renew during working hours, and
// a page well before every other site drops this one.
const (
	DefaultCertificateWarn     = 30 * Day
	DefaultCertificateCritical = 7 * Day
	maxCertificateWarn         = 365 * Day
)

// parseCertificateExpiry reads health.certificate_warn and
// health.certificate_critical (days or a Go duration, between 1h and 365d;
// critical not longer than warn).
func (c *Config) parseCertificateExpiry(fh fileHealth, bad *problems) {
	c.Health.CertificateWarn, c.Health.CertificateCritical = DefaultCertificateWarn, DefaultCertificateCritical
	parse := func(field, s string, def time.Duration) (time.Duration, bool) {
		if s == "" {
			return def, true
		}
		d, err := ParseDuration(s)
		if err != nil || d < time.Hour || d > maxCertificateWarn {
			bad.add(field, "%q: use a duration between 1h and 365d, e.g. %s (the default)", s, FormatDuration(def))
			return def, false
		}
		return d, true
	}
	warn, okW := parse("health.certificate_warn", fh.CertWarn, DefaultCertificateWarn)
	crit, okC := parse("health.certificate_critical", fh.CertCrit, DefaultCertificateCritical)
	if okW && okC && crit > warn {
		bad.add("health.certificate_critical", "%s is longer than health.certificate_warn (%s): critical comes after degraded, so make it shorter",
			FormatDuration(crit), FormatDuration(warn))
		return
	}
	c.Health.CertificateWarn, c.Health.CertificateCritical = warn, crit
}
