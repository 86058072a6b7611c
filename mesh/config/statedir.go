package config

import "path/filepath"

// StateDir is a site's state directory (state_dir). Every file dcmesh keeps
// there is named here, once: the enrollment bundle as `dcmesh init` copies
// it (and as the trust and gossip settings default to it), the WireGuard key
// and configuration init writes, and what the agent writes while it runs.
type StateDir string

// The enrollment bundle: what `dcmesh ca issue` writes into a bundle
// directory, and `dcmesh init` copies into the state directory under the
// same names.
const (
	CACertFile      = "ca.crt"       // the pinned CA certificate(s), PEM
	SiteCertFile    = "site.crt"     // this site's certificate, PEM
	IdentityKeyFile = "identity.key" // its Ed25519 identity key, PKCS#8 PEM, 0600
	GossipKeyFile   = "gossip.key"   // the cluster's gossip key, base64, 0600
)

// What `dcmesh init` writes besides the bundle.
const (
	WGKeyFile  = "wg.key"      // the first WireGuard private key, 0600
	ConfigFile = "dcmesh.yaml" // the configuration (unless --config says elsewhere)
)

// What the agent keeps while it runs.
const (
	ControlSocketFile = "control.sock"     // the local API (mesh/control), 0600
	RecordsFile       = "records.json"     // site records learnt, replay protection, revocation list
	SeqFile           = "seq.json"         // the sequence number of this site's own record
	PSKFile           = "psk.json"         // pre-shared keys (rotation.psk)
	RotationFile      = "rotation.json"    // the key rotation's phase (wg.KeyStore)
	KnownPeersFile    = "known-peers.json" // gossip members to rejoin after a restart
	GossipKeyState    = "gossip-key.json"  // the last gossip-key bundle installed (sealed) and its phase, 0600
	DrainFile         = "drain.json"       // present while the gateway is drained (dcmesh drain), so a restart stays drained
	// NextKeySuffix names the next WireGuard key during a rotation, next to
	// the current one (wg.KeyStore).
	NextKeySuffix = ".next"
)

// SiteFiles are the names in a state directory that mean a site lives there:
// what `dcmesh init` writes and what the agent keeps next to it.
var SiteFiles = []string{
	SiteCertFile, IdentityKeyFile, WGKeyFile, CACertFile, GossipKeyFile, ConfigFile,
	WGKeyFile + NextKeySuffix, RotationFile, SeqFile, RecordsFile, PSKFile, KnownPeersFile, ControlSocketFile, GossipKeyState, DrainFile,
}

// File is the path of name in the state directory (an absolute name stays
// as it is).
func (d StateDir) File(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(string(d), name)
}

func (d StateDir) ControlSocket() string { return d.File(ControlSocketFile) }
func (d StateDir) Records() string       { return d.File(RecordsFile) }
func (d StateDir) Seq() string           { return d.File(SeqFile) }
func (d StateDir) PSK() string           { return d.File(PSKFile) }
func (d StateDir) Rotation() string      { return d.File(RotationFile) }
func (d StateDir) KnownPeers() string    { return d.File(KnownPeersFile) }
func (d StateDir) GossipKey() string     { return d.File(GossipKeyState) }
func (d StateDir) WGKey() string         { return d.File(WGKeyFile) }
func (d StateDir) Config() string        { return d.File(ConfigFile) }
func (d StateDir) Drain() string         { return d.File(DrainFile) }
