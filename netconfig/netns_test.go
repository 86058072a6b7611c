package netconfig_test

import (
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netlink"
)

// TestApplyRealKernel runs Apply against the kernel in a fresh namespace,
// with one end of a veth pair standing in for the WireGuard link (routing does
// not care which; this kernel has no dummy links), and uses iproute2 as the
// independent witness.
func TestApplyRealKernel(t *testing.T) {
	netconfigtest.RequireRoot(t)
	ns := netconfigtest.NewNS(t, "dcmt-nc-"+netconfigtest.UniqueSuffix())
	h := ns.Handle(t)
	la := netlink.NewLinkAttrs()
	la.Name = "dcmt0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "dcmt1"}); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "ip", "link", "set", "dcmt1", "up")
	ns.Run(t, "ip", "link", "set", "dcmt0", "up")
	// A foreign route that must survive everything.
	ns.Run(t, "ip", "route", "add", "10.9.0.0/16", "dev", "dcmt0", "proto", "static")

	m := netconfig.New(h, nil)
	cfg := netconfig.Config{
		Link: "dcmt0", MTU: 1380, Addresses: pfx("10.255.0.1/32", "fd00:ff::1/128"), Table: 1234, Metric: 100,
		Routes: pfx("10.2.0.0/16", "fd00:2::/48"), FailClosed: pfx("10.2.0.0/16", "fd00:2::/48", "10.4.0.0/16"),
	}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	v4 := ns.Run(t, "ip", "-4", "route", "show", "table", "1234", "proto", "220")
	v6 := ns.Run(t, "ip", "-6", "route", "show", "table", "1234", "proto", "220")
	for _, want := range []string{"10.2.0.0/16 dev dcmt0 scope link metric 100", "unreachable 10.2.0.0/16 metric 101", "unreachable 10.4.0.0/16"} {
		if !strings.Contains(v4, want) {
			t.Errorf("ip -4 route lacks %q:\n%s", want, v4)
		}
	}
	for _, want := range []string{"fd00:2::/48 dev dcmt0 metric 100", "unreachable fd00:2::/48 dev lo metric 101"} {
		if !strings.Contains(v6, want) {
			t.Errorf("ip -6 route lacks %q:\n%s", want, v6)
		}
	}
	if link := ns.Run(t, "ip", "link", "show", "dcmt0"); !strings.Contains(link, "mtu 1380") || !strings.Contains(link, "UP") {
		t.Errorf("link not configured: %s", link)
	}
	// Traffic to a remote prefix is refused locally once the tunnel route is
	// gone: fail closed.
	if _, err := ns.Try("ip", "route", "del", "10.2.0.0/16", "dev", "dcmt0", "table", "1234", "metric", "100"); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "ip", "rule", "add", "to", "10.2.0.0/16", "table", "1234")
	if got, _ := ns.Try("ip", "route", "get", "10.2.3.4"); !strings.Contains(got, "No route to host") {
		t.Errorf("without the tunnel route, 10.2.3.4 resolves to %q, want unreachable", got)
	}
	// The next Apply repairs the drift.
	ch, err := m.Apply(cfg)
	if err != nil || len(ch.Added) != 1 {
		t.Fatalf("repair: %v %v", ch, err)
	}
	// Purge removes ours and nothing else.
	if _, err := m.Purge(1234); err != nil {
		t.Fatal(err)
	}
	if left := ns.Run(t, "ip", "route", "show", "table", "all", "proto", "220"); strings.TrimSpace(left) != "" {
		t.Errorf("routes left after purge:\n%s", left)
	}
	if main := ns.Run(t, "ip", "route", "show", "10.9.0.0/16"); !strings.Contains(main, "proto static") {
		t.Errorf("foreign route gone: %q", main)
	}
}
