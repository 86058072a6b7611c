package enroll_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// Every endpoint must be in the certificate's underlay ranges: other sites
// would reject the site's records otherwise.
func TestLoadEnrollmentChecksEveryEndpoint(t *testing.T) {
	f := newEnrollFixture(t)
	c, _ := trusttest.IssueWith(t, f.ca, "fra1", trusttest.CertOptions{Identity: f.key, Overlay: f.cert.Overlay,
		Underlay: trusttest.Prefixes(t, "192.0.2.0/24", "198.51.100.0/24")}, "10.1.0.0/16")
	f.write(t, config.SiteCertFile, trust.EncodeCertPEM(c.Raw), 0o644)
	eps := func(s ...string) []netip.AddrPort {
		var out []netip.AddrPort
		for _, e := range s {
			out = append(out, netip.MustParseAddrPort(e))
		}
		return out
	}
	cfg := f.config()
	cfg.Endpoints = eps("192.0.2.10:51820", "198.51.100.10:51820")
	cfg.Endpoint = cfg.Endpoints[0]
	if _, err := enroll.Load(cfg, time.Now()); err != nil {
		t.Fatalf("both endpoints in the ranges: %v", err)
	}
	cfg = f.config()
	cfg.Endpoints = eps("192.0.2.10:51820", "203.0.113.10:51820")
	cfg.Endpoint = cfg.Endpoints[0]
	_, err := enroll.Load(cfg, time.Now())
	if err == nil || !strings.Contains(err.Error(), "endpoints[1]: 203.0.113.10:51820 is outside the underlay ranges") {
		t.Fatalf("second endpoint outside the ranges: %v", err)
	}
	cfg = f.config()
	cfg.Endpoint = netip.MustParseAddrPort("203.0.113.10:51820")
	if _, err := enroll.Load(cfg, time.Now()); err == nil || !strings.Contains(err.Error(), "endpoint: 203.0.113.10:51820") {
		t.Fatalf("the one endpoint outside the ranges: %v", err)
	}
}
