package mesh

import (
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// trustStatus describes this site's trust material at now: its certificate,
// the pinned CAs and each peer's certificate, classified against
// health.certificate_warn and health.certificate_critical (the health rule
// in mesh/control reads the classification). Nil for a static-only site.
func trustStatus(rt *siteRuntime, now time.Time) *control.TrustStatus {
	if rt.enr == nil {
		return nil
	}
	warn, crit := rt.cfg.Health.CertificateWarn, rt.cfg.Health.CertificateCritical
	cas := rt.enr.CAs
	t := &control.TrustStatus{
		Certificate: certificateStatus(trust.CertExpiry(rt.enr.Cert, cas, now, warn, crit)),
		CertFile:    rt.cfg.Trust.CertFile, CAFile: rt.cfg.Trust.CAFile,
		CAs: []control.CertificateStatus{}, Peers: []control.CertificateStatus{},
		WarnSeconds: int64(warn / time.Second), CriticalSeconds: int64(crit / time.Second),
	}
	for _, e := range trust.CAExpiry(cas, now, warn, crit) {
		t.CAs = append(t.CAs, certificateStatus(e))
	}
	if rt.store != nil {
		for _, name := range rt.store.Names() { // sorted
			if sr, ok := rt.store.Record(name); ok && sr.Cert != nil {
				t.Peers = append(t.Peers, certificateStatus(trust.CertExpiry(sr.Cert, cas, now, warn, crit)))
			}
		}
	}
	return t
}

func certificateStatus(e trust.ExpiryInfo) control.CertificateStatus {
	return control.CertificateStatus{Subject: e.Subject, Serial: e.Serial, IssuerID: e.IssuerID,
		NotBefore: e.NotBefore.UTC(), NotAfter: e.NotAfter.UTC(), LeftSeconds: e.LeftSeconds,
		State: control.ExpiryState(e.State), Message: e.Message}
}

// probeSettings is h without the certificate expiry thresholds: those apply
// on reload (status reads them), the probes' settings only at start.
func probeSettings(h config.HealthConfig) config.HealthConfig {
	h.CertificateWarn, h.CertificateCritical = 0, 0
	return h
}
