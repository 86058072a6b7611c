package netconfig

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The bodies (after struct nlmsghdr) of the RTM_*NEXTHOP messages and of
// routes with RTA_NH_ID, which vishvananda/netlink v1.3 lacks. Encoding and
// decoding are pure functions, tested against each other and, in the
// namespace tests, against the kernel and iproute2.

// Attribute numbers from <linux/nexthop.h> and <linux/rtnetlink.h> that
// x/sys/unix does not name.
const (
	nhaResGroup              = 12
	nhaResGroupBuckets       = 1
	nhaResGroupIdleTimer     = 2
	nhaResGroupUnbalancedTmr = 3
	nexthopGrpTypeMpath      = 0
	nexthopGrpTypeRes        = 1
	rtaNhID                  = 30
	nlaFNested               = 0x8000
	nlaTypeMask              = 0x3fff
	userHZ                   = 100 // clock_t units of the resilient timers
)

var ne = binary.NativeEndian

// attrs builds a list of netlink attributes.
type attrs []byte

func (a attrs) add(typ uint16, data []byte) attrs {
	var hdr [4]byte
	ne.PutUint16(hdr[0:], uint16(4+len(data)))
	ne.PutUint16(hdr[2:], typ)
	a = append(append(a, hdr[:]...), data...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

func (a attrs) u16(typ uint16, v uint16) attrs { return a.add(typ, ne.AppendUint16(nil, v)) }
func (a attrs) u32(typ uint16, v uint32) attrs { return a.add(typ, ne.AppendUint32(nil, v)) }

// parseAttrs splits a list of attributes by type (flags masked off); the
// last of a repeated type wins.
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	out := map[uint16][]byte{}
	for len(b) >= 4 {
		l := int(ne.Uint16(b[0:]))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("netlink attribute of length %d in %d bytes", l, len(b))
		}
		out[ne.Uint16(b[2:])&nlaTypeMask] = b[4:l]
		l = (l + 3) &^ 3
		if l > len(b) {
			l = len(b)
		}
		b = b[l:]
	}
	return out, nil
}

// encodeNexthop renders nh as the body of RTM_NEWNEXTHOP.
func encodeNexthop(nh Nexthop) []byte {
	msg := make([]byte, unix.SizeofNhmsg)
	if !nh.IsGroup() {
		msg[0] = byte(nh.Family) // groups have none
	}
	msg[2] = byte(nh.Protocol)
	a := attrs(msg).u32(unix.NHA_ID, nh.ID)
	switch {
	case nh.IsGroup():
		var grp []byte
		for _, m := range nh.Members {
			e := make([]byte, unix.SizeofNexthopGrp)
			ne.PutUint32(e, m.ID)
			e[4] = byte(m.Weight - 1) // the kernel stores weight-1
			e[5] = byte((m.Weight - 1) >> 8)
			grp = append(grp, e...)
		}
		a = a.add(unix.NHA_GROUP, grp)
		if nh.Resilient {
			a = a.u16(unix.NHA_GROUP_TYPE, nexthopGrpTypeRes)
			res := attrs(nil).u16(nhaResGroupBuckets, resilientBuckets).
				u32(nhaResGroupIdleTimer, resilientIdleTimer*userHZ).
				u32(nhaResGroupUnbalancedTmr, resilientUnbalancedTimer*userHZ)
			a = a.add(nhaResGroup|nlaFNested, res)
		} else {
			a = a.u16(unix.NHA_GROUP_TYPE, nexthopGrpTypeMpath)
		}
	case nh.Blackhole:
		a = a.add(unix.NHA_BLACKHOLE, nil)
	default:
		a = a.u32(unix.NHA_OIF, uint32(nh.Link))
		if nh.Gateway.IsValid() {
			a = a.add(unix.NHA_GATEWAY, nh.Gateway.AsSlice())
		}
	}
	return a
}

// encodeNexthopID is the body of RTM_DELNEXTHOP.
func encodeNexthopID(id uint32) []byte {
	return attrs(make([]byte, unix.SizeofNhmsg)).u32(unix.NHA_ID, id)
}

// decodeNexthop parses the body of RTM_NEWNEXTHOP.
func decodeNexthop(b []byte) (Nexthop, error) {
	if len(b) < unix.SizeofNhmsg {
		return Nexthop{}, fmt.Errorf("nexthop message of %d bytes", len(b))
	}
	nh := Nexthop{Family: int(b[0]), Protocol: netlink.RouteProtocol(b[2])}
	at, err := parseAttrs(b[unix.SizeofNhmsg:])
	if err != nil {
		return nh, err
	}
	if v := at[unix.NHA_ID]; len(v) == 4 {
		nh.ID = ne.Uint32(v)
	}
	if v := at[unix.NHA_OIF]; len(v) == 4 {
		nh.Link = int(ne.Uint32(v))
	}
	if v, ok := at[unix.NHA_GATEWAY]; ok {
		nh.Gateway, _ = netip.AddrFromSlice(v)
	}
	_, nh.Blackhole = at[unix.NHA_BLACKHOLE]
	grp := at[unix.NHA_GROUP]
	for len(grp) >= unix.SizeofNexthopGrp {
		w := int(grp[5])<<8 | int(grp[4])
		nh.Members = append(nh.Members, NexthopMember{ID: ne.Uint32(grp), Weight: w + 1})
		grp = grp[unix.SizeofNexthopGrp:]
	}
	slices.SortFunc(nh.Members, func(a, b NexthopMember) int { return cmp.Compare(a.ID, b.ID) })
	if v := at[unix.NHA_GROUP_TYPE]; len(v) == 2 && ne.Uint16(v) == nexthopGrpTypeRes {
		nh.Resilient = true
	}
	return nh, nil
}

// encodeNexthopRoute renders r as the body of RTM_NEWROUTE: a unicast
// route of link scope (as the routes through one link) whose nexthop is an
// object.
func encodeNexthopRoute(r NexthopRoute) []byte {
	msg := make([]byte, unix.SizeofRtMsg)
	msg[0] = byte(family(r.Dst.Addr()))
	msg[1] = byte(r.Dst.Bits())
	if r.Table < 256 {
		msg[4] = byte(r.Table)
	}
	msg[5] = byte(r.Protocol)
	msg[6] = unix.RT_SCOPE_LINK
	msg[7] = unix.RTN_UNICAST
	a := attrs(msg)
	if r.Dst.Bits() > 0 {
		a = a.add(unix.RTA_DST, r.Dst.Masked().Addr().AsSlice())
	}
	return a.u32(unix.RTA_TABLE, uint32(r.Table)).
		u32(unix.RTA_PRIORITY, uint32(r.Metric)).
		u32(rtaNhID, r.Nexthop)
}

// decodeNexthopRoute parses the body of RTM_NEWROUTE; ok is false for
// routes without a nexthop object, cached clones, and families other than
// IPv4 and IPv6.
func decodeNexthopRoute(b []byte) (r NexthopRoute, ok bool, err error) {
	if len(b) < unix.SizeofRtMsg {
		return r, false, fmt.Errorf("route message of %d bytes", len(b))
	}
	fam, bits := b[0], int(b[1])
	flags := ne.Uint32(b[8:])
	if (fam != unix.AF_INET && fam != unix.AF_INET6) || flags&unix.RTM_F_CLONED != 0 {
		return r, false, nil
	}
	at, err := parseAttrs(b[unix.SizeofRtMsg:])
	if err != nil {
		return r, false, err
	}
	v, has := at[rtaNhID]
	if !has || len(v) != 4 {
		return r, false, nil
	}
	r.Nexthop = ne.Uint32(v)
	r.Protocol = netlink.RouteProtocol(b[5])
	r.Table = int(b[4])
	if t := at[unix.RTA_TABLE]; len(t) == 4 {
		r.Table = int(ne.Uint32(t))
	}
	if p := at[unix.RTA_PRIORITY]; len(p) == 4 {
		r.Metric = int(ne.Uint32(p))
	}
	addr := netip.IPv4Unspecified()
	if fam == unix.AF_INET6 {
		addr = netip.IPv6Unspecified()
	}
	if d, has := at[unix.RTA_DST]; has {
		a, good := netip.AddrFromSlice(d)
		if !good {
			return r, false, fmt.Errorf("route destination of %d bytes", len(d))
		}
		addr = a
	}
	r.Dst = netip.PrefixFrom(addr, bits)
	return r, true, nil
}
