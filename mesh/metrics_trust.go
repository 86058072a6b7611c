package mesh

import (
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus"
)

// The trust material's expiry, for alerts that fire long before a
// certificate expires: `dcmesh_certificate_not_after_timestamp_seconds -
// time() < 30 * 86400`. kind is site (this site's certificate), ca (a
// pinned CA) or peer (the certificate a peer's record carries); subject is
// the site name or the CA's common name; issuer_id the CA id (trust.CAID)
// that signed it, for a CA its own.
var descCertNotAfter = prometheus.NewDesc("dcmesh_certificate_not_after_timestamp_seconds",
	"When a certificate expires: this site's (kind=site), a pinned CA's (kind=ca), a peer's (kind=peer).",
	[]string{"kind", "subject", "serial", "issuer_id"}, nil)

func describeTrust(ch chan<- *prometheus.Desc) { ch <- descCertNotAfter }

// collectTrust exports st's trust section (nothing for a static-only site).
func collectTrust(ch chan<- prometheus.Metric, st *control.Status) {
	t := st.Trust
	if t == nil {
		return
	}
	g := func(kind string, c control.CertificateStatus) {
		ch <- prometheus.MustNewConstMetric(descCertNotAfter, prometheus.GaugeValue, float64(c.NotAfter.Unix()), kind, c.Subject, c.Serial, c.IssuerID)
	}
	g("site", t.Certificate)
	for _, c := range t.CAs {
		g("ca", c)
	}
	for _, c := range t.Peers {
		g("peer", c)
	}
}
