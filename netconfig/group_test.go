package netconfig_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"golang.org/x/sys/unix"
)

// Nexthop ids in the goldens are those the documented derivation gives for
// the main table: tag 255 in the top 12 bits, the FNV-1a hash of kind and
// name in the low 20. They are part of the contract (the same on every
// gateway, after every restart), so the goldens pin them.

func member(link string, weight int) netconfig.Member {
	return netconfig.Member{Link: link, Weight: weight}
}

// gwSite is a gateway with three WireGuard links (one per remote gateway
// slot); par1 and ams1 have several gateways, 10.3.0.0/16 is a one-gateway
// site through dcm0 as today.
func gwSite(par1, ams1 []netconfig.Member) netconfig.Config {
	return netconfig.Config{
		Link: "dcm0", ExtraLinks: []string{"dcm1", "dcm2"}, MTU: 1420, Addresses: pfx("10.255.0.1/32"), Metric: 100,
		Routes:     pfx("10.3.0.0/16"),
		FailClosed: pfx("10.2.0.0/16", "fd00:2::/48", "10.3.0.0/16", "10.5.0.0/16"),
		Groups: []netconfig.Group{
			{Name: "par1", Routes: pfx("10.2.0.0/16", "fd00:2::/48"), Members: par1},
			{Name: "ams1", Routes: pfx("10.5.0.0/16"), Members: ams1},
		},
		LinkSysctls: netconfig.GatewayLinkSysctls(),
	}
}

func newGatewayFake() *netconfigtest.Fake {
	f := newFake()
	f.AddLink("dcm1", 1500)
	f.AddLink("dcm2", 1500)
	f.Ops = nil
	return f
}

const gwLinks = `link eth0 mtu 1500 up
link dcm0 mtu 1420 up
  addr 10.255.0.1/32
link dcm1 mtu 1420 up
link dcm2 mtu 1420 up
sysctl net/ipv4/conf/dcm0/rp_filter=2
sysctl net/ipv4/conf/dcm1/rp_filter=2
sysctl net/ipv4/conf/dcm2/rp_filter=2
`

const gwFailClosed = `route unreachable 10.2.0.0/16 proto 220 metric 101 table 254
route unreachable 10.3.0.0/16 proto 220 metric 101 table 254
route unreachable 10.5.0.0/16 proto 220 metric 101 table 254
route unreachable fd00:2::/48 proto 220 metric 101 table 254
`

type groupState struct {
	name string
	cfg  netconfig.Config
	want string
}

// groupStates returns the states a gateway goes through, built anew for
// each caller: tests edit them.
func groupStates() []groupState {
	return []groupState{
		{"par1 over two gateways 1:3, ams1 over two", gwSite(
			[]netconfig.Member{member("dcm0", 1), member("dcm1", 3)},
			[]netconfig.Member{member("dcm1", 1), member("dcm2", 1)}), gwLinks + `nexthop id 1044714 group 1045260/1046469 type resilient proto 220
nexthop id 1045260 dev dcm1 proto 220
nexthop id 1045338 group 1045260,3/1045663 type resilient proto 220
nexthop id 1045663 dev dcm0 proto 220
nexthop id 1046469 dev dcm2 proto 220
nexthop id 16777216 blackhole proto 220
route 10.2.0.0/16 nhid 1045338 proto 220 metric 100 table 254
route 10.3.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 10.5.0.0/16 nhid 1044714 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route fd00:2::/48 nhid 1045338 proto 220 metric 100 table 254
` + gwFailClosed},
		{"par1 gains a third gateway", gwSite(
			[]netconfig.Member{member("dcm0", 1), member("dcm1", 3), member("dcm2", 1)},
			[]netconfig.Member{member("dcm1", 1), member("dcm2", 1)}), gwLinks + `nexthop id 1044714 group 1045260/1046469 type resilient proto 220
nexthop id 1045260 dev dcm1 proto 220
nexthop id 1045338 group 1045260,3/1045663/1046469 type resilient proto 220
nexthop id 1045663 dev dcm0 proto 220
nexthop id 1046469 dev dcm2 proto 220
nexthop id 16777216 blackhole proto 220
route 10.2.0.0/16 nhid 1045338 proto 220 metric 100 table 254
route 10.3.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 10.5.0.0/16 nhid 1044714 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route fd00:2::/48 nhid 1045338 proto 220 metric 100 table 254
` + gwFailClosed},
		{"dcm1's gateways leave both groups", gwSite(
			[]netconfig.Member{member("dcm0", 1), member("dcm2", 1)},
			[]netconfig.Member{member("dcm2", 1)}), gwLinks + `nexthop id 1045338 group 1045663/1046469 type resilient proto 220
nexthop id 1045663 dev dcm0 proto 220
nexthop id 1046469 dev dcm2 proto 220
nexthop id 16777216 blackhole proto 220
route 10.2.0.0/16 nhid 1045338 proto 220 metric 100 table 254
route 10.3.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 10.5.0.0/16 dev dcm2 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route fd00:2::/48 nhid 1045338 proto 220 metric 100 table 254
` + gwFailClosed},
		{"par1 down to one gateway, ams1 to none", gwSite(
			[]netconfig.Member{member("dcm2", 1)}, nil), gwLinks + `route 10.2.0.0/16 dev dcm2 proto 220 metric 100 table 254
route 10.3.0.0/16 dev dcm0 proto 220 metric 100 table 254
route 192.0.2.0/24 dev eth0 proto 2 metric 0 table 254
route fd00:2::/48 dev dcm2 proto 220 metric 100 table 254
` + gwFailClosed},
	}
}

func TestGroupStates(t *testing.T) {
	f := newGatewayFake()
	m := netconfig.New(f, nil)
	for _, st := range groupStates() {
		if _, err := m.Apply(st.cfg); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := f.String(); got != st.want {
			t.Fatalf("%s: kernel state\n%s\nwant\n%s", st.name, got, st.want)
		}
		f.Ops = nil
		if ch, err := m.Apply(st.cfg); err != nil || !ch.Empty() || len(f.Ops) != 0 {
			t.Fatalf("%s: second apply not a no-op: %v %v ops=%v", st.name, ch, err, f.Ops)
		}
	}
	if gt := m.GroupType(); gt != netconfig.GroupResilient {
		t.Errorf("GroupType = %v", gt)
	}
	// A restarted agent finds the same objects and changes nothing.
	if _, err := m.Apply(groupStates()[0].cfg); err != nil {
		t.Fatal(err)
	}
	if ch, err := netconfig.New(f, nil).Apply(groupStates()[0].cfg); err != nil || !ch.Empty() {
		t.Fatalf("restart not a no-op: %v %v", ch, err)
	}
}

// A group of one member is exactly today's route through one link: same
// kernel state, same calls.
func TestGroupOfOneIsTodaysRoute(t *testing.T) {
	plain, grouped := newFake(), newFake()
	cfg := site("10.2.0.0/16", "fd00:2::/48")
	if _, err := netconfig.New(plain, nil).Apply(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Routes = nil
	cfg.Groups = []netconfig.Group{{Name: "par1", Routes: pfx("10.2.0.0/16", "fd00:2::/48"), Members: []netconfig.Member{member("dcm0", 7)}}}
	if _, err := netconfig.New(grouped, nil).Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if plain.String() != grouped.String() || strings.Join(plain.Ops, "\n") != strings.Join(grouped.Ops, "\n") {
		t.Fatalf("one-member group differs from a plain route:\n%s\n%v\nvs\n%s\n%v", plain, plain.Ops, grouped, grouped.Ops)
	}
}

// A member leaving is one replace of the group: no route is touched, so
// the survivors never lose their route; its nexthop goes afterwards.
func TestGroupShrinkIsOneReplace(t *testing.T) {
	f := newGatewayFake()
	m := netconfig.New(f, nil)
	if _, err := m.Apply(groupStates()[1].cfg); err != nil {
		t.Fatal(err)
	}
	f.Ops = nil
	cfg := groupStates()[1].cfg
	cfg.Groups[0].Members = []netconfig.Member{member("dcm0", 1), member("dcm2", 1)}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{"nexthop replace id 1045338 group 1045663/1046469 type resilient proto 220"}
	if !slices.Equal(f.Ops, want) {
		t.Fatalf("ops %q, want %q", f.Ops, want)
	}
	// ams1 still uses dcm1; when it stops, dcm1's nexthop goes, after the
	// group stopped using it.
	f.Ops = nil
	cfg.Groups[1].Members = []netconfig.Member{member("dcm0", 1), member("dcm2", 1)}
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	want = []string{"nexthop replace id 1044714 group 1045663/1046469 type resilient proto 220", "nexthop del id 1045260"}
	if !slices.Equal(f.Ops, want) {
		t.Fatalf("ops %q, want %q", f.Ops, want)
	}
}

func TestGroupConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(*netconfig.Config)
	}{
		{"standby member", "weight 0; use 1-256 (leave standby members out)", func(c *netconfig.Config) { c.Groups[0].Members[0].Weight = 0 }},
		{"weight too big", "weight 257", func(c *netconfig.Config) { c.Groups[0].Members[0].Weight = 257 }},
		{"not our link", `member "eth0" is neither Link nor one of ExtraLinks`, func(c *netconfig.Config) { c.Groups[0].Members[0].Link = "eth0" }},
		{"member twice", `member "dcm1" listed twice`, func(c *netconfig.Config) { c.Groups[0].Members[0].Link = "dcm1" }},
		{"prefix in Routes too", "prefix 10.3.0.0/16 is also in Routes", func(c *netconfig.Config) { c.Groups[0].Routes = pfx("10.3.0.0/16") }},
		{"prefix in two groups", "prefix 10.2.0.0/16 is also in group par1", func(c *netconfig.Config) { c.Groups[1].Routes = pfx("10.2.0.0/16") }},
		{"same name", `group "par1": name empty or used twice`, func(c *netconfig.Config) { c.Groups[1].Name = "par1" }},
		{"link twice", `ExtraLinks: "dcm0" is empty or named twice`, func(c *netconfig.Config) { c.ExtraLinks = []string{"dcm0"} }},
		{"bad sysctl", `"ipv4/../rp_filter"="2": want a key like ipv4/rp_filter`, func(c *netconfig.Config) {
			c.LinkSysctls = []netconfig.LinkSysctl{{Key: "ipv4/../rp_filter", Value: "2"}}
		}},
	} {
		f := newGatewayFake()
		cfg := gwSite([]netconfig.Member{member("dcm0", 1), member("dcm1", 1)}, []netconfig.Member{member("dcm2", 1)})
		tc.edit(&cfg)
		_, err := netconfig.New(f, nil).Apply(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		if len(f.Ops) != 0 {
			t.Errorf("%s: a contradictory config changed the kernel: %v", tc.name, f.Ops)
		}
	}
}

// routeCover reads, from a rendered Fake, which links each prefix's tunnel
// routes use and whether it has its unreachable route.
type cover struct {
	links       []string // nil: no tunnel route
	unreachable bool
}

func routeCover(state string) map[netip.Prefix]cover {
	singles, groups := map[string]string{}, map[string][]string{}
	out := map[netip.Prefix]cover{}
	for _, line := range strings.Split(state, "\n") {
		w := strings.Fields(line)
		switch {
		case len(w) > 4 && w[0] == "nexthop" && w[3] == "dev":
			singles[w[2]] = w[4]
		case len(w) > 4 && w[0] == "nexthop" && w[3] == "group":
			for _, mb := range strings.Split(w[4], "/") {
				id, _, _ := strings.Cut(mb, ",")
				groups[w[2]] = append(groups[w[2]], id)
			}
		}
	}
	for _, line := range strings.Split(state, "\n") {
		w := strings.Fields(line)
		if len(w) < 4 || w[0] != "route" || !strings.Contains(line, "proto 220") {
			continue
		}
		if w[1] == "unreachable" {
			p := netip.MustParsePrefix(w[2])
			c := out[p]
			c.unreachable = true
			out[p] = c
			continue
		}
		p := netip.MustParsePrefix(w[1])
		c := out[p]
		switch w[2] {
		case "dev":
			c.links = append(c.links, w[3])
		case "nhid":
			for _, id := range groups[w[3]] {
				c.links = append(c.links, singles[id])
			}
		}
		out[p] = c
	}
	return out
}

// Random transitions between group states: after every single kernel call,
// a prefix that has its fail-closed route before and after still has it, a
// prefix with a tunnel route before and after still has one, and no route
// ever sends traffic into a link that neither state wanted for it. Every
// state is reached with exactly the rendering a fresh kernel gets.
func TestGroupsRandomTransitions(t *testing.T) {
	states := []netconfig.Config{}
	for _, st := range groupStates() {
		states = append(states, st.cfg)
	}
	moved := gwSite([]netconfig.Member{member("dcm1", 1), member("dcm2", 2)}, []netconfig.Member{member("dcm0", 1), member("dcm1", 1)})
	moved.Metric = 50
	single := gwSite(nil, nil)
	single.Groups, single.Routes = nil, pfx("10.2.0.0/16", "fd00:2::/48") // one-gateway sites only
	states = append(states, moved, single)
	fresh := make([]string, len(states))
	for i, cfg := range states {
		f := newGatewayFake()
		if _, err := netconfig.New(f, nil).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		fresh[i] = f.String()
	}

	f := newGatewayFake()
	m := netconfig.New(f, nil)
	r := rand.New(rand.NewPCG(3, 4))
	cur := -1
	for step := range 300 {
		next := r.IntN(len(states))
		var before, after map[netip.Prefix]cover
		if cur >= 0 {
			before, after = routeCover(fresh[cur]), routeCover(fresh[next])
		}
		var violations []string
		f.OnChange = func(state string) {
			if before == nil {
				return
			}
			now := routeCover(state)
			for p, b := range before {
				a, n := after[p], now[p]
				if b.unreachable && a.unreachable && !n.unreachable {
					violations = append(violations, fmt.Sprintf("%s lost its unreachable route", p))
				}
				if b.links != nil && a.links != nil && n.links == nil {
					violations = append(violations, fmt.Sprintf("%s lost its tunnel route", p))
				}
			}
			for p, n := range now {
				for _, l := range n.links {
					if !slices.Contains(before[p].links, l) && !slices.Contains(after[p].links, l) {
						violations = append(violations, fmt.Sprintf("%s sent into %s, which neither state wants", p, l))
					}
				}
			}
		}
		if _, err := m.Apply(states[next]); err != nil {
			t.Fatalf("step %d (%d->%d): %v", step, cur, next, err)
		}
		f.OnChange = nil
		if len(violations) > 0 {
			t.Fatalf("step %d (%d->%d): %v\nops %q", step, cur, next, violations, f.Ops)
		}
		if got := f.String(); got != fresh[next] {
			t.Fatalf("step %d (%d->%d): kernel state\n%s\nwant, as on a fresh kernel,\n%s", step, cur, next, got, fresh[next])
		}
		f.Ops = nil
		cur = next
	}
}

// Nobody else's nexthop objects or routes are touched, even at the ids
// ours would take; stale ones of ours are swept; Purge takes only ours.
func TestGroupsLeaveForeignNexthops(t *testing.T) {
	f := newGatewayFake()
	eth, _ := f.LinkByName("eth0")
	// zebra's, sitting on the ids dcm0's single and par1's group prefer.
	f.AddForeignNexthop(netconfig.Nexthop{ID: 1045663, Protocol: unix.RTPROT_ZEBRA, Family: unix.AF_INET, Link: eth.Attrs().Index})
	f.AddForeignNexthop(netconfig.Nexthop{ID: 1045338, Protocol: unix.RTPROT_ZEBRA, Members: []netconfig.NexthopMember{{ID: 1045663, Weight: 1}}})
	f.AddForeignNexthopRoute(netconfig.NexthopRoute{Dst: netip.MustParsePrefix("10.9.0.0/16"), Table: unix.RT_TABLE_MAIN, Metric: 20, Protocol: unix.RTPROT_ZEBRA, Nexthop: 1045338})
	// Ours for another table, and a stale one of ours for this one.
	other := netconfig.Nexthop{ID: 1236<<12 | 7, Protocol: netconfig.RouteProtocol, Family: unix.AF_INET6, Link: eth.Attrs().Index}
	f.AddForeignNexthop(other)
	f.AddForeignNexthop(netconfig.Nexthop{ID: 255<<12 | 7, Protocol: netconfig.RouteProtocol, Family: unix.AF_INET6, Link: eth.Attrs().Index})
	foreign := []string{
		"nexthop id 1045663 dev eth0 proto 11",
		"nexthop id 1045338 group 1045663 proto 11",
		"route 10.9.0.0/16 nhid 1045338 proto 11 metric 20 table 254",
		fmt.Sprintf("nexthop id %d dev eth0 proto 220", other.ID),
	}
	m := netconfig.New(f, nil)
	for _, st := range groupStates() {
		if _, err := m.Apply(st.cfg); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := f.String()
		for _, want := range foreign {
			if !strings.Contains(got, want+"\n") {
				t.Fatalf("%s: %q was touched:\n%s", st.name, want, got)
			}
		}
		if strings.Contains(got, fmt.Sprintf("nexthop id %d ", 255<<12|7)) {
			t.Fatalf("%s: stale nexthop of ours not swept:\n%s", st.name, got)
		}
	}
	// The first state's group, moved off zebra's id, with dcm0's single moved too.
	if _, err := m.Apply(groupStates()[0].cfg); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); !strings.Contains(got, "nexthop id 1045339 group 1045260,3/1045664 type resilient proto 220\n") ||
		!strings.Contains(got, "route 10.2.0.0/16 nhid 1045339 proto 220") {
		t.Fatalf("ours not moved to the next free ids:\n%s", got)
	}
	if _, err := m.Purge(0); err != nil {
		t.Fatal(err)
	}
	got := f.String()
	for _, want := range foreign {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("purge touched %q:\n%s", want, got)
		}
	}
	// Left: table 1236's object, and the fence, which stays while any
	// table has an object of ours.
	if strings.Contains(got, "proto 220 metric") || strings.Count(got, "proto 220") != 2 || !strings.Contains(got, "nexthop id 16777216 blackhole proto 220\n") {
		t.Errorf("purge left ours:\n%s", got)
	}
	for _, op := range f.Ops {
		if strings.HasPrefix(op, "nexthop del") && (strings.Contains(op, "1045663") || strings.Contains(op, fmt.Sprint(other.ID))) {
			t.Errorf("deleted a nexthop not ours: %s", op)
		}
	}
}

// The fence (an object of ours at 1<<24) is the first object of ours a
// kernel gets and goes with the last; objects of ours at the ids of before
// 2026-12 (0x0F000000 up, which FRR's zebra takes for a routing daemon's
// and so never re-checks) give way to ours below the fence.
func TestNexthopFenceAndLegacyIDs(t *testing.T) {
	f := newGatewayFake()
	dcm0, _ := f.LinkByName("dcm0")
	dcm1, _ := f.LinkByName("dcm1")
	const legacy = 0x0F000000 | 255<<12
	f.AddForeignNexthop(netconfig.Nexthop{ID: legacy | 1, Protocol: netconfig.RouteProtocol, Family: unix.AF_INET6, Link: dcm0.Attrs().Index})
	f.AddForeignNexthop(netconfig.Nexthop{ID: legacy | 2, Protocol: netconfig.RouteProtocol, Family: unix.AF_INET6, Link: dcm1.Attrs().Index})
	f.AddForeignNexthop(netconfig.Nexthop{ID: legacy | 3, Protocol: netconfig.RouteProtocol, Resilient: true,
		Members: []netconfig.NexthopMember{{ID: legacy | 1, Weight: 1}, {ID: legacy | 2, Weight: 3}}})
	for _, p := range pfx("10.2.0.0/16", "fd00:2::/48") {
		f.AddForeignNexthopRoute(netconfig.NexthopRoute{Dst: p, Table: unix.RT_TABLE_MAIN, Metric: 100, Protocol: netconfig.RouteProtocol, Nexthop: legacy | 3})
	}
	m := netconfig.New(f, nil)
	st := groupStates()[0]
	if _, err := m.Apply(st.cfg); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != st.want {
		t.Fatalf("after an agent of before: kernel state\n%s\nwant, as on a fresh kernel,\n%s", got, st.want)
	}
	if i := slices.IndexFunc(f.Ops, func(op string) bool { return strings.HasPrefix(op, "nexthop add") }); i < 0 || !strings.HasPrefix(f.Ops[i], "nexthop add id 16777216 blackhole") {
		t.Errorf("the first object added is not the fence: %q", f.Ops)
	}
	f.Ops = nil
	if _, err := m.Purge(0); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); strings.Contains(got, "proto 220") {
		t.Errorf("purge left ours (the fence goes with the last object):\n%s", got)
	}
}

// A kernel without resilient groups gets hash-threshold ones; one without
// nexthop objects, or a Netlink that cannot make them, gets a route through
// the first member and an error that says why.
func TestGroupFallbacks(t *testing.T) {
	cfg := groupStates()[0].cfg
	f := newGatewayFake()
	f.NoResilient = true
	m := netconfig.New(f, nil)
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if m.GroupType() != netconfig.GroupHashThreshold || strings.Contains(f.String(), "resilient") || !strings.Contains(f.String(), "route 10.2.0.0/16 nhid") {
		t.Fatalf("without resilient groups (%v):\n%s", m.GroupType(), f)
	}

	f = newGatewayFake()
	f.NoNexthops = true
	check := func(what string, nl netconfig.Netlink) {
		_, err := netconfig.New(nl, nil).Apply(cfg)
		if !errors.Is(err, netconfig.ErrNoNexthops) || !strings.Contains(err.Error(), `group "par1"`) || !strings.Contains(err.Error(), "routing over dcm0 only") {
			t.Errorf("%s: err %v", what, err)
		}
		if got := f.String(); !strings.Contains(got, "route 10.2.0.0/16 dev dcm0 proto 220") || !strings.Contains(got, "route 10.5.0.0/16 dev dcm1 proto 220") {
			t.Errorf("%s: not routed through the first members:\n%s", what, got)
		}
	}
	check("old kernel", f)
	f = newGatewayFake()
	check("plain netlink", struct{ netconfig.Netlink }{f})
}

// A member's link deleted under us: the kernel shrinks the group and keeps
// the route; the next Apply names the missing link and routes over what is
// left.
func TestGroupMemberLinkDeleted(t *testing.T) {
	f := newGatewayFake()
	m := netconfig.New(f, nil)
	cfg := groupStates()[1].cfg
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	f.DelLink("dcm1")
	if c := routeCover(f.String())[netip.MustParsePrefix("10.2.0.0/16")]; !slices.Equal(c.links, []string{"dcm0", "dcm2"}) {
		t.Fatalf("after deleting dcm1, 10.2.0.0/16 goes to %v\n%s", c.links, f)
	}
	_, err := m.Apply(cfg)
	if err == nil || !strings.Contains(err.Error(), "interface dcm1") {
		t.Fatalf("err %v, want the missing dcm1 named", err)
	}
	if c := routeCover(f.String())[netip.MustParsePrefix("10.5.0.0/16")]; !slices.Equal(c.links, []string{"dcm2"}) {
		t.Fatalf("ams1 without dcm1 goes to %v\n%s", c.links, f)
	}
	// Back, with its kernel defaults: rp_filter is set again.
	f.AddLink("dcm1", 1500)
	ch, err := m.Apply(cfg)
	if err != nil || len(ch.Sysctls) != 1 || ch.Sysctls[0].Name != "net/ipv4/conf/dcm1/rp_filter" {
		t.Fatalf("link back: %v %v", ch, err)
	}
	// The same objects as before (links are listed in creation order).
	want := groupStates()[1].want
	if got := f.String(); got[strings.Index(got, "sysctl"):] != want[strings.Index(want, "sysctl"):] {
		t.Fatalf("link back:\n%s\nwant\n%s", got, want)
	}
}

func TestLinkSysctlsOnlyOnOurLinks(t *testing.T) {
	f := newGatewayFake()
	m := netconfig.New(f, nil)
	if _, err := m.Apply(groupStates()[0].cfg); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops {
		if strings.HasPrefix(op, "sysctl") && !strings.Contains(op, "/dcm") {
			t.Errorf("sysctl outside our links: %s", op)
		}
	}
	if got, _ := f.Sysctl("net/ipv4/conf/eth0/rp_filter"); got != "0" {
		t.Errorf("eth0 rp_filter = %s", got)
	}
	ch, err := m.SetMultipathHashPolicy(1)
	if err != nil || len(ch) != 2 || !strings.Contains(f.String(), "sysctl net/ipv4/fib_multipath_hash_policy=1\nsysctl net/ipv6/fib_multipath_hash_policy=1\n") {
		t.Fatalf("hash policy: %v %v\n%s", ch, err, f)
	}
	if _, err := netconfig.New(struct{ netconfig.Netlink }{f}, nil).Apply(groupStates()[0].cfg); err == nil || !strings.Contains(err.Error(), "netconfig.OpenHandle") {
		t.Errorf("sysctls without a Netlink that sets them: %v", err)
	}
}
