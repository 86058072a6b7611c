package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

const endpointsBase = "site: fra1\nprivate_key_file: /k\noverlay_address: 10.255.0.1/32\nlocal_prefixes: [10.1.0.0/16]\n"

func TestEndpointsListInPreferenceOrder(t *testing.T) {
	c, err := Parse([]byte(endpointsBase+"endpoints: [192.0.2.10:51820, \"[2001:db8::10]:51821\", \"[::ffff:198.51.100.10]:51820\"]\nhealth:\n  uplink_hold: 5s\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:51820"), netip.MustParseAddrPort("[2001:db8::10]:51821"), netip.MustParseAddrPort("198.51.100.10:51820")}
	if !slices.Equal(c.Endpoints, want) || c.Endpoint != want[0] || !slices.Equal(c.UplinkEndpoints(), want) {
		t.Errorf("endpoints %v, endpoint %v; want %v", c.Endpoints, c.Endpoint, want)
	}
	if c.Health.UplinkHold != 5*time.Second {
		t.Errorf("uplink_hold %v", c.Health.UplinkHold)
	}
}

func TestOneEndpointIsAListOfOne(t *testing.T) {
	c, err := Parse([]byte(endpointsBase+"endpoint: 192.0.2.10:51820\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:51820")}
	if !slices.Equal(c.Endpoints, want) || c.Endpoint != want[0] {
		t.Errorf("endpoints %v, endpoint %v", c.Endpoints, c.Endpoint)
	}
	if c.Health.UplinkHold != DefaultUplinkHold {
		t.Errorf("uplink_hold default %v", c.Health.UplinkHold)
	}
	// A Config built in code with only Endpoint announces it.
	if got := (&Config{Endpoint: want[0]}).UplinkEndpoints(); !slices.Equal(got, want) {
		t.Errorf("UplinkEndpoints of a Config without Endpoints: %v", got)
	}
}

func TestEndpointsValidation(t *testing.T) {
	many := "endpoints: ["
	for i := range MaxEndpoints + 1 {
		if i > 0 {
			many += ", "
		}
		many += netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 51820).String()
	}
	many += "]\n"
	cases := []struct{ name, yaml, field, hint string }{
		{"both", "endpoint: 192.0.2.10:51820\nendpoints: [192.0.2.11:51820]\n", "endpoints", "together with endpoint"},
		{"empty", "endpoints: []\n", "endpoints", "is empty"},
		{"host name", "endpoints: [192.0.2.10:51820, gw.example:51820]\n", "endpoints[1]", "not IP:PORT"},
		{"no port", "endpoints: [192.0.2.10]\n", "endpoints[0]", "not IP:PORT"},
		{"port zero", "endpoints: [192.0.2.10:0]\n", "endpoints[0]", "not IP:PORT"},
		{"unspecified", "endpoints: [0.0.0.0:51820]\n", "endpoints[0]", "not IP:PORT"},
		{"duplicate", "endpoints: [192.0.2.10:51820, 192.0.2.11:51820, 192.0.2.10:51820]\n", "endpoints[2]", "also endpoints[0]"},
		{"too many", many, "endpoints", "at most 16"},
		{"hold", "endpoint: 192.0.2.10:51820\nhealth:\n  uplink_hold: 10ms\n", "health.uplink_hold", "between 1s and 1h"},
		{"gossip without", "gossip:\n  address: 192.0.2.10:7946\n", "endpoint", "required with gossip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(endpointsBase+c.yaml), "/")
			if err == nil {
				t.Fatal("accepted")
			}
			found := false
			for _, e := range unwrapAll(err) {
				var fe *FieldError
				if errors.As(e, &fe) && fe.Field == c.field && strings.Contains(fe.Msg, c.hint) {
					found = true
				}
			}
			if !found {
				t.Errorf("no error for %s saying %q in:\n%v", c.field, c.hint, err)
			}
		})
	}
}
