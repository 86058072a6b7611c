package trust

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// GatewayID names one gateway of a site: the unit that has a certificate,
// an identity key, a WireGuard key and a record. A site with one gateway
// has only gateway 0.
type GatewayID struct {
	Site    string
	Gateway uint8
}

// gatewaySep separates the site name from the gateway index in
// GatewayID.String. Site names are RFC 1123 labels, so a "." can never be
// part of one: "fra1.1" is gateway 1 of fra1 and nothing else, where
// "fra1-1" could be a site of its own. (Not "/": memberlist reads
// "name/address" in join addresses.)
const gatewaySep = "."

// String returns the gateway's node name: the site name for gateway 0
// (what it has always been), "site.N" for gateway N > 0. It is the
// gossip node name, the name in PSKSites, logs and metric labels.
func (g GatewayID) String() string {
	if g.Gateway == 0 {
		return g.Site
	}
	return g.Site + gatewaySep + strconv.Itoa(int(g.Gateway))
}

// ParseGatewayID parses what String returns, and nothing else: a valid
// site name, optionally followed by "." and an index 1 to MaxGateways-1
// without leading zeros ("fra1.0" is spelt "fra1").
func ParseGatewayID(s string) (GatewayID, error) {
	site, idx, hasIndex := strings.Cut(s, gatewaySep)
	if !ValidSiteName(site) {
		return GatewayID{}, fmt.Errorf("invalid site name %q", truncate(site, 64))
	}
	id := GatewayID{Site: site}
	if hasIndex {
		n, err := parseGatewayIndex(idx)
		if err != nil {
			return GatewayID{}, err
		}
		id.Gateway = n
	}
	return id, nil
}

// parseGatewayIndex parses a non-zero gateway index in canonical decimal:
// the one text form of "dcmesh:gateway=N" and of the suffix of a node
// name. Zero is refused because it is never written down (its absence
// means 0), so that every certificate and name has exactly one reading.
func parseGatewayIndex(s string) (uint8, error) {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("gateway index %q is not a decimal number without leading zeros", truncate(s, 16))
	}
	if n == 0 {
		return 0, errors.New("gateway index 0 is written by leaving it out")
	}
	if n >= MaxGateways {
		return 0, fmt.Errorf("gateway index %d, at most %d", n, MaxGateways-1)
	}
	return uint8(n), nil
}

// validNodeName reports whether s is a gateway's node name, as String
// writes it.
func validNodeName(s string) bool {
	_, err := ParseGatewayID(s)
	return err == nil
}

// maxNodeName is the longest node name: a site name of 63 characters, "."
// and one digit (MaxGateways ≤ 10).
const maxNodeName = 63 + len(gatewaySep) + 1
