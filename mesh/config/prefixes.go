package config

import "net/netip"

// The address-plan rules the configuration's checks, the CA's and the
// agent's share.

// ContainedIn reports whether p lies inside one of set (as long or longer
// than it, and within it).
func ContainedIn(p netip.Prefix, set []netip.Prefix) bool {
	for _, b := range set {
		if b.Bits() <= p.Bits() && b.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// OverlapsAny reports whether p overlaps one of set.
func OverlapsAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, q := range set {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// Host is the single-address prefix of a (/32 or /128).
func Host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
