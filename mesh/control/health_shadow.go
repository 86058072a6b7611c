package control

import "fmt"

// shadowHealth is critical for every shadowed prefix: its traffic does not
// enter the tunnel (it leaves in cleartext, or is dropped).
func shadowHealth(peers []PeerStatus) (critical []string) {
	for _, p := range peers {
		name := p.Name()
		if name == "" && len(p.PublicKey) >= 8 {
			name = p.PublicKey[:8]
		}
		for _, s := range p.Shadowed {
			critical = append(critical, fmt.Sprintf("prefix %s of peer %s is shadowed by the route %s: its traffic does not enter the tunnel; filter the remote prefixes out of what the fabric (or whoever installed it) puts in this gateway's table, or delete that route",
				s.Prefix, name, s.Route))
		}
	}
	return critical
}
