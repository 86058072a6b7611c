package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// writeStatusTable renders a status as `dcmesh status` prints it: a few
// lines about the site, then one row per peer.
func writeStatusTable(w io.Writer, st control.Status, now time.Time) error {
	var b strings.Builder
	writeStatusSummary(&b, st, now)
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSTATE\tHANDSHAKE\tRX\tTX\tENDPOINT\tROUTES\tGOSSIP\tKEY\tALLOWED IPS")
	for _, p := range st.Peers {
		fmt.Fprintln(tw, strings.Join(peerRow(p), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeUplinksAndShadows(&b, st.Peers)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeStatusSummary writes the lines above the peer table.
func writeStatusSummary(b *strings.Builder, st control.Status, now time.Time) {
	fmt.Fprintf(b, "site %s: interface %s (%s WireGuard), port %d, key %s\n", st.Site, st.Interface, st.Backend, st.ListenPort, st.PublicKey)
	k := st.Key
	fmt.Fprintf(b, "key: epoch %d, %s old", k.Epoch, roundAge(time.Duration(k.AgeSeconds)*time.Second))
	if k.NextRotation != nil {
		fmt.Fprintf(b, ", next rotation in %s", roundAge(k.NextRotation.Sub(now)))
	}
	fmt.Fprintf(b, ", rotation %s", k.RotationPhase)
	if k.LastResult != "" {
		fmt.Fprintf(b, " (last: %s)", k.LastResult)
	}
	b.WriteString("\n")
	if st.Gossip.Enabled {
		var parts []string
		for _, s := range control.MemberStates {
			if n := st.Gossip.MembersByState[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, s))
			}
		}
		fmt.Fprintf(b, "gossip: %s members\n", strings.Join(parts, ", "))
		writeGossipKey(b, st.Gossip.Key)
	} else {
		b.WriteString("gossip: off (static peers only)\n")
	}
	fmt.Fprintf(b, "routes (table %d): %d/%d tunnel, %d/%d fail-closed programmed\n",
		st.Routes.Table, st.Routes.Programmed, st.Routes.Desired, st.Routes.FailClosedProgrammed, st.Routes.FailClosedDesired)
	if len(st.RecordsRejected) > 0 {
		var parts []string
		for r, n := range st.RecordsRejected {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(b, "records rejected: %s\n", strings.Join(parts, ", "))
	}
	for _, p := range st.StateDir.Problems {
		fmt.Fprintf(b, "state directory: %s\n", p)
	}
	if d := st.Drain; d.Drained && d.Since != nil {
		fmt.Fprintf(b, "drained for maintenance since %s (%s): tunnel routes at routes.metric-1; dcmesh undrain returns it to service\n",
			d.Since.UTC().Format(time.RFC3339), roundAge(now.Sub(*d.Since)))
	}
	writeTrustSummary(b, st.Trust)
}

// peerRow is one peer's cells in the table's column order.
func peerRow(p control.PeerStatus) []string {
	name := p.Name()
	if name == "" {
		name = "(unknown)"
	}
	if p.Role == control.RoleNext {
		name += " (next key)"
	}
	if p.Draining {
		name += " (draining)"
	}
	if p.InGroup != nil && !*p.InGroup {
		name += " (not in group)" // a gateway of a multi-gateway site that carries nothing new
	}
	hs := "never"
	if p.HandshakeAgeSeconds != nil {
		hs = roundAge(time.Duration(*p.HandshakeAgeSeconds)*time.Second) + " ago"
	}
	routes := "ok"
	if !p.RoutesProgrammed {
		routes = "MISSING"
	}
	if len(p.AllowedIPs) == 0 {
		routes = "-"
	}
	ep := p.Endpoint
	if ep == "" {
		ep = "-"
	}
	key := p.PublicKey
	if len(key) > 8 {
		key = key[:8] + "…"
	}
	return []string{name, string(p.State), hs, bytesIEC(p.RxBytes), bytesIEC(p.TxBytes), ep, routes, string(p.GossipState), key, strings.Join(p.AllowedIPs, ", ")}
}

// roundAge shows a duration to the second under an hour, to the minute
// above.
func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
