package mesh

import (
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// Every certificate of the status's trust section is exported with its
// kind, subject, serial and issuer, its value the not-after in seconds.
func TestMetricsCertificateNotAfter(t *testing.T) {
	m := newMetrics(BuildInfo{})
	at := func(d int) time.Time { return time.Unix(1800000000, 0).Add(time.Duration(d) * 24 * time.Hour) }
	m.snapshot.Store(&control.Status{Site: "fra1", Trust: &control.TrustStatus{
		Certificate: control.CertificateStatus{Subject: "fra1", Serial: "aa", IssuerID: "c1", NotAfter: at(10)},
		CAs:         []control.CertificateStatus{{Subject: "dcmesh CA prod", Serial: "01", IssuerID: "c1", NotAfter: at(3000)}, {Subject: "dcmesh CA next", Serial: "02", IssuerID: "c2", NotAfter: at(4000)}},
		Peers:       []control.CertificateStatus{{Subject: "ams1", Serial: "bb", IssuerID: "c2", NotAfter: at(20)}},
	}})
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "dcmesh_certificate_not_after_timestamp_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range mt.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[l["kind"]+" "+l["subject"]+" "+l["serial"]+" "+l["issuer_id"]] = mt.GetGauge().GetValue()
		}
	}
	want := map[string]time.Time{"site fra1 aa c1": at(10), "ca dcmesh CA prod 01 c1": at(3000), "ca dcmesh CA next 02 c2": at(4000), "peer ams1 bb c2": at(20)}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != float64(w.Unix()) {
			t.Errorf("%s = %v, want %d", k, got[k], w.Unix())
		}
	}
	// A static-only site exports none.
	m.snapshot.Store(&control.Status{Site: "fra1"})
	fams, _ = m.reg.Gather()
	for _, f := range fams {
		if f.GetName() == "dcmesh_certificate_not_after_timestamp_seconds" {
			t.Errorf("static site exports %v", f)
		}
	}
}
