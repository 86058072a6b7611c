package main

// The topology of TestGatewaysFabric: two sites of two gateways each (real
// agents, embedded backend, gossip), each site with a fabric router (FRR,
// examples/frr/fabric.conf) peering with its two gateways (FRR,
// examples/frr/frr.conf, redistributing dcmesh's protocol-220 routes) and a
// host behind the fabric router.
//
//	hostA ── fabA ─┬─ site1   ─┐            ┌─ site3   ─┬─ fabB ── hostB
//	               └─ site1.1 ─┴─ underlay ─┴─ site3.1 ─┘
//
// The shipped files are used with their example values replaced by this
// topology's (prefixes, and the second gateway's addresses), as an operator
// would.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// fabricFlowsTable counts, in every gateway's forward hook, the packets of
// each of the test's UDP flows (one rule per destination port).
const fabricFlowsTable = "dcmtflows"

// fabricSite is one site of TestGatewaysFabric.
type fabricSite struct {
	name     string
	gws      [2]*site
	fab      *netconfigtest.NS
	host     *netconfigtest.NS
	hostAddr string
	remote   string // the other site's prefix
	fabFRR   *frrRouter
	gwFRR    [2]*frrRouter
	watch    *routeWatch // the fabric's kernel route to remote
}

// node is a gateway's node name: the site's name, ".1" added for gateway 1.
func (fs *fabricSite) node(g *site) string {
	if g == fs.gws[1] {
		return fs.name + ".1"
	}
	return fs.name
}

// gwAddrs are the gateways' addresses towards the fabric (the fabric's BGP
// next hops), fabAddrs the fabric's ends: the examples' values.
var (
	gwAddrs  = [2]string{fabricGW1Addr, fabricGW2Addr}
	fabAddrs = [2]string{fabricFabAddr1, fabricFabAddr2}
)

// exampleFor returns the shipped file with each pair of edits (old, new)
// applied; old must occur in it (else the file changed and so must the test).
func exampleFor(t testing.TB, path string, edits ...string) string {
	t.Helper()
	conf := readExample(t, path)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(conf, edits[i]) {
			t.Fatalf("examples/%s lacks %q: update the test with the file", path, edits[i])
		}
		conf = strings.ReplaceAll(conf, edits[i], edits[i+1])
	}
	return conf
}

// remotePrefixEdits make the examples' remote prefixes (ams1, par1) the
// one remote site of this topology.
func remotePrefixEdits(remote string) []string {
	return []string{
		"ip prefix-list DCMESH-REMOTE seq 20 permit 10.3.0.0/16 le 32\n", "",
		"ip prefix-list DCMESH-REMOTE seq 10 permit 10.2.0.0/16 le 32", "ip prefix-list DCMESH-REMOTE seq 10 permit " + remote + " le 32",
	}
}

// newFabricSite wires site s (its two gateways, already enrolled) to a new
// fabric router and host; remote is the other site's prefix.
func newFabricSite(t *testing.T, m *testMesh, letter string, gws [2]*site, remote string) *fabricSite {
	t.Helper()
	fs := &fabricSite{name: gws[0].name, gws: gws, remote: remote}
	fs.fab = netconfigtest.NewNS(t, "dcmt-"+m.id+"-f"+letter)
	fs.host = netconfigtest.NewNS(t, "dcmt-"+m.id+"-h"+letter)
	for _, ns := range []*netconfigtest.NS{fs.fab, fs.host} {
		disableIPv6(t, ns)
	}
	// The site's prefix is behind the fabric: not on the gateways' lo.
	net3 := strings.TrimSuffix(gws[0].prefix(), ".0/24") // "10.N.0"
	fs.hostAddr = net3 + ".1"
	for _, g := range gws {
		g.ns.Run(t, "ip", "addr", "flush", "dev", "lo", "scope", "global")
	}
	netconfigtest.Veth(t, fs.fab, "f"+m.id+letter+"h", fs.host, "h"+m.id+"f")
	fs.fab.Run(t, "ip", "addr", "add", net3+".14/28", "dev", "f"+m.id+letter+"h")
	fs.host.Run(t, "ip", "addr", "add", fs.hostAddr+"/28", "dev", "h"+m.id+"f")
	fs.host.Run(t, "ip", "route", "add", "default", "via", net3+".14")
	for i, g := range gws {
		fabLink := fmt.Sprintf("f%s%s%d", m.id, letter, i+1)
		netconfigtest.Veth(t, fs.fab, fabLink, g.ns, "g"+m.id+"f")
		fs.fab.Run(t, "ip", "addr", "add", fabAddrs[i]+"/30", "dev", fabLink)
		g.ns.Run(t, "ip", "addr", "add", gwAddrs[i]+"/30", "dev", "g"+m.id+"f")
	}
	for _, ns := range []*netconfigtest.NS{fs.fab, gws[0].ns, gws[1].ns} {
		// Flows spread over ECMP and nexthop groups by their ports.
		ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	}
	for _, g := range gws {
		addFlowCounters(t, g.ns)
	}
	return fs
}

// startDaemons runs the fabric router's and the gateways' FRR.
func (fs *fabricSite) startDaemons(t *testing.T, daemonDir string) {
	t.Helper()
	own := strings.TrimSuffix(fs.gws[0].prefix(), "0.0/24") + "0.0/16"
	fabric := exampleFor(t, "frr/fabric.conf", append(remotePrefixEdits(fs.remote),
		"ip route 10.3.0.0/16 blackhole 250\n", "",
		"ip route 10.2.0.0/16 blackhole 250", "ip route "+fs.remote+" blackhole 250",
		"10.1.0.0/16", own)...)
	fs.fabFRR = startFRR(t, daemonDir, fs.fab, fabric, "zebra", "bgpd", "bfdd", "staticd")
	for i, g := range fs.gws {
		edits := remotePrefixEdits(fs.remote)
		if i == 1 {
			edits = append(edits, fabricGW1Addr, fabricGW2Addr, fabricFabAddr1, fabricFabAddr2)
		}
		fs.gwFRR[i] = startFRR(t, daemonDir, g.ns, exampleFor(t, "frr/frr.conf", edits...), "zebra", "bgpd", "bfdd")
	}
	fs.watch = watchRoute(t, fs.fab, fs.remote)
}

// waitFabric waits until the fabric routes the remote prefix over both
// gateways with BFD up to each.
func (fs *fabricSite) waitFabric(t *testing.T, timeout time.Duration) {
	t.Helper()
	fs.watch.wait(t, timeout, fs.name+"'s fabric ECMP over both gateways", func(r kernelRoute) bool { return r.isVia(gwAddrs[:]...) })
	netconfigtest.Eventually(t, timeout, 50*time.Millisecond, fs.name+"'s fabric: BFD up with both gateways", func() error {
		var peers []bfdPeer
		fs.fabFRR.json(t, "show bfd peers json", &peers)
		up := 0
		for _, p := range peers {
			if p.Status == "up" && p.Mult == 3 && p.TxMS == 300 {
				up++
			}
		}
		if up != 2 {
			return fmt.Errorf("BFD peers: %+v", peers)
		}
		return nil
	})
}

// waitMesh waits until every gateway routes the other site's prefix over a
// nexthop group of its two slot interfaces (one per remote gateway) with
// the probes up to both remote gateways.
func waitMesh(t *testing.T, sites ...*fabricSite) {
	t.Helper()
	for i, fs := range sites {
		other := sites[1-i]
		for _, g := range fs.gws {
			waitFor(t, 40*time.Second, fs.node(g)+" routes "+fs.remote+" over both remote gateways, probes up", func() error {
				if err := g.expectTunnel(fs.remote, g.iface, g.iface+"g1"); err != nil {
					return err
				}
				up := map[string]bool{}
				for _, p := range g.status().Peers {
					if p.Probe != nil && p.Probe.State == control.ProbeUp {
						up[p.Node] = true
					}
				}
				if !up[other.name] || !up[other.name+".1"] {
					return fmt.Errorf("probes up: %v", up)
				}
				return nil
			})
		}
	}
}

// addFlowCounters installs the per-flow counters in a gateway's forward hook.
func addFlowCounters(t testing.TB, ns *netconfigtest.NS) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n chain count {\n  type filter hook forward priority 0; policy accept;\n", fabricFlowsTable)
	for p := gatewayFlowPort; p < gatewayFlowPort+gatewayFlows; p++ {
		fmt.Fprintf(&b, "  udp dport %d counter comment \"port %d\"\n", p, p)
	}
	b.WriteString(" }\n}\n")
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft flow counters in %s: %v\n%s", ns.Name, err, out)
	}
}

// flowCounters returns the packets a gateway forwarded per flow (port).
func flowCounters(t testing.TB, ns *netconfigtest.NS) map[string]int {
	t.Helper()
	return nftCounters(t, ns, fabricFlowsTable)
}

// flowDelta is how many packets of each flow a gateway forwarded since
// before, and the flows (ports) with at least min of them.
func flowDelta(now, before map[string]int, min int) (total int, flows []string) {
	for p := gatewayFlowPort; p < gatewayFlowPort+gatewayFlows; p++ {
		k := fmt.Sprint("port ", p)
		d := now[k] - before[k]
		total += d
		if d >= min {
			flows = append(flows, k)
		}
	}
	return total, flows
}

// waitForwarded waits until g has forwarded n more packets of the flows.
func waitForwarded(t *testing.T, g *site, n int, what string) {
	t.Helper()
	before := flowCounters(t, g.ns)
	waitFor(t, 20*time.Second, what, func() error {
		if got, _ := flowDelta(flowCounters(t, g.ns), before, 1); got < n {
			return fmt.Errorf("forwarded %d packets of the flows, want %d", got, n)
		}
		return nil
	})
}
