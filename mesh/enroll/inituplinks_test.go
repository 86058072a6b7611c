package enroll_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
)

// InitOptions.Endpoints configures several uplinks, the preferred first,
// as the agent will read them; the listen port and gossip address default
// from the first.
func TestInitSiteUplinks(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	eps := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::10]:4500"), netip.MustParseAddrPort("192.0.2.10:51820")}
	state := filepath.Join(t.TempDir(), "state")
	res, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoints: eps, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Endpoints, eps) {
		t.Errorf("result endpoints %v", res.Endpoints)
	}
	cfg, err := config.Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Endpoints, eps) || cfg.Endpoint != eps[0] || cfg.ListenPort != 4500 ||
		cfg.Gossip.Address != netip.MustParseAddrPort("[2001:db8::10]:7946") {
		t.Errorf("loaded: endpoints %v, endpoint %s, listen port %d, gossip %s", cfg.Endpoints, cfg.Endpoint, cfg.ListenPort, cfg.Gossip.Address)
	}
}

// Endpoints are refused, before anything is written, outside the
// certificate's underlay ranges, twice, or against Endpoint.
func TestInitSiteUplinksRefused(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	a, b := netip.MustParseAddrPort("192.0.2.10:51820"), netip.MustParseAddrPort("192.0.2.11:51820")
	for _, c := range []struct {
		name string
		o    enroll.InitOptions
		want string
	}{
		{"outside", enroll.InitOptions{Endpoints: []netip.AddrPort{a, netip.MustParseAddrPort("203.0.113.1:51820")}},
			"Endpoint 203.0.113.1:51820 (the 2nd) is outside the underlay ranges of the certificate (192.0.2.0/24, 2001:db8::/32)"},
		{"twice", enroll.InitOptions{Endpoints: []netip.AddrPort{a, b, a}}, "Endpoint 192.0.2.10:51820 is given twice (1st and 3rd)"},
		{"not the first", enroll.InitOptions{Endpoint: b, Endpoints: []netip.AddrPort{a, b}}, "Endpoint 192.0.2.11:51820 is not the first of Endpoints"},
		{"no port", enroll.InitOptions{Endpoints: []netip.AddrPort{a, netip.AddrPortFrom(b.Addr(), 0)}}, "Endpoint 192.0.2.11:0 (the 2nd)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			c.o.Bundle, c.o.StateDir, c.o.Now = bundle, state, now
			_, err := enroll.InitSite(c.o)
			var oe *config.OptionError
			if !errors.As(err, &oe) || oe.Option != "Endpoint" || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want an Endpoint error saying %q", err, c.want)
			}
			if _, err := os.Stat(state); err == nil {
				t.Error("a refused init created the state directory")
			}
		})
	}
}
