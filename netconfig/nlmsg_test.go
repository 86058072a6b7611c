package netconfig

import (
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel's side of these messages is checked in the namespace tests
// (iproute2 reads back what Handle wrote); these pin the encoding rules and
// the parser's tolerance of input it did not write.
func TestNexthopMessagesRoundTrip(t *testing.T) {
	for _, nh := range []Nexthop{
		{ID: 1<<20 | 5, Protocol: RouteProtocol, Family: unix.AF_INET6, Link: 7},
		{ID: 9, Protocol: 11, Family: unix.AF_INET, Link: 3, Gateway: netip.MustParseAddr("192.0.2.1")},
		{ID: 10, Protocol: RouteProtocol, Family: unix.AF_INET6, Blackhole: true},
		{ID: 11, Protocol: RouteProtocol, Members: []NexthopMember{{ID: 1, Weight: 1}, {ID: 2, Weight: 256}, {ID: 3, Weight: 17}}, Resilient: true},
		{ID: 12, Protocol: RouteProtocol, Members: []NexthopMember{{ID: 1, Weight: 2}}},
	} {
		got, err := decodeNexthop(encodeNexthop(nh))
		if err != nil || !reflect.DeepEqual(got, nh) {
			t.Errorf("round trip of %s: %+v, %v", nh, got, err)
		}
	}
}

func TestNexthopGroupEncoding(t *testing.T) {
	b := encodeNexthop(Nexthop{ID: 11, Protocol: RouteProtocol, Members: []NexthopMember{{ID: 1, Weight: 256}}, Resilient: true})
	if b[0] != unix.AF_UNSPEC || b[2] != byte(RouteProtocol) {
		t.Fatalf("nhmsg %v: a group has no family, and our protocol", b[:8])
	}
	at, err := parseAttrs(b[unix.SizeofNhmsg:])
	if err != nil {
		t.Fatal(err)
	}
	if grp := at[unix.NHA_GROUP]; len(grp) != 8 || grp[4] != 255 {
		t.Errorf("NHA_GROUP %v: the kernel wants weight-1", grp)
	}
	// The kernel parses NHA_RES_GROUP strictly: it must carry NLA_F_NESTED.
	raw := b[unix.SizeofNhmsg:]
	found := false
	for len(raw) >= 4 {
		l, typ := int(ne.Uint16(raw)), ne.Uint16(raw[2:])
		if typ&nlaTypeMask == nhaResGroup {
			found = typ&nlaFNested != 0
			res, _ := parseAttrs(raw[4:l])
			if ne.Uint16(res[nhaResGroupBuckets]) != resilientBuckets || ne.Uint32(res[nhaResGroupIdleTimer]) != resilientIdleTimer*userHZ {
				t.Errorf("resilient attributes %v", res)
			}
		}
		raw = raw[(l+3)&^3:]
	}
	if !found {
		t.Error("NHA_RES_GROUP missing or without NLA_F_NESTED")
	}
}

func TestNexthopRouteMessagesRoundTrip(t *testing.T) {
	for _, r := range []NexthopRoute{
		{Dst: netip.MustParsePrefix("10.2.0.0/16"), Table: 254, Metric: 100, Protocol: RouteProtocol, Nexthop: 5},
		{Dst: netip.MustParsePrefix("fd00:2::/48"), Table: 1234, Metric: 100, Protocol: RouteProtocol, Nexthop: 6},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Table: 7, Metric: 0, Protocol: 11, Nexthop: 7},
	} {
		got, ok, err := decodeNexthopRoute(encodeNexthopRoute(r))
		if err != nil || !ok || got != r {
			t.Errorf("round trip of %+v: %+v %v %v", r, got, ok, err)
		}
	}
	// A route without a nexthop object, and a cached clone, are not ours to list.
	plain := encodeNexthopRoute(NexthopRoute{Dst: netip.MustParsePrefix("10.2.0.0/16"), Table: 254, Nexthop: 5})
	plain = plain[:len(plain)-8] // drop RTA_NH_ID
	if _, ok, err := decodeNexthopRoute(plain); ok || err != nil {
		t.Errorf("route without RTA_NH_ID: ok=%v err=%v", ok, err)
	}
	clone := encodeNexthopRoute(NexthopRoute{Dst: netip.MustParsePrefix("10.2.0.0/16"), Table: 254, Nexthop: 5})
	ne.PutUint32(clone[8:], unix.RTM_F_CLONED)
	if _, ok, _ := decodeNexthopRoute(clone); ok {
		t.Error("cached clone listed")
	}
}

func TestNexthopMessagesRejectGarbage(t *testing.T) {
	good := encodeNexthop(Nexthop{ID: 1, Protocol: RouteProtocol, Family: unix.AF_INET6, Link: 2})
	bad := append([]byte{}, good...)
	ne.PutUint16(bad[unix.SizeofNhmsg:], 200) // attribute longer than the message
	for name, b := range map[string][]byte{"short": good[:3], "overlong attribute": bad} {
		if _, err := decodeNexthop(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := decodeNexthopRoute([]byte{1, 2}); err == nil {
		t.Error("short route: no error")
	}
}

// zebraProtoLower is FRR's ZEBRA_NHG_PROTO_LOWER in 8.0-9.1 (the lowest of
// any release): zebra never re-checks the nexthops of a route over an
// object at this id or above (see fenceID).
const zebraProtoLower = 24193548

func TestNexthopIDs(t *testing.T) {
	tag := func(id uint32) uint32 { return id >> idSlotBits & (1<<idTagBits - 1) }
	if id := preferredID(MainTable, "group", "par1"); tag(id) != 255 || id >= fenceID {
		t.Errorf("main table id %#x: tag %d, want 255, below the fence %#x", id, tag(id), fenceID)
	}
	if top := preferredID(4094, "group", "x") | idSlotMask; top >= fenceID || fenceID >= zebraProtoLower {
		t.Errorf("highest id %#x, fence %#x: want both below zebra's ZEBRA_NHG_PROTO_LOWER %d", top, fenceID, zebraProtoLower)
	}
	if a, b := preferredID(100, "group", "par1"), preferredID(101, "group", "par1"); tag(a) == tag(b) {
		t.Errorf("tables 100 and 101 share a tag")
	}
	base := uint32(7 << idSlotBits)
	last := base | idSlotMask
	if next := nextID(last); next != base {
		t.Errorf("nextID wraps to %#x, want %#x (same tag)", next, base)
	}
	taken := map[uint32]bool{last: true, base: true}
	if got := freeID(last, taken); got != base|1 {
		t.Errorf("freeID = %d", got)
	}
	if !ownNexthop(Nexthop{ID: preferredID(1234, "link", "dcm0"), Protocol: RouteProtocol}, 1234) ||
		ownNexthop(Nexthop{ID: preferredID(1234, "link", "dcm0"), Protocol: 11}, 1234) ||
		ownNexthop(Nexthop{ID: preferredID(1235, "link", "dcm0"), Protocol: RouteProtocol}, 1234) ||
		ownNexthop(Nexthop{ID: fenceID, Protocol: RouteProtocol}, 0) {
		t.Error("ownership is protocol 220 and the table's tag; the fence is no table's")
	}
	legacy := Nexthop{ID: legacyIDBase | preferredID(1234, "link", "dcm0"), Protocol: RouteProtocol}
	if ownNexthop(legacy, 1234) || !legacyNexthop(legacy, 1234) || legacyNexthop(legacy, 1235) || legacyNexthop(Nexthop{ID: legacy.ID, Protocol: 11}, 1234) {
		t.Error("a former id of ours (0x0F000000 block) is legacy, for its table only, and never ours to reuse")
	}
}
