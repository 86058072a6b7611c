package netconfig_test

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func site(routes ...string) netconfig.Config {
	return netconfig.Config{
		Link: "dcm0", MTU: 1420, Addresses: pfx("10.255.0.1/32"), Metric: 100,
		Routes: pfx(routes...), FailClosed: pfx(routes...),
	}
}

// The states a site goes through, with the kernel state each must produce.
var states = []struct {
	name string
	cfg  netconfig.Config
	want string
}{
	{"two peers", site("10.2.0.0/16", "10.3.0.0/16"), `
link eth0 mtu 1500 up
link dcm0 mtu 1420 up
  addr 10.255.0.1/32
route 10.2.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 10.3.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route unreachable 10.2.0.0/16 proto 220 metric 101 table 254
route unreachable 10.3.0.0/16 proto 220 metric 101 table 254
`},
	{"peer gone, v6 added", site("10.2.0.0/16", "fd00:2::/48"), `
link eth0 mtu 1500 up
link dcm0 mtu 1420 up
  addr 10.255.0.1/32
route 10.2.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route fd00:2::/48 dev dcm0 proto 220 metric 100 table 254
route unreachable 10.2.0.0/16 proto 220 metric 101 table 254
route unreachable fd00:2::/48 proto 220 metric 101 table 254
`},
	{"quarantined prefix keeps only its fail-closed route", netconfig.Config{
		Link: "dcm0", MTU: 1380, Addresses: pfx("10.255.0.1/32", "fd00:ff::1/128"), Metric: 100,
		Routes: pfx("10.2.0.0/16"), FailClosed: pfx("10.2.0.0/16", "10.4.0.0/16"),
	}, `
link eth0 mtu 1500 up
link dcm0 mtu 1380 up
  addr 10.255.0.1/32
  addr fd00:ff::1/128
route 10.2.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route unreachable 10.2.0.0/16 proto 220 metric 101 table 254
route unreachable 10.4.0.0/16 proto 220 metric 101 table 254
`},
	{"no peers", site(), `
link eth0 mtu 1500 up
link dcm0 mtu 1420 up
  addr 10.255.0.1/32
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
`},
}

func newFake() *netconfigtest.Fake {
	f := netconfigtest.NewFake()
	eth := f.AddLink("eth0", 1500)
	f.AddLink("dcm0", 1500)
	f.AddForeignRoute(netlink.Route{Dst: mustNet("192.0.2.0/24"), LinkIndex: eth, Protocol: unix.RTPROT_KERNEL})
	l, _ := f.LinkByName("eth0")
	_ = f.LinkSetUp(l)
	f.Ops = nil
	return f
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestApplyStates(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	for _, st := range states {
		if _, err := m.Apply(st.cfg); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := f.String(); got != strings.TrimPrefix(st.want, "\n") {
			t.Fatalf("%s: kernel state\n%s\nwant\n%s", st.name, got, st.want)
		}
		f.Ops = nil
		if ch, err := m.Apply(st.cfg); err != nil || !ch.Empty() || len(f.Ops) != 0 {
			t.Fatalf("%s: second apply not a no-op: %v %v ops=%v", st.name, ch, err, f.Ops)
		}
	}
}

// Every transition between states, in random order, converges to the state's
// golden rendering: the diff does not depend on where it starts.
func TestApplyRandomTransitions(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		st := states[r.IntN(len(states))]
		if _, err := m.Apply(st.cfg); err != nil {
			t.Fatalf("step %d (%s): %v", i, st.name, err)
		}
		if got := f.String(); got != strings.TrimPrefix(st.want, "\n") {
			t.Fatalf("step %d (%s): kernel state\n%s\nwant\n%s", i, st.name, got, st.want)
		}
	}
}

// Adding comes before deleting: a prefix moving to a new metric is never
// without a route.
func TestApplyAddsBeforeDeletes(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	cfg := site("10.2.0.0/16")
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	f.Ops = nil
	cfg.Metric = 50
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	firstDel := -1
	for i, op := range f.Ops {
		if strings.HasPrefix(op, "route del") && firstDel < 0 {
			firstDel = i
		}
		if strings.HasPrefix(op, "route add") && firstDel >= 0 {
			t.Fatalf("add after delete: %v", f.Ops)
		}
	}
	if firstDel < 0 {
		t.Fatalf("old routes not deleted: %v", f.Ops)
	}
}

func TestForeignRoutesAreNeverTouched(t *testing.T) {
	f := newFake()
	eth, _ := f.LinkByName("eth0")
	// Someone else's route occupies exactly our key, and another sits on a
	// prefix we are about to stop routing.
	f.AddForeignRoute(netlink.Route{Dst: mustNet("10.3.0.0/16"), LinkIndex: eth.Attrs().Index, Priority: 100, Protocol: unix.RTPROT_STATIC})
	f.AddForeignRoute(netlink.Route{Dst: mustNet("10.9.0.0/16"), LinkIndex: eth.Attrs().Index, Priority: 100, Protocol: unix.RTPROT_BOOT})
	m := netconfig.New(f, nil)
	_, err := m.Apply(site("10.2.0.0/16", "10.3.0.0/16"))
	if !errors.Is(err, netconfig.ErrRouteConflict) || !strings.Contains(err.Error(), "10.3.0.0/16") {
		t.Fatalf("err = %v, want a conflict naming 10.3.0.0/16", err)
	}
	if _, err := m.Apply(site()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Purge(0); err != nil {
		t.Fatal(err)
	}
	got := f.String()
	for _, want := range []string{"route 10.3.0.0/16 dev eth0 proto 4 metric 100", "route 10.9.0.0/16 dev eth0 proto 3 metric 100"} {
		if !strings.Contains(got, want) {
			t.Errorf("foreign route %q was touched:\n%s", want, got)
		}
	}
	for _, op := range f.Ops {
		if strings.Contains(op, "route del") && !strings.Contains(op, "proto 220") {
			t.Errorf("delete without our protocol: %s", op)
		}
	}
}

// When the tunnel link disappears its routes go with it; the fail-closed
// routes stay, and the next Apply (with a new link) restores the rest.
func TestFailClosedSurvivesLinkLoss(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	cfg := site("10.2.0.0/16")
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	f.DelLink("dcm0")
	if got := f.String(); !strings.Contains(got, "route unreachable 10.2.0.0/16 proto 220 metric 101") || strings.Contains(got, "10.2.0.0/16 dev") {
		t.Fatalf("after link loss:\n%s", got)
	}
	f.AddLink("dcm0", 1500)
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); !strings.Contains(got, "route 10.2.0.0/16 dev dcm0 proto 220 metric 100") {
		t.Fatalf("not restored:\n%s", got)
	}
	// Someone deletes our routes by hand: Apply puts them back.
	f.DeleteRoutesTo("10.2.0.0/16")
	ch, err := m.Apply(cfg)
	if err != nil || len(ch.Added) != 2 {
		t.Fatalf("repair: %v %v", ch, err)
	}
}

func TestPurgeRemovesOnlyOurs(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	if _, err := m.Apply(site("10.2.0.0/16", "fd00:2::/48")); err != nil {
		t.Fatal(err)
	}
	gone, err := m.Purge(0)
	if err != nil || len(gone) != 4 {
		t.Fatalf("purge: %v %v", gone, err)
	}
	if got := f.String(); strings.Contains(got, "proto 220") || !strings.Contains(got, "192.0.2.0/24") {
		t.Fatalf("after purge:\n%s", got)
	}
}

func TestUnderlayMTU(t *testing.T) {
	f := newFake()
	mtu, names := netconfig.UnderlayMTU(f, []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("198.51.100.1")})
	if mtu != 1500 || len(names) != 1 || names[0] != "eth0" {
		t.Fatalf("UnderlayMTU = %d %v", mtu, names)
	}
	if mtu, _ := netconfig.UnderlayMTU(f, nil); mtu != 0 {
		t.Fatalf("no destinations: %d", mtu)
	}
}
