package netconfig_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/vishvananda/netns"
)

// kernelNS is a namespace with veth pairs standing in for WireGuard links
// (routing and nexthops do not care which kind of link; this kernel has no
// dummy links) and a netconfig.Handle on it.
type kernelNS struct {
	*netconfigtest.NS
	h     *netconfig.Handle
	links []string // our ends, up, with their peers up
}

func newKernelNS(t *testing.T, nlinks int) *kernelNS {
	t.Helper()
	netconfigtest.RequireRoot(t)
	sfx := netconfigtest.UniqueSuffix()
	ns := netconfigtest.NewNS(t, "dcmt-nh-"+sfx)
	k := &kernelNS{NS: ns}
	for i := range nlinks {
		k.addLink(t, fmt.Sprintf("dcm%s%d", sfx, i))
	}
	nsh, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	if k.h, err = netconfig.OpenHandleAt(nsh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.h.Close)
	return k
}

func (k *kernelNS) addLink(t *testing.T, name string) {
	t.Helper()
	k.Run(t, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	k.Run(t, "ip", "link", "set", name+"p", "up")
	k.Run(t, "ip", "link", "set", name, "up")
	if !slices.Contains(k.links, name) {
		k.links = append(k.links, name)
	}
}

// ipNexthop is `ip -j nexthop show`.
type ipNexthop struct {
	ID    uint32 `json:"id"`
	Dev   string `json:"dev"`
	Group []struct {
		ID     uint32 `json:"id"`
		Weight int    `json:"weight"`
	} `json:"group"`
	Type      string `json:"type"`
	Resilient struct {
		Buckets         int `json:"buckets"`
		IdleTimer       int `json:"idle_timer"`
		UnbalancedTimer int `json:"unbalanced_timer"`
	} `json:"resilient_args"`
	Protocol string `json:"protocol"`
}

func (k *kernelNS) nexthops(t *testing.T) map[uint32]ipNexthop {
	t.Helper()
	var list []ipNexthop
	if err := json.Unmarshal([]byte(k.Run(t, "ip", "-j", "nexthop", "show")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[uint32]ipNexthop{}
	for _, nh := range list {
		out[nh.ID] = nh
	}
	return out
}

// ipRoute is `ip -j route show`.
type ipRoute struct {
	Dst      string `json:"dst"`
	Type     string `json:"type"`
	Dev      string `json:"dev"`
	NHID     uint32 `json:"nhid"`
	Protocol string `json:"protocol"`
	Metric   int    `json:"metric"`
}

func (k *kernelNS) routes(t *testing.T, args ...string) map[string]ipRoute {
	t.Helper()
	var list []ipRoute
	if err := json.Unmarshal([]byte(k.Run(t, "ip", append([]string{"-j"}, args...)...)), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]ipRoute{}
	for _, r := range list {
		key := r.Dst
		if r.Type == "unreachable" {
			key = "unreachable " + key
		}
		out[key] = r
	}
	return out
}

func (k *kernelNS) tableRoutes(t *testing.T, table int) map[string]ipRoute {
	t.Helper()
	out := k.routes(t, "-4", "route", "show", "table", fmt.Sprint(table))
	for key, r := range k.routes(t, "-6", "route", "show", "table", fmt.Sprint(table)) {
		out[key] = r
	}
	return out
}

// TestGroupsRealKernel drives a group through its life against the kernel,
// with iproute2 as the independent witness: created resilient with its
// weights, the route shown with nhid; a member link deleted by hand leaves
// the route on the survivor (what the design relies on); shrinking to one
// member and to none; stale nexthops of ours swept; nobody else's touched.
func TestGroupsRealKernel(t *testing.T) {
	k := newKernelNS(t, 3)
	const table = 1234
	primary, a, b := k.links[0], k.links[1], k.links[2]
	foreignTable := 77
	// Someone else's nexthops and a route over them; a stale one of ours; one
	// of ours for another table.
	k.Run(t, "ip", "-6", "nexthop", "add", "id", "7", "dev", a+"p", "proto", "static")
	k.Run(t, "ip", "nexthop", "add", "id", "8", "group", "7", "proto", "static")
	k.Run(t, "ip", "route", "add", "10.9.0.0/16", "nhid", "8", "proto", "static", "table", fmt.Sprint(table))
	stale := uint32(table%4095+1)<<12 | 5
	other := uint32(foreignTable%4095+1)<<12 | 5
	legacy := 0x0F000000 | uint32(table%4095+1)<<12 | 6 // ours, at an id of before 2026-12
	k.Run(t, "ip", "-6", "nexthop", "add", "id", fmt.Sprint(stale), "dev", primary, "proto", "220")
	k.Run(t, "ip", "-6", "nexthop", "add", "id", fmt.Sprint(other), "dev", a, "proto", "220")
	k.Run(t, "ip", "-6", "nexthop", "add", "id", fmt.Sprint(legacy), "dev", primary, "proto", "220")

	m := netconfig.New(k.h, nil)
	if gt, err := m.DetectGroupType(table); err != nil || gt != netconfig.GroupResilient {
		t.Fatalf("DetectGroupType = %v, %v; want resilient (kernel 5.13+)", gt, err)
	}
	remote := pfx("10.2.0.0/16", "fd00:2::/48")
	cfg := netconfig.Config{Link: primary, ExtraLinks: []string{a, b}, MTU: 1380, Table: table, Metric: 100,
		Addresses: pfx("10.255.0.1/32"), FailClosed: remote, LinkSysctls: netconfig.GatewayLinkSysctls(),
		Groups: []netconfig.Group{{Name: "par1", Routes: remote, Members: []netconfig.Member{{Link: a, Weight: 1}, {Link: b, Weight: 2}}}}}
	ch, err := m.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first apply: %s", ch)
	if len(ch.Sysctls) != 3 {
		t.Errorf("sysctl changes %v, want rp_filter on three links", ch.Sysctls)
	}
	for _, l := range k.links {
		if v := strings.TrimSpace(k.Run(t, "cat", "/proc/sys/net/ipv4/conf/"+l+"/rp_filter")); v != "2" {
			t.Errorf("%s rp_filter = %s", l, v)
		}
	}

	nhs := k.nexthops(t)
	gid := checkGroup(t, nhs, map[string]int{a: 1, b: 2})
	if g := nhs[gid]; g.Type != "resilient" || g.Resilient.Buckets != 128 || g.Resilient.IdleTimer != 1 || g.Resilient.UnbalancedTimer != 10 || g.Protocol != "220" {
		t.Errorf("group %+v: want resilient, 128 buckets, timers 1 s and 10 s, proto 220", g)
	}
	for _, id := range []uint32{stale, legacy} {
		if _, ok := nhs[id]; ok {
			t.Errorf("stale nexthop %d of ours not swept", id)
		}
	}
	if f, ok := nhs[1<<24]; !ok || f.Protocol != "220" {
		t.Errorf("no fence of ours at id %d (keeps zebra's ids above ours): %+v", 1<<24, f)
	}
	for _, id := range []uint32{7, 8, other} {
		if _, ok := nhs[id]; !ok {
			t.Errorf("nexthop %d (not ours for table %d) was deleted", id, table)
		}
	}
	rs := k.tableRoutes(t, table)
	for _, p := range []string{"10.2.0.0/16", "fd00:2::/48"} {
		if r := rs[p]; r.NHID != gid || r.Metric != 100 || r.Protocol != "220" {
			t.Errorf("route %s = %+v, want nhid %d metric 100 proto 220", p, r, gid)
		}
		if r := rs["unreachable "+p]; r.Metric != 101 {
			t.Errorf("fail-closed route %s = %+v", p, r)
		}
	}
	if r := rs["10.9.0.0/16"]; r.NHID != 8 {
		t.Errorf("foreign route over nhid 8 = %+v", r)
	}
	owned, err := m.OwnedRoutes(table)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(owned, func(r netconfig.Route) bool { return r.Dst == remote[0] && r.Kind == netconfig.KindTunnel }); i < 0 || owned[i].Nexthop != gid || owned[i].Link != 0 {
		t.Errorf("OwnedRoutes = %v, want %s over nhid %d", owned, remote[0], gid)
	}
	if ch, err := m.Apply(cfg); err != nil || !ch.Empty() {
		t.Fatalf("second apply not a no-op: %s %v", ch, err)
	}
	groupMemberLoss(t, k, m, cfg, gid)
	groupEmptyAndPurge(t, k, m, cfg, []uint32{7, 8, other})
}

// groupMemberLoss deletes a member's link under a group of two.
func groupMemberLoss(t *testing.T, k *kernelNS, m *netconfig.Manager, cfg netconfig.Config, gid uint32) {
	t.Helper()
	table, a, b := cfg.Table, k.links[1], k.links[2]
	// The kernel behaviour the design relies on: deleting a member's link
	// shrinks the group; the route stays, on the survivor.
	k.Run(t, "ip", "rule", "add", "to", "10.2.0.0/16", "lookup", fmt.Sprint(table))
	k.Run(t, "ip", "link", "del", b)
	nhs := k.nexthops(t)
	if g := nhs[gid]; len(g.Group) != 1 {
		t.Fatalf("after deleting %s, group %d = %+v, want one member", b, gid, g)
	}
	if r := k.tableRoutes(t, table)["10.2.0.0/16"]; r.NHID != gid || r.Dev != a {
		t.Fatalf("after deleting %s the route is %+v, want nhid %d dev %s", b, r, gid, a)
	}
	if got := k.Run(t, "ip", "route", "get", "10.2.3.4"); !strings.Contains(got, "dev "+a) {
		t.Fatalf("10.2.3.4 resolves to %q, want dev %s", got, a)
	}

	// Apply with the link still gone: one member left, so a plain route.
	if _, err := m.Apply(cfg); err == nil || !strings.Contains(err.Error(), b) {
		t.Fatalf("apply without %s: err %v, want it named", b, err)
	}
	if r := k.tableRoutes(t, table)["10.2.0.0/16"]; r.NHID != 0 || r.Dev != a {
		t.Fatalf("with one member the route is %+v, want dev %s without nhid", r, a)
	}
	if _, ok := k.nexthops(t)[gid]; ok {
		t.Errorf("group %d left after it shrank to one member", gid)
	}

	// The link comes back: the group again, with the same id.
	k.addLink(t, b)
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := checkGroup(t, k.nexthops(t), map[string]int{a: 1, b: 2}); got != gid {
		t.Errorf("group id %d after recreation, want %d again", got, gid)
	}
}

// groupEmptyAndPurge takes every member away, then purges; foreign are the
// nexthop ids that must survive.
func groupEmptyAndPurge(t *testing.T, k *kernelNS, m *netconfig.Manager, cfg netconfig.Config, foreign []uint32) {
	t.Helper()
	table, a, b := cfg.Table, k.links[1], k.links[2]
	// No member healthy: the tunnel route goes, the unreachable one answers.
	cfg.Groups[0].Members = nil
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got, _ := k.Try("ip", "route", "get", "10.2.3.4"); !strings.Contains(got, "No route to host") {
		t.Errorf("with no member, 10.2.3.4 resolves to %q, want unreachable", got)
	}
	if left, _ := m.OwnedNexthops(table); len(left) != 0 {
		t.Errorf("nexthops of ours left with no group: %v", left)
	}

	// Purge removes ours only.
	cfg.Groups[0].Members = []netconfig.Member{{Link: a, Weight: 1}, {Link: b, Weight: 1}}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Purge(table); err != nil {
		t.Fatal(err)
	}
	nhs := k.nexthops(t)
	for id, nh := range nhs {
		if id < 1<<24 && id>>12 == uint32(table%4095+1) {
			t.Errorf("nexthop of ours left after purge: %+v", nh)
		}
	}
	for _, id := range foreign {
		if _, ok := nhs[id]; !ok {
			t.Errorf("purge deleted nexthop %d, not ours", id)
		}
	}
	if left := k.Run(t, "ip", "route", "show", "table", "all", "proto", "220"); strings.TrimSpace(left) != "" {
		t.Errorf("routes left after purge:\n%s", left)
	}
}

// checkGroup finds the one group of ours in nhs, checks that its members
// are single nexthops of ours on the given links with the given weights, and
// returns its id.
func checkGroup(t *testing.T, nhs map[uint32]ipNexthop, weights map[string]int) uint32 {
	t.Helper()
	var gid uint32
	for id, nh := range nhs {
		if len(nh.Group) > 0 && nh.Protocol == "220" && id < 1<<24 {
			if gid != 0 {
				t.Fatalf("two groups of ours: %d and %d", gid, id)
			}
			gid = id
		}
	}
	if gid == 0 {
		t.Fatalf("no group of ours in %+v", nhs)
	}
	got := map[string]int{}
	for _, mb := range nhs[gid].Group {
		single := nhs[mb.ID]
		if single.Protocol != "220" {
			t.Errorf("member %+v is not ours", single)
		}
		w := mb.Weight
		if w == 0 {
			w = 1 // iproute2 leaves weight 1 out
		}
		got[single.Dev] = w
	}
	if fmt.Sprint(got) != fmt.Sprint(weights) {
		t.Errorf("group %d members %v, want %v", gid, got, weights)
	}
	return gid
}

// TestShadowingRealKernel: a fabric /25 inside our /24, installed by bgp,
// is found; our own routes, routes into our link, less specific routes and
// worse metrics are not.
func TestShadowingRealKernel(t *testing.T) {
	k := newKernelNS(t, 2)
	ours, fabric := k.links[0], k.links[1]
	k.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", fabric)
	m := netconfig.New(k.h, nil)
	cfg := netconfig.Config{Link: ours, Metric: 100, Routes: pfx("10.2.0.0/24", "fd00:2::/48"), FailClosed: pfx("10.2.0.0/24", "fd00:2::/48", "10.4.0.0/16")}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if s, err := m.Shadowing(cfg); err != nil || len(s) != 0 {
		t.Fatalf("Shadowing with only our routes = %v, %v", s, err)
	}
	k.Run(t, "ip", "route", "add", "10.2.0.0/25", "via", "192.0.2.9", "proto", "bgp", "metric", "20")
	k.Run(t, "ip", "route", "add", "10.4.7.0/24", "dev", fabric, "proto", "zebra")
	k.Run(t, "ip", "-6", "route", "add", "fd00:2:0:1::/64", "dev", fabric, "proto", "static")
	k.Run(t, "ip", "route", "add", "10.2.0.128/25", "dev", ours, "proto", "static")    // into our tunnel
	k.Run(t, "ip", "route", "add", "10.0.0.0/8", "via", "192.0.2.9", "proto", "bgp")   // less specific
	k.Run(t, "ip", "route", "add", "10.2.0.0/24", "via", "192.0.2.9", "metric", "500") // never wins
	// A table that a rule consults before main: any metric counts there.
	k.Run(t, "ip", "rule", "add", "pref", "100", "lookup", "77")
	k.Run(t, "ip", "route", "add", "blackhole", "10.2.0.64/26", "table", "77", "metric", "9999")
	got, err := m.Shadowing(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, s.String())
	}
	want := []string{
		"10.2.0.0/25 via 192.0.2.9 dev " + fabric + " proto bgp metric 20 table 254 shadows 10.2.0.0/24",
		"blackhole 10.2.0.64/26 proto boot metric 9999 table 77 shadows 10.2.0.0/24",
		"10.4.7.0/24 dev " + fabric + " proto zebra metric 0 table 254 shadows 10.4.0.0/16",
		"fd00:2:0:1::/64 dev " + fabric + " proto static metric 1024 table 254 shadows fd00:2::/48",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("Shadowing:\n%s\nwant\n%s\nkernel:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"), k.Run(t, "ip", "route", "show", "table", "all"))
	}
	// The witness agrees the /25 is there, as bgp's.
	if r := k.routes(t, "route", "show", "10.2.0.0/25"); r["10.2.0.0/25"].Protocol != "bgp" {
		t.Errorf("ip route shows %+v", r)
	}
}

func TestSysctlsRealKernel(t *testing.T) {
	k := newKernelNS(t, 1)
	m := netconfig.New(k.h, nil)
	ch, err := m.SetMultipathHashPolicy(1)
	if err != nil || len(ch) != 2 || ch[0].Old != "0" || ch[0].New != "1" {
		t.Fatalf("SetMultipathHashPolicy = %v, %v", ch, err)
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		if v := strings.TrimSpace(k.Run(t, "cat", "/proc/sys/net/"+fam+"/fib_multipath_hash_policy")); v != "1" {
			t.Errorf("%s hash policy = %s", fam, v)
		}
	}
	if ch, err := m.SetMultipathHashPolicy(1); err != nil || len(ch) != 0 {
		t.Errorf("again: %v, %v", ch, err)
	}
	if host, err := netconfig.New(nil, nil).SetMultipathHashPolicy(1); err == nil {
		t.Errorf("no sysctls without a Handle, got %v", host)
	}
	if _, err := m.SetLinkSysctls([]string{"nonexistent0"}, netconfig.GatewayLinkSysctls()); err == nil {
		t.Error("sysctls set on a link that does not exist")
	}
}

// TestWatchNexthopDeletes: someone deleting a nexthop of ours by hand
// shrinks its group; the watch says so at once, and Apply repairs it.
func TestWatchNexthopDeletes(t *testing.T) {
	k := newKernelNS(t, 2)
	m := netconfig.New(k.h, nil)
	cfg := netconfig.Config{Link: k.links[0], ExtraLinks: k.links[1:], Metric: 100,
		Groups: []netconfig.Group{{Name: "par1", Routes: pfx("10.2.0.0/16"), Members: []netconfig.Member{{Link: k.links[0], Weight: 1}, {Link: k.links[1], Weight: 1}}}}}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	kicks := make(chan struct{}, 16)
	ctx := t.Context()
	if err := k.Do(func() error {
		return netconfig.WatchRouteDeletes(ctx, func() { kicks <- struct{}{} })
	}); err != nil {
		t.Fatal(err)
	}
	nhs, err := m.OwnedNexthops(0)
	single := slices.IndexFunc(nhs, func(nh netconfig.Nexthop) bool { return !nh.IsGroup() })
	if err != nil || len(nhs) != 3 || single < 0 {
		t.Fatalf("OwnedNexthops = %v, %v; want two singles and a group", nhs, err)
	}
	k.Run(t, "ip", "nexthop", "del", "id", fmt.Sprint(nhs[single].ID))
	select {
	case <-kicks:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10 s of our nexthop going")
	}
	// The next Apply puts it back in the group.
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	checkGroup(t, k.nexthops(t), map[string]int{k.links[0]: 1, k.links[1]: 1})
}

// On a host with IPv6 disabled (disable_ipv6 = 1 everywhere, lo included)
// the kernel refuses IPv6 nexthop objects, so a group is made of IPv4 ones
// and an IPv4 prefix still goes over it (it used to fall back to a plain
// route over one member).
func TestGroupsRealKernelWithoutIPv6(t *testing.T) {
	k := newKernelNS(t, 3)
	k.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	primary, a, b := k.links[0], k.links[1], k.links[2]
	m := netconfig.New(k.h, nil)
	remote := pfx("10.2.0.0/16")
	cfg := netconfig.Config{Link: primary, ExtraLinks: []string{a, b}, Table: 1234, Metric: 100, FailClosed: remote,
		Groups: []netconfig.Group{{Name: "par1", Routes: remote, Members: []netconfig.Member{{Link: a, Weight: 1}, {Link: b, Weight: 2}}}}}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	gid := checkGroup(t, k.nexthops(t), map[string]int{a: 1, b: 2})
	if r := k.routes(t, "-4", "route", "show", "table", "1234")["10.2.0.0/16"]; r.NHID != gid {
		t.Errorf("route 10.2.0.0/16 %+v, want nhid %d", r, gid)
	}
	// Steady: a second apply changes nothing.
	if ch, err := m.Apply(cfg); err != nil || !ch.Empty() {
		t.Errorf("second apply: %v, %s", err, ch)
	}
}
