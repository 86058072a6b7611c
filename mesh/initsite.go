package mesh

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
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

// wgKeyFile is the site's WireGuard key in the state directory.
const wgKeyFile = "wg.key"

// siteFiles are the names in a state directory that mean a site lives there:
// what `dcmesh init` writes and what the agent keeps next to it. init refuses
// a state directory that holds any of them.
var siteFiles = []string{
	siteCertFile, identityKeyFile, wgKeyFile, caCertFile, gossipKeyFile, "dcmesh.yaml",
	wgKeyFile + ".next", "rotation.json", "seq.json", "records.json", "psk.json", "known-peers.json", "control.sock",
}

// InitSite turns an enrollment bundle into a ready site: it copies the bundle
// into the state directory, creates the first WireGuard key and writes the
// configuration, checking everything the agent will check at start.
//
// A refusal changes nothing: planInit reads and checks everything — the
// options, the bundle, and that neither the configuration nor any file of a
// site exists yet — and writes nothing. Then write creates the files, each
// whole or not at all and never over an existing one (wg.CreateFileAtomic),
// the configuration last. The configuration is the commit marker: the agent
// reads nothing without it, so a crash midway leaves files no agent starts
// from, and the next init lists them instead of guessing whose they are. (A
// staged directory renamed into place cannot commit everything at once: the
// state directory may exist already — made by a package, or a mount point —
// and --config may be on another filesystem, such as /etc.) A write that
// fails removes what this run created.
func InitSite(o InitOptions) (*InitResult, error) {
	p, err := planInit(o)
	if err != nil {
		return nil, err
	}
	defer p.clear()
	if err := p.write(); err != nil {
		return nil, err
	}
	return &InitResult{Site: p.site, PublicKey: p.key.Public(), ConfigPath: p.configPath}, nil
}

// initPlan is everything InitSite writes, checked and ready.
type initPlan struct {
	stateDir, configPath string
	site                 string
	files                []initFile // copied from the bundle into stateDir
	key                  wg.PrivateKey
	config               []byte
}

type initFile struct {
	name string
	data []byte
	perm os.FileMode
}

func (p *initPlan) clear() {
	for _, f := range p.files {
		clear(f.data)
	}
}

// planInit checks every precondition of InitSite and writes nothing.
func planInit(o InitOptions) (*initPlan, error) {
	if o.StateDir == "" {
		return nil, fmt.Errorf("--state-dir is required, e.g. %s", config.DefaultStateDir)
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
	if err := checkStateDirFree(stateDir); err != nil {
		return nil, err
	}
	if err := checkCanMkdir("--config", filepath.Dir(o.ConfigPath)); err != nil {
		return nil, err
	}
	ep, err := netip.ParseAddrPort(o.Endpoint)
	if err != nil || ep.Port() == 0 || ep.Addr().IsUnspecified() {
		return nil, fmt.Errorf("--endpoint %q: this site's underlay IP:PORT for WireGuard, e.g. 192.0.2.10:51820 (host names are not resolved)", o.Endpoint)
	}
	if o.ListenPort == 0 {
		o.ListenPort = int(ep.Port())
	}
	if o.Interface == "" {
		o.Interface = config.DefaultInterface
	}
	if o.GossipAddr == "" {
		o.GossipAddr = netip.AddrPortFrom(ep.Addr(), DefaultGossipPort).String()
	}
	b, err := readBundle(o.Bundle, ep, o.Now)
	if err != nil {
		return nil, err
	}
	p := &initPlan{stateDir: stateDir, configPath: o.ConfigPath, site: b.cert.Site, files: b.files}
	if p.key, err = wg.GeneratePrivateKey(); err != nil {
		p.clear()
		return nil, err
	}
	var buf bytes.Buffer
	err = configTemplate.Execute(&buf, map[string]any{
		"Date": o.Now.UTC().Format(time.RFC3339), "Site": b.cert.Site, "Interface": o.Interface, "ListenPort": o.ListenPort,
		"KeyFile": filepath.Join(stateDir, wgKeyFile), "StateDir": stateDir, "Endpoint": ep.String(), "GossipAddr": o.GossipAddr,
		"Join": o.Join, "Cluster": b.cluster, "Overlay": b.cert.Overlay.String(), "Prefixes": b.cert.Prefixes,
	})
	if err == nil {
		// The agent must accept what we write.
		if _, perr := config.Parse(buf.Bytes(), filepath.Dir(o.ConfigPath)); perr != nil {
			err = fmt.Errorf("the configuration would be invalid:\n%w", perr)
		}
	}
	if err != nil {
		p.clear()
		return nil, err
	}
	p.config = buf.Bytes()
	return p, nil
}

// initBundle is a checked enrollment bundle.
type initBundle struct {
	cert    *trust.Certificate
	cluster string
	files   []initFile // in the order write creates them
}

// readBundle reads and cross-checks the bundle the way the agent will.
func readBundle(dir string, ep netip.AddrPort, now time.Time) (*initBundle, error) {
	read := func(name string) ([]byte, error) {
		b, err := wg.ReadRegularFile(filepath.Join(dir, name), maxPEMFileSize)
		if err != nil {
			return nil, fmt.Errorf("--bundle %s: %w (it should hold the files `dcmesh ca issue --out` wrote)", dir, err)
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
	if err := cert.Verify(cas, nil, now, config.DefaultClockSkew); err != nil {
		return nil, fmt.Errorf("--bundle: the site certificate is not usable: %w", err)
	}
	if len(cert.Underlay) > 0 && !coveredBy(netip.PrefixFrom(ep.Addr(), ep.Addr().BitLen()), cert.Underlay) {
		return nil, fmt.Errorf("--endpoint %s is outside the underlay ranges of the certificate (%v): other sites would reject this site's records", ep, cert.Underlay)
	}
	identity, gossipKey, err := readBundleSecrets(dir, cert)
	if err != nil {
		return nil, err
	}
	return &initBundle{cert: cert, cluster: strings.TrimPrefix(cas[0].Subject.CommonName, "dcmesh CA "), files: []initFile{
		{caCertFile, caPEM, 0o644},
		{siteCertFile, certPEM, 0o644},
		{identityKeyFile, identity, 0o600},
		{gossipKeyFile, gossipKey, 0o600},
	}}, nil
}

// readBundleSecrets reads the identity key (it must belong to cert) and the
// gossip key of a bundle. The caller clears them.
func readBundleSecrets(dir string, cert *trust.Certificate) (identity, gossipKey []byte, err error) {
	identity, err = wg.ReadSecretFile(filepath.Join(dir, identityKeyFile), maxIdentityKeySize)
	if err != nil {
		return nil, nil, fmt.Errorf("--bundle: %w", err)
	}
	idKey, err := trust.ParseKeyPEM(identity)
	if err != nil {
		clear(identity)
		return nil, nil, fmt.Errorf("--bundle: %s: %w", identityKeyFile, err)
	}
	if !idKey.Public().(ed25519.PublicKey).Equal(cert.IdentityKey) {
		clear(identity)
		return nil, nil, fmt.Errorf("--bundle: %s does not belong to %s (files from different bundles?)", identityKeyFile, siteCertFile)
	}
	gossipKey, err = wg.ReadSecretFile(filepath.Join(dir, gossipKeyFile), maxGossipKeySize)
	if err != nil {
		clear(identity)
		return nil, nil, fmt.Errorf("--bundle: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(gossipKey)))
	clear(k)
	if err != nil || len(k) != GossipKeyLen {
		clear(identity)
		clear(gossipKey)
		return nil, nil, fmt.Errorf("--bundle: %s is not the base64 32-byte key `dcmesh ca init` writes", gossipKeyFile)
	}
	return identity, gossipKey, nil
}

// checkStateDirFree refuses a state directory that already holds a site, or
// that cannot become a directory.
func checkStateDirFree(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return checkCanMkdir("--state-dir", filepath.Dir(dir))
	}
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--state-dir %s exists and is not a directory", dir)
	}
	var found []string
	for _, name := range siteFiles {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			found = append(found, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	if len(found) == 0 {
		return nil
	}
	what := strings.Join(found, ", ")
	if raw, err := wg.ReadRegularFile(filepath.Join(dir, siteCertFile), maxPEMFileSize); err == nil {
		if c, err := trust.ParseCertPEM(raw); err == nil {
			what = strings.Replace(what, siteCertFile, siteCertFile+" for "+c.Site, 1)
		}
	}
	hint := ""
	if !slices.Contains(found, "dcmesh.yaml") {
		// init writes the configuration last.
		hint = " (with no configuration naming them, they are what an interrupted init left)"
	}
	return fmt.Errorf("--state-dir %s already holds a site (%s): refusing to change it; use a new directory, or remove it if no agent uses it%s", dir, what, hint)
}

// checkCanMkdir refuses a directory path whose nearest existing ancestor is
// not a directory, so that write does not fail on it halfway.
func checkCanMkdir(flag, dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		switch {
		case err == nil && st.IsDir():
			return nil
		case err == nil:
			return fmt.Errorf("%s: %s is not a directory", flag, d)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s: %w", flag, err)
		case d == filepath.Dir(d):
			return nil
		}
	}
}

// initStepHook runs before each file write creates; tests make it fail (a
// write error, which write undoes) or panic (a crash: nothing is undone).
var initStepHook = func(step string) error { return nil }

// write creates the planned files, the configuration last. On an error it
// removes what it created and restores the state directory's mode.
func (p *initPlan) write() (err error) {
	var created []string // files and directories, in creation order
	restoreMode := os.FileMode(0)
	defer func() {
		if err == nil {
			return
		}
		for i := len(created) - 1; i >= 0; i-- {
			_ = os.Remove(created[i]) // a directory only if empty
		}
		if restoreMode != 0 {
			_ = os.Chmod(p.stateDir, restoreMode)
		}
	}()
	if st, err := os.Stat(p.stateDir); err == nil {
		restoreMode = st.Mode().Perm()
	}
	dirs, err := mkdirs(p.stateDir, 0o700)
	created = append(created, dirs...)
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	if err := os.Chmod(p.stateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	for _, f := range p.files {
		path := filepath.Join(p.stateDir, f.name)
		if err := initStepHook(f.name); err != nil {
			return err
		}
		if err := wg.CreateFileAtomic(path, f.data, f.perm); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
		created = append(created, path)
	}
	if err := initStepHook(wgKeyFile); err != nil {
		return err
	}
	keyPath := filepath.Join(p.stateDir, wgKeyFile)
	if err := wg.WritePrivateKeyFile(keyPath, p.key, false); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	created = append(created, keyPath)
	dirs, err = mkdirs(filepath.Dir(p.configPath), 0o755)
	created = append(created, dirs...)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if err := initStepHook("config"); err != nil {
		return err
	}
	if err := wg.CreateFileAtomic(p.configPath, p.config, 0o600); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	return nil
}

// mkdirs is os.MkdirAll that returns the directories it created, outermost
// first, and makes each creation durable (fsync of the parent).
func mkdirs(dir string, perm os.FileMode) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], perm); err != nil {
			return created, err
		}
		created = append(created, missing[i])
		if err := wg.SyncDir(filepath.Dir(missing[i])); err != nil {
			return created, err
		}
	}
	return created, nil
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
