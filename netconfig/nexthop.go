package netconfig

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Nexthop is a kernel nexthop object (`ip nexthop`): a single nexthop
// through a link, or a group of single nexthops with weights.
type Nexthop struct {
	ID       uint32
	Protocol netlink.RouteProtocol
	// Family of a single nexthop: ours are AF_INET6, which IPv4 and IPv6
	// routes can both use, or AF_INET where IPv6 is disabled
	// (memberFamily). Groups are AF_UNSPEC.
	Family int
	// Link is the interface index of a single nexthop.
	Link      int
	Gateway   netip.Addr // foreign nexthops only; dcmesh's have none
	Blackhole bool
	// Members of a group, sorted by ID.
	Members []NexthopMember
	// Resilient is the group's type: resilient (true) or hash-threshold.
	Resilient bool
}

// NexthopMember is one entry of a nexthop group.
type NexthopMember struct {
	ID     uint32
	Weight int // 1-256
}

// IsGroup reports whether nh is a group.
func (nh Nexthop) IsGroup() bool { return len(nh.Members) > 0 }

func (nh Nexthop) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "id %d", nh.ID)
	switch {
	case nh.IsGroup():
		parts := make([]string, len(nh.Members))
		for i, m := range nh.Members {
			parts[i] = fmt.Sprint(m.ID)
			if m.Weight != 1 {
				parts[i] += fmt.Sprintf(",%d", m.Weight)
			}
		}
		b.WriteString(" group " + strings.Join(parts, "/"))
		if nh.Resilient {
			b.WriteString(" type resilient")
		}
	case nh.Blackhole:
		b.WriteString(" blackhole")
	default:
		if nh.Gateway.IsValid() {
			b.WriteString(" via " + nh.Gateway.String())
		}
		fmt.Fprintf(&b, " dev #%d", nh.Link)
	}
	fmt.Fprintf(&b, " proto %d", nh.Protocol)
	return b.String()
}

// sameContent reports whether nh and o do the same thing (protocol and id aside).
func (nh Nexthop) sameContent(o Nexthop) bool {
	return nh.Family == o.Family && nh.Link == o.Link && nh.Gateway == o.Gateway && nh.Blackhole == o.Blackhole &&
		nh.Resilient == o.Resilient && slices.Equal(nh.Members, o.Members)
}

// NexthopRoute is a route whose nexthop is a nexthop object (RTA_NH_ID),
// which netlink.Route cannot express.
type NexthopRoute struct {
	Dst      netip.Prefix
	Table    int
	Metric   int
	Protocol netlink.RouteProtocol
	Nexthop  uint32
}

// NexthopNetlink is what Manager needs beyond Netlink for Groups: kernel
// nexthop objects and routes over them, which vishvananda/netlink does not
// have. *Handle and netconfigtest.Fake implement it.
type NexthopNetlink interface {
	// NexthopList lists every nexthop object, of any protocol.
	NexthopList() ([]Nexthop, error)
	// NexthopAdd creates nh; EEXIST if its ID is taken.
	NexthopAdd(nh Nexthop) error
	// NexthopReplace replaces the object with nh's ID in one step (a group
	// shrinks or grows without its routes going away), or creates it.
	NexthopReplace(nh Nexthop) error
	// NexthopDel deletes a nexthop object; routes through it go with it.
	NexthopDel(id uint32) error
	// RouteListNexthop lists the routes in table (IPv4 and IPv6, any
	// protocol) whose nexthop is an object.
	RouteListNexthop(table int) ([]NexthopRoute, error)
	// RouteAddNexthop adds r; EEXIST if its key (prefix, table, metric) is
	// taken.
	RouteAddNexthop(r NexthopRoute) error
	// RouteReplaceNexthop replaces the route with r's key, or adds it.
	RouteReplaceNexthop(r NexthopRoute) error
}

// GroupType is the kind of nexthop group the kernel offers.
type GroupType uint8

const (
	// GroupTypeUnknown: not detected yet.
	GroupTypeUnknown GroupType = iota
	// GroupResilient groups (Linux 5.13+) keep flows on the members they
	// use when other members leave or join.
	GroupResilient
	// GroupHashThreshold groups (Linux 5.3+, `type mpath`) split the hash
	// space anew on every change.
	GroupHashThreshold
)

func (t GroupType) String() string {
	switch t {
	case GroupResilient:
		return "resilient"
	case GroupHashThreshold:
		return "hash-threshold"
	}
	return "unknown"
}

// ErrNoNexthops means the kernel, or the Netlink given to New, cannot make
// nexthop objects, so a Group of two or more members is routed through its
// first member only.
var ErrNoNexthops = errors.New("no kernel nexthop objects (Linux 5.3 or later, opened with netconfig.OpenHandle, spreads a prefix over several links)")

// Resilient group parameters. Buckets: enough that weights up to 1:16 over
// four members come out close. A bucket idle for a second has nothing of its
// flow in flight, so moving it reorders nothing; after ten seconds out of
// balance (a gateway rejoined while every flow stays busy) busy buckets move
// too, so a recovered gateway carries its share again.
const (
	resilientBuckets         = 128
	resilientIdleTimer       = 1  // seconds
	resilientUnbalancedTimer = 10 // seconds
)

// Nexthop ids. The kernel has one id space per network namespace, shared
// with FRR's zebra and anyone running `ip nexthop`. dcmesh's ids for table T
// are tag(T)<<12 | slot, all below fenceID (1<<24): tag(T) = T mod 4095 + 1
// (12 bits, never 0; tables 1-4094 never share a tag); slot is the FNV-1a
// hash of the object's kind and name (the link for a single nexthop, the
// Group name for a group), 12 bits: 4,096 objects per table, for about as
// many multi-gateway sites. An id taken by anything else moves the object to
// the next free slot. Objects keep their ids from Apply to Apply and across
// restarts: Apply finds them again in the kernel before it hashes.
// Ownership is protocol 220 and the table's tag; nothing else is ever
// replaced or deleted.
//
// Why below 1<<24: FRR's zebra (8.0 to 10.1) takes a route whose nexthop
// object has an id at or above its ZEBRA_NHG_PROTO_LOWER (24,193,548; a
// block it leaves to routing daemons) for a daemon's and never checks that
// route's nexthops again. When an embedded-backend agent dies (kill -9) its
// links go, the kernel drops the routes over them without a notification,
// and zebra kept such a route selected: the gateway went on exporting the
// prefix as healthy (TestGatewaysFabric, LocalAgentKilled; the ids were in
// 0x0F000000-0x0FFFFFFF until 2026-12). Below that line zebra re-checks a
// route's nexthops when a link goes, as for a route through a link, and
// selects the unreachable route. FRR 10.2 and later delete such kernel
// routes whatever the id.
//
// The fence: zebra raises the counter it hands its own ids from to the
// highest id below that line it has read from the kernel. With the shipped
// `no zebra nexthop kernel enable` its objects stay out of the kernel, where
// dcmesh would see them taken, so an id of ours above zebra's counter could
// later name a different group in zebra. A blackhole object of ours at
// fenceID, made before any other object of ours, keeps zebra's counter
// above every id of ours until it wraps at ZEBRA_NHG_PROTO_LOWER and counts
// up again from 1: some seven million of its nexthop groups later. The
// fence belongs to no table; Purge removes it with the last object of ours.
const (
	idTagBits  = 12
	idSlotBits = 12
	idSlotMask = 1<<idSlotBits - 1
	fenceID    = 1 << (idTagBits + idSlotBits)
	// legacyIDBase is where ids were before: objects of ours there (protocol
	// 220, the table's tag) are deleted once nothing uses them, never reused.
	legacyIDBase = 0x0F000000
)

func idTag(table int) uint32 { return uint32(table%4095) + 1 }

func ownNexthop(nh Nexthop, table int) bool {
	return nh.Protocol == RouteProtocol && nh.ID>>idSlotBits == idTag(table)
}

// legacyNexthop reports an object of ours for table at its former id.
func legacyNexthop(nh Nexthop, table int) bool {
	return nh.Protocol == RouteProtocol && nh.ID&^(fenceID-1) == legacyIDBase && nh.ID>>idSlotBits&(1<<idTagBits-1) == idTag(table)
}

// preferredID is where (kind, name) starts looking for an id in table.
func preferredID(table int, kind, name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return idTag(table)<<idSlotBits | h.Sum32()&idSlotMask
}

// nextID is the next slot with the same base and tag, wrapping around.
func nextID(id uint32) uint32 {
	return id&^idSlotMask | (id+1)&idSlotMask
}

func compareNexthops(a, b Nexthop) int { return cmp.Compare(a.ID, b.ID) }

// isNotSupported reports errors of kernels without a nexthop feature.
func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EAFNOSUPPORT)
}
