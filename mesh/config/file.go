package config

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The file format. Everything that needs parsing is a string here so that
// errors can name the field and quote the value.
type fileConfig struct {
	Site                string        `yaml:"site"`
	Interface           string        `yaml:"interface"`
	ListenPort          *int          `yaml:"listen_port"`
	PrivateKeyFile      string        `yaml:"private_key_file"`
	OverlayAddress      string        `yaml:"overlay_address"`
	LocalPrefixes       []string      `yaml:"local_prefixes"`
	MTU                 int           `yaml:"mtu"`
	WireGuard           string        `yaml:"wireguard"`
	PersistentKeepalive string        `yaml:"persistent_keepalive"`
	ResyncInterval      string        `yaml:"resync_interval"`
	Routes              fileRoutes    `yaml:"routes"`
	Peers               []filePeer    `yaml:"peers"`
	StateDir            string        `yaml:"state_dir"`
	Endpoint            string        `yaml:"endpoint"`
	Endpoints           []string      `yaml:"endpoints"`
	Gossip              *fileGossip   `yaml:"gossip"`
	Trust               fileTrust     `yaml:"trust"`
	Rotation            fileRotation  `yaml:"rotation"`
	Userspace           fileUserspace `yaml:"userspace"`
	Health              fileHealth    `yaml:"health"`
	MetricsAddr         string        `yaml:"metrics_addr"`
	GatewayWeight       *int          `yaml:"gateway_weight"`
}

type fileUserspace struct {
	BuffersPerPool *int   `yaml:"buffers_per_pool"`
	MemoryLimit    string `yaml:"memory_limit"`
}

type fileRotation struct {
	Interval        string `yaml:"interval"`
	AckTimeout      string `yaml:"ack_timeout"`
	CompleteTimeout string `yaml:"complete_timeout"`
	PSK             bool   `yaml:"psk"`
}

type fileGossip struct {
	Address        string   `yaml:"address"`
	Advertise      string   `yaml:"advertise"`
	Join           []string `yaml:"join"`
	KeyFile        string   `yaml:"key_file"`
	Cluster        string   `yaml:"cluster"`
	Profile        string   `yaml:"profile"`
	RejoinInterval string   `yaml:"rejoin_interval"`
}

type fileTrust struct {
	CAFile          string `yaml:"ca_file"`
	CertFile        string `yaml:"cert_file"`
	IdentityKeyFile string `yaml:"identity_key_file"`
	RecordRefresh   string `yaml:"record_refresh"`
	RecordExpiry    string `yaml:"record_expiry"`
	ClockSkew       string `yaml:"clock_skew"`
}

type fileRoutes struct {
	Table  *int `yaml:"table"`
	Metric *int `yaml:"metric"`
}

type filePeer struct {
	Name                string   `yaml:"name"`
	PublicKey           string   `yaml:"public_key"`
	Endpoint            string   `yaml:"endpoint"`
	AllowedPrefixes     []string `yaml:"allowed_prefixes"`
	PersistentKeepalive *string  `yaml:"persistent_keepalive"`
}

// problems collects the FieldErrors of one parse, so that every problem is
// reported at once.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// duration parses an optional duration field within [min, max]; def when
// the field is empty or bad (the problem is recorded).
func (p *problems) duration(field, s string, def, min, max time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := ParseDuration(s)
	if err != nil || d < min || d > max {
		p.add(field, "%q: use a duration between %s and %s", s, FormatDuration(min), FormatDuration(max))
		return def
	}
	return d
}

func (fc *fileConfig) validate(dir string) (*Config, error) {
	var bad problems
	c := &Config{
		Site:                fc.Site,
		Interface:           fc.Interface,
		ListenPort:          DefaultListenPort,
		MTU:                 fc.MTU,
		PersistentKeepalive: DefaultPersistentKeepalive,
		ResyncInterval:      DefaultResyncInterval,
		RouteTable:          254,
		RouteMetric:         DefaultRouteMetric,
	}
	c.parseIdentity(fc, dir, &bad)
	c.parseDataPlane(fc, &bad)
	c.parseUserspace(fc.Userspace, &bad)
	c.parseHealth(fc.Health, &bad)
	c.parsePeers(fc.Peers, &bad)
	c.parseStateAndTrust(fc, dir, &bad)
	c.parseGossip(fc, &bad)
	c.parseMetricsAddr(fc.MetricsAddr, &bad)
	c.parseGatewayWeight(fc.GatewayWeight, &bad)
	if len(bad) > 0 {
		return nil, errors.Join(bad...)
	}
	if err := c.checkOverlaps(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseIdentity reads who and where this site is: its name, interface,
// port, key file and addresses.
func (c *Config) parseIdentity(fc *fileConfig, dir string, bad *problems) {
	switch {
	case c.Site == "":
		bad.add("site", "required: this site's name, e.g. site: fra1")
	case !trust.ValidSiteName(c.Site):
		bad.add("site", "%q is not a valid site name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.Site)
	}
	if c.Interface == "" {
		c.Interface = DefaultInterface
	} else if len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/: \t") {
		bad.add("interface", "%q is not a valid interface name: at most 15 characters, no '/', ':' or spaces", c.Interface)
	}
	if fc.ListenPort != nil {
		c.ListenPort = *fc.ListenPort
		if c.ListenPort < 1 || c.ListenPort > 65535 {
			bad.add("listen_port", "%d is out of range: use 1-65535 (default %d)", c.ListenPort, DefaultListenPort)
		}
	}
	if fc.PrivateKeyFile == "" {
		bad.add("private_key_file", "required: path of the WireGuard private key (create one with: dcmesh key generate --out /etc/dcmesh/wg.key)")
	} else {
		c.PrivateKeyFile = fc.PrivateKeyFile
		if !filepath.IsAbs(c.PrivateKeyFile) {
			c.PrivateKeyFile = filepath.Join(dir, c.PrivateKeyFile)
		}
	}
	if fc.OverlayAddress == "" {
		if fc.Gossip == nil {
			bad.add("overlay_address", "required: this site's address on the tunnel interface, e.g. overlay_address: 10.255.0.1/32")
		}
	} else if p, err := parseAddress(fc.OverlayAddress); err != nil {
		bad.add("overlay_address", "%v", err)
	} else {
		c.OverlayAddress = p
	}
	for i, s := range fc.LocalPrefixes {
		p, err := ParsePrefix(s)
		if err != nil {
			bad.add(fmt.Sprintf("local_prefixes[%d]", i), "%v", err)
			continue
		}
		c.LocalPrefixes = append(c.LocalPrefixes, p)
	}
}

// parseDataPlane reads how the tunnel and the routes are programmed.
func (c *Config) parseDataPlane(fc *fileConfig, bad *problems) {
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 9000) {
		bad.add("mtu", "%d is out of range: use 1280-9000, or 0 (the default) for the underlay MTU minus %d", c.MTU, UnderlayOverhead)
	}
	mode, err := wg.ParseMode(fc.WireGuard)
	if err != nil {
		bad.add("wireguard", "%q is not a backend: use auto (the default), kernel or userspace", fc.WireGuard)
	}
	c.WireGuard = mode
	if fc.PersistentKeepalive != "" {
		d, err := parseKeepalive(fc.PersistentKeepalive)
		if err != nil {
			bad.add("persistent_keepalive", "%v", err)
		}
		c.PersistentKeepalive = d
	}
	if fc.ResyncInterval != "" {
		d, err := ParseDuration(fc.ResyncInterval)
		if err != nil || d < time.Second || d > time.Hour {
			bad.add("resync_interval", "%q: use a duration between 1s and 1h, e.g. 10s", fc.ResyncInterval)
		} else {
			c.ResyncInterval = d
		}
	}
	if fc.Routes.Table != nil {
		c.RouteTable = *fc.Routes.Table
		if c.RouteTable < 1 || c.RouteTable > 0xFFFFFFFE || c.RouteTable == 255 || c.RouteTable == 253 {
			bad.add("routes.table", "%d cannot hold dcmesh routes: use 254 (main, the default) or a table of your own, 1-252 or 256 and up", c.RouteTable)
		}
	}
	if fc.Routes.Metric != nil {
		c.RouteMetric = *fc.Routes.Metric
		if c.RouteMetric < MinRouteMetric || c.RouteMetric > MaxRouteMetric {
			bad.add("routes.metric", "%d is out of range: use %d-%d (a drained gateway's tunnel routes use metric-1, at least 1; fail-closed routes use metric+1, at most 4294967295)", c.RouteMetric, MinRouteMetric, MaxRouteMetric)
		}
	}
}

// parseUserspace reads the embedded device's bounds.
func (c *Config) parseUserspace(fu fileUserspace, bad *problems) {
	c.Userspace.BuffersPerPool = DefaultBuffersPerPool
	if n := fu.BuffersPerPool; n != nil {
		if *n != 0 && (*n < wg.MinBuffersPerPool || *n > maxBuffersPerPool) {
			bad.add("userspace.buffers_per_pool", "%d is out of range: use %d-%d, or 0 for no bound (default %d)", *n, wg.MinBuffersPerPool, maxBuffersPerPool, DefaultBuffersPerPool)
		} else {
			c.Userspace.BuffersPerPool = *n
		}
	}
	c.Userspace.MemoryLimit = DefaultUserspaceMemoryLimit(c.Userspace.BuffersPerPool)
	if fu.MemoryLimit == "" {
		return
	}
	need := userspaceBaseMemory/2 + int64(c.Userspace.BuffersPerPool)*messageBufferSize
	n, err := parseSize(fu.MemoryLimit)
	switch {
	case err != nil:
		bad.add("userspace.memory_limit", "%v", err)
	case n != 0 && (n < minUserspaceMemoryLimit || n > 1<<40):
		bad.add("userspace.memory_limit", "%q is out of range: use 16MiB to 1TiB, or 0 for no limit (default: 32MiB plus 64KiB per buffers_per_pool)", fu.MemoryLimit)
	case n != 0 && n < need:
		bad.add("userspace.memory_limit", "%q is less than the %d buffers of 64KiB that userspace.buffers_per_pool lets the device use, plus 16MiB: raise it to at least %dMiB, lower buffers_per_pool, or leave it out (default %dMiB)",
			fu.MemoryLimit, c.Userspace.BuffersPerPool, (need+(1<<20)-1)>>20, DefaultUserspaceMemoryLimit(c.Userspace.BuffersPerPool)>>20)
	default:
		c.Userspace.MemoryLimit = n
	}
}

// parseStateAndTrust reads state_dir, endpoint, trust and rotation. File
// names in trust are relative to state_dir.
func (c *Config) parseStateAndTrust(fc *fileConfig, dir string, bad *problems) {
	switch {
	case fc.StateDir == "":
		c.StateDir = DefaultStateDir
	case !filepath.IsAbs(fc.StateDir):
		c.StateDir = StateDir(filepath.Join(dir, fc.StateDir))
	default:
		c.StateDir = StateDir(fc.StateDir)
	}
	c.parseEndpoints(fc, bad)
	c.Trust = TrustConfig{
		CAFile:          c.StateDir.File(cmp.Or(fc.Trust.CAFile, CACertFile)),
		CertFile:        c.StateDir.File(cmp.Or(fc.Trust.CertFile, SiteCertFile)),
		IdentityKeyFile: c.StateDir.File(cmp.Or(fc.Trust.IdentityKeyFile, IdentityKeyFile)),
		RecordRefresh:   bad.duration("trust.record_refresh", fc.Trust.RecordRefresh, DefaultRecordRefresh, time.Second, 7*24*time.Hour),
		RecordExpiry:    bad.duration("trust.record_expiry", fc.Trust.RecordExpiry, DefaultRecordExpiry, 10*time.Second, 365*24*time.Hour),
		ClockSkew:       bad.duration("trust.clock_skew", fc.Trust.ClockSkew, DefaultClockSkew, 0, time.Hour),
	}
	c.Rotation = RotationConfig{
		AckTimeout:      bad.duration("rotation.ack_timeout", fc.Rotation.AckTimeout, DefaultAckTimeout, 100*time.Millisecond, time.Hour),
		CompleteTimeout: bad.duration("rotation.complete_timeout", fc.Rotation.CompleteTimeout, DefaultCompleteTimeout, time.Second, time.Hour),
		PSK:             fc.Rotation.PSK,
	}
	if fc.Rotation.Interval == "0" || fc.Rotation.Interval == "0s" {
		c.Rotation.Interval = 0
	} else {
		c.Rotation.Interval = bad.duration("rotation.interval", fc.Rotation.Interval, DefaultRotationInterval, time.Minute, 365*24*time.Hour)
	}
	if c.Trust.RecordRefresh*2 > c.Trust.RecordExpiry {
		bad.add("trust.record_refresh", "%s must be at most half of trust.record_expiry (%s), or live sites would expire", c.Trust.RecordRefresh, c.Trust.RecordExpiry)
	}
}

// parseGossip reads the gossip section (after parseStateAndTrust: its key
// file is relative to state_dir).
func (c *Config) parseGossip(fc *fileConfig, bad *problems) {
	fg := fc.Gossip
	if fg == nil {
		return
	}
	g := &GossipConfig{
		KeyFile:        c.StateDir.File(cmp.Or(fg.KeyFile, GossipKeyFile)),
		Cluster:        fg.Cluster,
		Profile:        fg.Profile,
		RejoinInterval: bad.duration("gossip.rejoin_interval", fg.RejoinInterval, 30*time.Second, 100*time.Millisecond, time.Hour),
	}
	if fc.Endpoint == "" && len(fc.Endpoints) == 0 {
		bad.add("endpoint", "required with gossip: the underlay IP:PORT other sites send WireGuard traffic to, e.g. endpoint: 192.0.2.10:51820")
	}
	if ap, err := ParseGossipAddr(fg.Address); err != nil {
		bad.add("gossip.address", "%v", err)
	} else {
		g.Address = ap
	}
	if fg.Advertise != "" {
		if ap, err := ParseGossipAddr(fg.Advertise); err != nil {
			bad.add("gossip.advertise", "%v", err)
		} else {
			g.Advertise = ap
		}
	} else if g.Address.Addr().IsUnspecified() {
		bad.add("gossip.advertise", "required when gossip.address is %s: the address other sites reach this one at", g.Address)
	}
	for i, j := range fg.Join {
		if _, err := ParseGossipAddr(j); err != nil {
			bad.add(fmt.Sprintf("gossip.join[%d]", i), "%v", err)
			continue
		}
		g.Join = append(g.Join, strings.TrimSpace(j))
	}
	if g.Cluster == "" {
		bad.add("gossip.cluster", "required: the cluster name given to `dcmesh ca init --cluster` (sites of other clusters are kept apart)")
	}
	switch g.Profile {
	case "":
		g.Profile = "wan"
	case "wan", "lan":
	default:
		bad.add("gossip.profile", "%q: use wan (the default: sites far apart) or lan", g.Profile)
	}
	c.Gossip = g
}

// parsePeers reads the static peers.
func (c *Config) parsePeers(peers []filePeer, bad *problems) {
	names := map[string]int{}
	keys := map[wg.PublicKey]int{}
	for i, fp := range peers {
		f := fmt.Sprintf("peers[%d]", i)
		p := StaticPeer{Name: fp.Name, PersistentKeepalive: c.PersistentKeepalive}
		switch {
		case fp.Name == "":
			bad.add(f+".name", "required: the peer site's name")
		case !trust.ValidSiteName(fp.Name):
			bad.add(f+".name", "%q is not a valid site name: use lowercase letters, digits and '-'", fp.Name)
		case fp.Name == c.Site:
			bad.add(f+".name", "%q is this site's own name", fp.Name)
		default:
			if j, dup := names[fp.Name]; dup {
				bad.add(f+".name", "%q is also the name of peers[%d]", fp.Name, j)
			}
			names[fp.Name] = i
		}
		if k, err := wg.ParsePublicKey(strings.TrimSpace(fp.PublicKey)); err != nil {
			bad.add(f+".public_key", "not a WireGuard public key: want the 44-character base64 line printed by `dcmesh key public` or `wg pubkey`")
		} else {
			if j, dup := keys[k]; dup {
				bad.add(f+".public_key", "same key as peers[%d]: every site has its own key", j)
			}
			keys[k] = i
			p.PublicKey = k
		}
		if fp.Endpoint != "" {
			ap, err := netip.ParseAddrPort(fp.Endpoint)
			if err != nil || ap.Port() == 0 {
				bad.add(f+".endpoint", "%q is not IP:PORT: write e.g. 192.0.2.10:51820 or [2001:db8::10]:51820 (host names are not resolved)", fp.Endpoint)
			} else {
				p.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			}
		}
		if len(fp.AllowedPrefixes) == 0 {
			bad.add(f+".allowed_prefixes", "required: the prefixes behind this peer (its site prefixes and its overlay address)")
		}
		for j, s := range fp.AllowedPrefixes {
			pf, err := ParsePrefix(s)
			if err != nil {
				bad.add(fmt.Sprintf("%s.allowed_prefixes[%d]", f, j), "%v", err)
				continue
			}
			if pf.Bits() == 0 {
				bad.add(fmt.Sprintf("%s.allowed_prefixes[%d]", f, j), "%s would send all traffic to one site: dcmesh routes site prefixes, not default routes", pf)
				continue
			}
			p.AllowedPrefixes = append(p.AllowedPrefixes, pf)
		}
		if fp.PersistentKeepalive != nil {
			d, err := parseKeepalive(*fp.PersistentKeepalive)
			if err != nil {
				bad.add(f+".persistent_keepalive", "%v", err)
			}
			p.PersistentKeepalive = d
		}
		c.Peers = append(c.Peers, p)
	}
}

// checkOverlaps rejects configurations whose routes would fight: two peers
// claiming the same addresses, a peer claiming this site's own addresses, or
// a peer endpoint that would be routed into the tunnel itself.
func (c *Config) checkOverlaps() error {
	type owned struct {
		field  string
		prefix netip.Prefix
	}
	var local []owned
	// The overlay address itself, not its network: peers' overlay addresses
	// legitimately sit in the same overlay network.
	a := c.OverlayAddress.Addr()
	local = append(local, owned{"overlay_address", netip.PrefixFrom(a, a.BitLen())})
	for i, p := range c.LocalPrefixes {
		local = append(local, owned{fmt.Sprintf("local_prefixes[%d]", i), p})
	}
	var remote []owned
	for i, p := range c.Peers {
		for j, pf := range p.AllowedPrefixes {
			remote = append(remote, owned{fmt.Sprintf("peers[%d].allowed_prefixes[%d]", i, j), pf})
		}
	}
	var errs []error
	for i, r := range remote {
		for _, l := range local {
			if r.prefix.Overlaps(l.prefix) {
				errs = append(errs, &FieldError{r.field, fmt.Sprintf("%s overlaps this site's %s (%s): traffic for it would leave through the tunnel", r.prefix, l.field, l.prefix)})
			}
		}
		for _, o := range remote[:i] {
			if peerIndex(r.field) != peerIndex(o.field) && r.prefix.Overlaps(o.prefix) {
				errs = append(errs, &FieldError{r.field, fmt.Sprintf("%s overlaps %s (%s): a prefix can belong to one site only", r.prefix, o.field, o.prefix)})
			}
		}
	}
	for i, p := range c.Peers {
		if !p.Endpoint.IsValid() {
			continue
		}
		for _, r := range remote {
			if r.prefix.Contains(p.Endpoint.Addr()) {
				errs = append(errs, &FieldError{fmt.Sprintf("peers[%d].endpoint", i), fmt.Sprintf("%s is inside %s (%s): the tunnel would be routed into itself; use an underlay address", p.Endpoint.Addr(), r.field, r.prefix)})
			}
		}
	}
	return errors.Join(errs...)
}

func peerIndex(field string) string { return field[:strings.Index(field, "]")+1] }
