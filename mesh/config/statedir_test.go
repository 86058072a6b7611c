package config

import (
	"slices"
	"testing"
)

func TestStateDirNamesEveryFile(t *testing.T) {
	d := StateDir("/var/lib/dcmesh")
	for got, want := range map[string]string{
		d.ControlSocket(): "/var/lib/dcmesh/control.sock", d.Records(): "/var/lib/dcmesh/records.json",
		d.Seq(): "/var/lib/dcmesh/seq.json", d.PSK(): "/var/lib/dcmesh/psk.json", d.Rotation(): "/var/lib/dcmesh/rotation.json",
		d.KnownPeers(): "/var/lib/dcmesh/known-peers.json", d.WGKey(): "/var/lib/dcmesh/wg.key", d.Config(): "/var/lib/dcmesh/dcmesh.yaml",
		d.File("/etc/dcmesh/ca.crt"): "/etc/dcmesh/ca.crt",
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
	seen := map[string]bool{}
	for _, f := range SiteFiles {
		if seen[f] {
			t.Errorf("%s twice in SiteFiles", f)
		}
		seen[f] = true
	}
	for _, f := range []string{CACertFile, SiteCertFile, IdentityKeyFile, GossipKeyFile, WGKeyFile, ConfigFile, ControlSocketFile,
		RecordsFile, SeqFile, PSKFile, RotationFile, KnownPeersFile} {
		if !slices.Contains(SiteFiles, f) {
			t.Errorf("SiteFiles lacks %s: init would not see a site whose directory holds only it", f)
		}
	}
}
