package mesh

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// DefaultGossipPort is memberlist's customary port.
const DefaultGossipPort = 7946

// InitOptions describes `dcmesh init`.
type InitOptions struct {
	Bundle     string
	StateDir   string
	Endpoint   string // WireGuard endpoint other sites use, IP:PORT
	ListenPort int
	Interface  string
	GossipAddr string   // IP:PORT; default: the endpoint's IP, port 7946
	Join       []string // gossip seeds
	ConfigPath string   // default StateDir/dcmesh.yaml
	Now        time.Time
}

// InitResult says what InitSite created.
type InitResult struct {
	Site       string
	PublicKey  wg.PublicKey
	ConfigPath string
}

// InitSite turns an enrollment bundle into a ready site: it copies the bundle
// into the state directory, creates the first WireGuard key and writes the
// configuration, checking everything the agent will check at start.
func InitSite(o InitOptions) (*InitResult, error) {
	if o.StateDir == "" {
		return nil, fmt.Errorf("--state-dir is required, e.g. %s", DefaultStateDir)
	}
	stateDir, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, err
	}
	if o.ConfigPath == "" {
		o.ConfigPath = filepath.Join(stateDir, "dcmesh.yaml")
	}
	if o.ConfigPath, err = filepath.Abs(o.ConfigPath); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(o.ConfigPath); err == nil {
		return nil, fmt.Errorf("%s exists: refusing to overwrite a configuration (move it away to start over)", o.ConfigPath)
	}
	ep, err := netip.ParseAddrPort(o.Endpoint)
	if err != nil || ep.Port() == 0 || ep.Addr().IsUnspecified() {
		return nil, fmt.Errorf("--endpoint %q: this site's underlay IP:PORT for WireGuard, e.g. 192.0.2.10:51820 (host names are not resolved)", o.Endpoint)
	}
	if o.ListenPort == 0 {
		o.ListenPort = int(ep.Port())
	}
	if o.Interface == "" {
		o.Interface = DefaultInterface
	}
	if o.GossipAddr == "" {
		o.GossipAddr = netip.AddrPortFrom(ep.Addr(), DefaultGossipPort).String()
	}

	// Read and check the bundle before writing anything.
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(o.Bundle, name))
		if err != nil {
			return nil, fmt.Errorf("--bundle %s: %w (it should hold the files `dcmesh ca issue --out` wrote)", o.Bundle, err)
		}
		return b, nil
	}
	caPEM, err := read(caCertFile)
	if err != nil {
		return nil, err
	}
	cas, err := trust.ParseCAPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %s: %w", caCertFile, err)
	}
	certPEM, err := read(siteCertFile)
	if err != nil {
		return nil, err
	}
	cert, err := trust.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %s: %w", siteCertFile, err)
	}
	if err := cert.Verify(cas, nil, o.Now, DefaultClockSkew); err != nil {
		return nil, fmt.Errorf("--bundle: the site certificate is not usable: %w", err)
	}
	if len(cert.Underlay) > 0 && !coveredBy(netip.PrefixFrom(ep.Addr(), ep.Addr().BitLen()), cert.Underlay) {
		return nil, fmt.Errorf("--endpoint %s is outside the underlay ranges of the certificate (%v): other sites would reject this site's records", ep, cert.Underlay)
	}
	identity, err := wg.ReadSecretFile(filepath.Join(o.Bundle, identityKeyFile), 4096)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %w", err)
	}
	defer clear(identity)
	idKey, err := trust.ParseKeyPEM(identity)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %s: %w", identityKeyFile, err)
	}
	if !idKey.Public().(ed25519.PublicKey).Equal(cert.IdentityKey) {
		return nil, fmt.Errorf("--bundle: %s does not belong to %s (files from different bundles?)", identityKeyFile, siteCertFile)
	}
	gossipKey, err := wg.ReadSecretFile(filepath.Join(o.Bundle, gossipKeyFile), 1024)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %w", err)
	}
	defer clear(gossipKey)
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(gossipKey))); err != nil || len(k) != GossipKeyLen {
		return nil, fmt.Errorf("--bundle: %s is not the base64 32-byte key `dcmesh ca init` writes", gossipKeyFile)
	}
	cluster := strings.TrimPrefix(cas[0].Subject.CommonName, "dcmesh CA ")

	var buf bytes.Buffer
	err = configTemplate.Execute(&buf, map[string]any{
		"Date": o.Now.UTC().Format(time.RFC3339), "Site": cert.Site, "Interface": o.Interface, "ListenPort": o.ListenPort,
		"KeyFile": filepath.Join(stateDir, "wg.key"), "StateDir": stateDir, "Endpoint": ep.String(), "GossipAddr": o.GossipAddr,
		"Join": o.Join, "Cluster": cluster, "Overlay": cert.Overlay.String(), "Prefixes": cert.Prefixes,
	})
	if err != nil {
		return nil, err
	}
	// The agent must accept what we write.
	if _, err := ParseConfig(buf.Bytes(), filepath.Dir(o.ConfigPath)); err != nil {
		return nil, fmt.Errorf("the configuration would be invalid:\n%w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{caCertFile, caPEM, 0o644},
		{siteCertFile, certPEM, 0o644},
		{identityKeyFile, identity, 0o600},
		{gossipKeyFile, gossipKey, 0o600},
	} {
		if err := wg.WriteFileAtomic(filepath.Join(stateDir, f.name), f.data, f.perm); err != nil {
			return nil, err
		}
	}
	wgKeyPath := filepath.Join(stateDir, "wg.key")
	key, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	if err := wg.WritePrivateKeyFile(wgKeyPath, key, false); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(filepath.Dir(o.ConfigPath), 0o755); err != nil {
		return nil, err
	}
	if err := wg.WriteFileAtomic(o.ConfigPath, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	return &InitResult{Site: cert.Site, PublicKey: key.Public(), ConfigPath: o.ConfigPath}, nil
}

var configTemplate = template.Must(template.New("config").Parse(`# dcmesh agent configuration, written by "dcmesh init" on {{.Date}}.
# Annotated reference: examples/dcmesh.yaml. Reload with SIGHUP.
site: {{.Site}}
interface: {{printf "%q" .Interface}}
listen_port: {{.ListenPort}}
private_key_file: {{printf "%q" .KeyFile}}
state_dir: {{printf "%q" .StateDir}}
# From the certificate; the agent refuses anything else.
overlay_address: {{printf "%q" .Overlay}}
local_prefixes:{{range .Prefixes}}
  - {{printf "%q" .String}}{{end}}
# Where other sites send WireGuard traffic.
endpoint: {{printf "%q" .Endpoint}}
gossip:
  address: {{printf "%q" .GossipAddr}}
  cluster: {{printf "%q" .Cluster}}
  join:{{if not .Join}} []{{end}}{{range .Join}}
    - {{printf "%q" .}}{{end}}
`))
