package enroll

import (
	"bytes"
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

// InitOptions describes `dcmesh init`. Errors about them are
// *config.OptionError naming the field.
type InitOptions struct {
	Bundle   string         // the bundle directory `dcmesh ca issue` wrote
	StateDir string         // created 0700 if missing; must not hold a site
	Endpoint netip.AddrPort // WireGuard endpoint other sites use (one uplink)
	// Endpoints are several uplinks' endpoints, the preferred first; when
	// set, Endpoint is Endpoints[0] or unset. The configuration gets
	// `endpoints:` with several, `endpoint:` with one.
	Endpoints  []netip.AddrPort
	ListenPort int            // default: the endpoint's port
	Interface  string         // default config.DefaultInterface
	GossipAddr netip.AddrPort // default: the endpoint's IP, port 7946
	Join       []netip.AddrPort
	ConfigPath string // default StateDir/dcmesh.yaml
	Now        time.Time
}

// InitResult says what InitSite created.
type InitResult struct {
	Site       string
	Gateway    uint8 // the certificate's gateway index
	PublicKey  wg.PublicKey
	ConfigPath string
	Endpoints  []netip.AddrPort // as configured, the preferred first
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
// and the configuration may be on another filesystem, such as /etc.) A write
// that fails removes what this run created.
func InitSite(o InitOptions) (*InitResult, error) {
	p, err := planInit(o)
	if err != nil {
		return nil, err
	}
	defer p.clear()
	if err := p.write(); err != nil {
		return nil, err
	}
	return &InitResult{Site: p.site, Gateway: p.gateway, PublicKey: p.key.Public(), ConfigPath: p.configPath, Endpoints: p.endpoints}, nil
}

// initPlan is everything InitSite writes, checked and ready.
type initPlan struct {
	stateDir   config.StateDir
	configPath string
	site       string
	gateway    uint8
	files      []initFile // copied from the bundle into stateDir
	key        wg.PrivateKey
	config     []byte
	endpoints  []netip.AddrPort
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
	stateDir, err := o.checkPaths()
	if err != nil {
		return nil, err
	}
	eps, err := o.uplinks()
	if err != nil {
		return nil, err
	}
	ep := eps[0]
	if o.ListenPort == 0 {
		o.ListenPort = int(ep.Port())
	}
	if o.Interface == "" {
		o.Interface = config.DefaultInterface
	}
	if !o.GossipAddr.IsValid() {
		o.GossipAddr = netip.AddrPortFrom(ep.Addr(), DefaultGossipPort)
	}
	b, err := readBundle(o.Bundle, eps, o.GossipAddr, o.Now)
	if err != nil {
		return nil, err
	}
	p := &initPlan{stateDir: stateDir, configPath: o.ConfigPath, site: b.cert.Site, gateway: b.cert.Gateway, files: b.files, endpoints: eps}
	if p.key, err = wg.GeneratePrivateKey(); err != nil {
		p.clear()
		return nil, err
	}
	var buf bytes.Buffer
	err = configTemplate.Execute(&buf, map[string]any{
		"Date": o.Now.UTC().Format(time.RFC3339), "Site": b.cert.Site, "Interface": o.Interface, "ListenPort": o.ListenPort,
		"KeyFile": stateDir.WGKey(), "StateDir": string(stateDir), "Endpoints": endpointStrings(eps), "GossipAddr": o.GossipAddr.String(),
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

// checkPaths makes the state directory and the configuration's path
// absolute (filling in the default configuration path) and refuses them if
// they hold a site or a configuration, or cannot become directories.
func (o *InitOptions) checkPaths() (config.StateDir, error) {
	if o.StateDir == "" {
		return "", config.Optionf("StateDir", " is required, e.g. %s", config.DefaultStateDir)
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return "", err
	}
	stateDir := config.StateDir(abs)
	if o.ConfigPath == "" {
		o.ConfigPath = stateDir.Config()
	}
	if o.ConfigPath, err = filepath.Abs(o.ConfigPath); err != nil {
		return "", err
	}
	if _, err := os.Lstat(o.ConfigPath); err == nil {
		return "", fmt.Errorf("%s exists: refusing to overwrite a configuration (move it away to start over)", o.ConfigPath)
	}
	if err := checkStateDirFree(stateDir); err != nil {
		return "", err
	}
	if err := checkCanMkdir("ConfigPath", filepath.Dir(o.ConfigPath)); err != nil {
		return "", err
	}
	return stateDir, nil
}

// initBundle is a checked enrollment bundle.
type initBundle struct {
	cert    *trust.Certificate
	cluster string
	files   []initFile // in the order write creates them
}

// readBundle reads and cross-checks the bundle the way the agent will.
// The endpoint and the gossip address must be inside the certificate's
// underlay ranges, as the runbook promises: other sites reject records with
// an endpoint elsewhere, and a gossip address elsewhere is a typo or a
// different network.
func readBundle(dir string, eps []netip.AddrPort, gossipAddr netip.AddrPort, now time.Time) (*initBundle, error) {
	bad := func(err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return config.Optionf("Bundle", " %s: %w (it should hold the files `dcmesh ca issue --out` wrote)", dir, err)
		}
		return config.Optionf("Bundle", ": %w", err)
	}
	e, c, err := Read(BundleFiles(dir), now, config.DefaultClockSkew)
	if err != nil {
		return nil, bad(err)
	}
	clear(e.GossipKey)
	if err := checkUplinks(eps, e.Cert.Underlay); err != nil {
		c.Clear()
		return nil, err
	}
	if len(e.Cert.Underlay) > 0 && !config.ContainedIn(config.Host(gossipAddr.Addr()), e.Cert.Underlay) {
		c.Clear()
		return nil, config.Optionf("GossipAddr", " %s is outside the underlay ranges of the certificate (%s): give an address in them (default: the endpoint's IP, port %d)", gossipAddr, joinPrefixes(e.Cert.Underlay), DefaultGossipPort)
	}
	return &initBundle{cert: e.Cert, cluster: ClusterName(e.CAs[0]), files: []initFile{
		{config.CACertFile, c.CA, 0o644},
		{config.SiteCertFile, c.Cert, 0o644},
		{config.IdentityKeyFile, c.Identity, 0o600},
		{config.GossipKeyFile, c.GossipKey, 0o600},
	}}, nil
}

// checkStateDirFree refuses a state directory that already holds a site, or
// that cannot become a directory.
func checkStateDirFree(dir config.StateDir) error {
	st, err := os.Stat(string(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return checkCanMkdir("StateDir", filepath.Dir(string(dir)))
	}
	if err != nil {
		return config.Optionf("StateDir", ": %w", err)
	}
	if !st.IsDir() {
		return config.Optionf("StateDir", " %s exists and is not a directory", dir)
	}
	var found []string
	for _, name := range config.SiteFiles {
		_, err := os.Lstat(dir.File(name))
		if err == nil {
			found = append(found, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return config.Optionf("StateDir", ": %w", err)
		}
	}
	if len(found) == 0 {
		return nil
	}
	what := strings.Join(found, ", ")
	if raw, err := wg.ReadRegularFile(dir.File(config.SiteCertFile), MaxPEMFileSize); err == nil {
		if c, err := trust.ParseCertPEM(raw); err == nil {
			what = strings.Replace(what, config.SiteCertFile, config.SiteCertFile+" for "+c.Site, 1)
		}
	}
	hint := ""
	if !slices.Contains(found, config.ConfigFile) {
		// init writes the configuration last.
		hint = " (with no configuration naming them, they are what an interrupted init left)"
	}
	return config.Optionf("StateDir", " %s already holds a site (%s): refusing to change it; use a new directory, or remove it if no agent uses it%s", dir, what, hint)
}

// checkCanMkdir refuses a directory path whose nearest existing ancestor is
// not a directory, so that write does not fail on it halfway.
func checkCanMkdir(option, dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		switch {
		case err == nil && st.IsDir():
			return nil
		case err == nil:
			return config.Optionf(option, ": %s is not a directory", d)
		case !errors.Is(err, fs.ErrNotExist):
			return config.Optionf(option, ": %w", err)
		case d == filepath.Dir(d):
			return nil
		}
	}
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
# Where other sites send WireGuard traffic{{if gt (len .Endpoints) 1}}: one per uplink, the preferred first{{end}}.
{{if eq (len .Endpoints) 1}}endpoint: {{printf "%q" (index .Endpoints 0)}}
{{else}}endpoints:{{range .Endpoints}}
  - {{printf "%q" .}}{{end}}
{{end}}gossip:
  address: {{printf "%q" .GossipAddr}}
  cluster: {{printf "%q" .Cluster}}
  join:{{if not .Join}} []{{end}}{{range .Join}}
    - {{printf "%q" .String}}{{end}}
`))

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
