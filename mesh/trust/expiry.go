package trust

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Certificate expiry is the most common self-inflicted outage of a PKI: when
// a site's certificate expires every other site drops it. These helpers
// turn validity periods into what status, health and metrics show, long
// before that happens. They are pure: the caller passes the time.

// Default thresholds of ExpiryState.
const (
	DefaultExpiryWarn     = 30 * 24 * time.Hour // degraded from then on
	DefaultExpiryCritical = 7 * 24 * time.Hour  // critical from then on
)

// ExpiryLevel is how close to expiry something is, in the words of the
// agent's health.
type ExpiryLevel string

const (
	ExpiryHealthy  ExpiryLevel = "healthy"
	ExpiryDegraded ExpiryLevel = "degraded" // within the warning threshold
	ExpiryCritical ExpiryLevel = "critical" // within the critical threshold, or expired
)

// ExpiryState classifies notAfter as seen at now: critical once it has
// passed or is within crit, degraded within warn, healthy before. A zero
// threshold takes its default (DefaultExpiryWarn, DefaultExpiryCritical); a
// negative one disables that level. msg says when, and how far off, e.g.
// "expires 2026-06-01T00:00:00Z, in 6d23h (critical: within 7d)"; the caller
// adds what expires, the file and the fix.
func ExpiryState(notAfter, now time.Time, warn, crit time.Duration) (ExpiryLevel, string) {
	if warn == 0 {
		warn = DefaultExpiryWarn
	}
	if crit == 0 {
		crit = DefaultExpiryCritical
	}
	left := notAfter.Sub(now)
	when := fmtTime(notAfter)
	switch {
	case left <= 0:
		return ExpiryCritical, fmt.Sprintf("expired %s, %s ago", when, fmtLeft(-left))
	case left <= crit: // never for a negative crit: left > 0 here
		return ExpiryCritical, fmt.Sprintf("expires %s, in %s (critical: within %s)", when, fmtLeft(left), fmtLeft(crit))
	case left <= warn:
		return ExpiryDegraded, fmt.Sprintf("expires %s, in %s (degraded: within %s)", when, fmtLeft(left), fmtLeft(warn))
	}
	return ExpiryHealthy, fmt.Sprintf("expires %s, in %s", when, fmtLeft(left))
}

// fmtLeft writes a duration the way an operator reads a deadline: days and
// hours, hours and minutes, or minutes and seconds.
func fmtLeft(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= day:
		days, hours := d/day, (d%day)/time.Hour
		if hours == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, hours)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, (d%time.Minute)/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// ExpiryInfo describes one certificate's validity for status output and
// metrics.
type ExpiryInfo struct {
	Subject string `json:"subject"` // the site name, or the CA's common name
	Serial  string `json:"serial"`  // hex
	Issuer  string `json:"issuer"`  // the issuer's common name
	// IssuerID is the CAID of the pinned CA that signed the certificate;
	// empty when none of them does. For a CA, its own CAID.
	IssuerID    string        `json:"issuer_id"`
	NotBefore   time.Time     `json:"not_before"`
	NotAfter    time.Time     `json:"not_after"`
	Left        time.Duration `json:"-"`            // NotAfter - now; negative once expired
	LeftSeconds int64         `json:"left_seconds"` // Left, for JSON and metrics
	State       ExpiryLevel   `json:"state"`
	Message     string        `json:"message"` // ExpiryState's
}

func expiryInfo(x *x509.Certificate, subject, issuerID string, now time.Time, warn, crit time.Duration) ExpiryInfo {
	left := x.NotAfter.Sub(now)
	state, msg := ExpiryState(x.NotAfter, now, warn, crit)
	return ExpiryInfo{
		Subject: subject, Serial: fmt.Sprintf("%x", x.SerialNumber), Issuer: x.Issuer.CommonName,
		IssuerID: issuerID, NotBefore: x.NotBefore, NotAfter: x.NotAfter,
		Left: left, LeftSeconds: int64(left / time.Second), State: state, Message: msg,
	}
}

// CertExpiry describes a site certificate's validity at now, with the
// thresholds of ExpiryState; cas identify the issuer (IssuerID).
func CertExpiry(c *Certificate, cas []*x509.Certificate, now time.Time, warn, crit time.Duration) ExpiryInfo {
	if c == nil || c.X509 == nil {
		return ExpiryInfo{State: ExpiryCritical, Message: "no certificate"}
	}
	return expiryInfo(c.X509, c.Site, CAID(c.issuer(cas)), now, warn, crit)
}

// CAExpiry describes each pinned CA's validity at now, in the order given.
// A pinned CA that expires takes every certificate it signed with it.
func CAExpiry(cas []*x509.Certificate, now time.Time, warn, crit time.Duration) []ExpiryInfo {
	out := make([]ExpiryInfo, 0, len(cas))
	for _, ca := range cas {
		if ca != nil {
			out = append(out, expiryInfo(ca, ca.Subject.CommonName, CAID(ca), now, warn, crit))
		}
	}
	return out
}
