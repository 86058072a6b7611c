package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ParsePrefix parses a CIDR prefix without host bits; its errors say how to
// write one.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix: write e.g. 10.1.0.0/16 or fd00:1::/48", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// parseAddress accepts an address with or without a prefix length; a bare
// address is a host (/32 or /128).
func parseAddress(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address: write e.g. 10.255.0.1/32", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not ADDRESS/LENGTH: write e.g. 10.255.0.1/32", s)
	}
	return p, nil
}

// ParseGossipAddr parses a gossip address: IP:PORT, no host name.
func ParseGossipAddr(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("required: IP:PORT for gossip, e.g. 192.0.2.10:7946")
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:PORT (host names are not resolved), e.g. 192.0.2.10:7946", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// parseSize reads a byte count: a whole number with an optional unit B,
// KiB, MiB or GiB (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: write a whole number of bytes with an optional unit KiB, MiB or GiB, e.g. 64MiB, or 0 for no limit", s)
	}
	return n * mult, nil
}

func parseKeepalive(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 || d > 65535*time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("%q: use whole seconds from 0s (off) to 65535s, e.g. 25s", s)
	}
	return d, nil
}
