package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/wg"
	"go.yaml.in/yaml/v3"
)

// DefaultConfigPath is where client commands and the agent look for the
// configuration when --config is not given.
const DefaultConfigPath = "/etc/dcmesh/dcmesh.yaml"

// Defaults, each with its reason.
const (
	// DefaultInterface is short enough for the 15-character limit with room
	// for a second site on the same host.
	DefaultInterface = "dcm0"
	// DefaultListenPort is WireGuard's customary port.
	DefaultListenPort = 51820
	// DefaultPersistentKeepalive keeps tunnels established through stateful
	// middleboxes and makes handshake age a real health signal (a session
	// renews every 2 minutes while keepalives flow).
	DefaultPersistentKeepalive = 25 * time.Second
	// DefaultResyncInterval bounds how long drift (a route deleted while the
	// route watch was broken, a peer changed by hand) can last.
	DefaultResyncInterval = 10 * time.Second
	// DefaultRouteMetric leaves room below it for operators' preferred
	// routes and above it for our fail-closed routes (metric+1).
	DefaultRouteMetric = 100
	// underlayOverhead is the outer IPv6 (40) + UDP (8) + WireGuard (32)
	// header, so tunnels work over either IP version without fragmenting.
	underlayOverhead = 80
	// fallbackMTU is 1500 minus underlayOverhead, for when the underlay
	// cannot be determined.
	fallbackMTU   = 1420
	maxConfigSize = 1 << 20
	// DefaultStateDir holds the control socket and, with gossip, the
	// enrollment bundle, the records seen and the sequence number.
	DefaultStateDir = "/var/lib/dcmesh"
	// DefaultRecordRefresh re-signs the site's record well within
	// DefaultRecordExpiry, so a live site never expires.
	DefaultRecordRefresh = time.Hour
	// DefaultRecordExpiry drops a site whose record nobody refreshed for a
	// day: long enough to ride out any control-plane outage (liveness is not
	// authority), short enough that a vanished site does not stay forever.
	DefaultRecordExpiry = 24 * time.Hour
	// DefaultClockSkew is how far sites' clocks may disagree before a
	// certificate counts as not yet valid or expired.
	DefaultClockSkew = 5 * time.Minute
	// DefaultRotationInterval bounds how long a stolen WireGuard key stays
	// useful to a day.
	DefaultRotationInterval = 24 * time.Hour
	// DefaultAckTimeout waits for peers to pre-install a new key long
	// enough for gossip to reach every live site, short enough that one dead
	// peer does not hold a rotation for long.
	DefaultAckTimeout = 30 * time.Second
	// DefaultCompleteTimeout is how long peers get to cut over after the
	// switch before the rotation is reported incomplete.
	DefaultCompleteTimeout = 2 * time.Minute
	// DefaultBuffersPerPool is 0: the embedded wireguard-go device's packet
	// pools stay unbounded, as wireguard-go leaves them on Linux, although
	// every packet in flight then holds a 64 KiB buffer (an agent under one
	// iperf3 TCP stream peaked at 250-300 MB RSS). A bound
	// (userspace.buffers_per_pool) holds memory and is even faster — 1024
	// gave 88 MB and 1.74 Gbit/s against 1.5 unbounded, measured with
	// cmd/dcmesh/dataplane_bench_test.go on 2 cores — but the pools are
	// shared by all peers, and wireguard-go keeps up to 128 batches of up to
	// 128 packets for each peer without a session. Traffic toward a few
	// dead sites then fills any fixed bound and the device stops for every
	// peer, for as long as the sites stay dead (TestDeadPeersDoNotStallLivePeers:
	// 8 dead sites stop a live tunnel at 1024 and 2048; 32 at 4096). An
	// interconnect must keep the live tunnels up in a partition, so the
	// bound is opt-in until staged packets of session-less peers are
	// bounded too.
	DefaultBuffersPerPool = 0
	// maxBuffersPerPool is 4 GiB of message buffers.
	maxBuffersPerPool = 65536
	// messageBufferSize is wireguard-go's device.MaxMessageSize, rounded.
	messageBufferSize = 64 << 10
	// userspaceBaseMemory is the agent without packet buffers, with room:
	// the default memory limit (userspace.memory_limit) is this plus one
	// message buffer per buffers_per_pool (96 MiB with 1024 buffers).
	// It trims the garbage collector's slack (the heap may otherwise grow
	// to twice the buffers in use) without making it run constantly; with
	// no pool bound there is no default limit, as the buffers in use may
	// then exceed any limit and the collector would run without pause
	// (measured: 64 MiB cut throughput by 70%).
	userspaceBaseMemory = 32 << 20
	// minUserspaceMemoryLimit is below what the agent needs at rest plus a
	// handful of buffers.
	minUserspaceMemoryLimit = 16 << 20
)

// Config is a validated agent configuration.
type Config struct {
	Path                string // the file it came from
	Site                string
	Interface           string
	ListenPort          int
	PrivateKeyFile      string
	OverlayAddress      netip.Prefix
	LocalPrefixes       []netip.Prefix
	MTU                 int // 0: underlay MTU − 80
	WireGuard           wg.Mode
	PersistentKeepalive time.Duration
	ResyncInterval      time.Duration
	RouteTable          int
	RouteMetric         int
	Peers               []StaticPeer
	// StateDir holds the control socket and the gossip state.
	StateDir string
	// Endpoint is the underlay IP:PORT this site announces for WireGuard.
	Endpoint netip.AddrPort
	// Gossip is nil for a site with static peers only.
	Gossip   *GossipConfig
	Trust    TrustConfig
	Rotation RotationConfig
	// Userspace tunes the embedded wireguard-go device.
	Userspace UserspaceConfig
	// Health sets the in-tunnel probes (gossip sites).
	Health HealthConfig
}

// UserspaceConfig tunes the embedded wireguard-go device. It has no effect
// with the kernel backend.
type UserspaceConfig struct {
	// BuffersPerPool bounds each packet pool of the device (see
	// wg.DeviceOptions.BuffersPerPool); 0 leaves them unbounded. Default
	// DefaultBuffersPerPool.
	BuffersPerPool int
	// MemoryLimit is the Go soft memory limit (runtime/debug.SetMemoryLimit)
	// of the agent process, in bytes; 0 sets none (Go's default, the heap
	// grows to twice its live size). Default DefaultUserspaceMemoryLimit.
	// Both are applied when the device is created: SIGHUP does not change
	// them.
	MemoryLimit int64
}

// RotationConfig schedules WireGuard key rotation (gossip sites only).
type RotationConfig struct {
	// Interval between scheduled rotations (±10% jitter); 0 turns the
	// schedule off (`dcmesh rotate` still works).
	Interval time.Duration
	// AckTimeout is how long a rotation waits for every live peer to
	// pre-install the new key before switching anyway.
	AckTimeout time.Duration
	// CompleteTimeout is how long after the switch the rotation waits for
	// every peer to cut over before it records which did not.
	CompleteTimeout time.Duration
	// PSK gives every pair a pre-shared key agreed with ML-KEM at each
	// rotation (see mesh/psk.go).
	PSK bool
}

// GossipConfig enables discovery of the other sites.
type GossipConfig struct {
	Address        netip.AddrPort // bind and, unless Advertise is set, advertise
	Advertise      netip.AddrPort
	Join           []string
	KeyFile        string
	Cluster        string
	Profile        string
	RejoinInterval time.Duration
}

// AdvertiseAddr is the address other sites reach this site's gossip on.
func (g *GossipConfig) AdvertiseAddr() netip.AddrPort {
	if g.Advertise.IsValid() {
		return g.Advertise
	}
	return g.Address
}

// TrustConfig names the enrollment files (from `dcmesh ca issue`).
type TrustConfig struct {
	CAFile          string
	CertFile        string
	IdentityKeyFile string
	RecordRefresh   time.Duration
	RecordExpiry    time.Duration
	// ClockSkew is tolerated between sites' clocks for certificate validity.
	ClockSkew time.Duration
}

// FindConfig returns DefaultConfigPath, or the configuration `dcmesh init`
// writes in DefaultStateDir when only that one exists.
func FindConfig() string {
	if _, err := os.Stat(DefaultConfigPath); err != nil {
		alt := filepath.Join(DefaultStateDir, "dcmesh.yaml")
		if _, err := os.Stat(alt); err == nil {
			return alt
		}
	}
	return DefaultConfigPath
}

// ControlSocket is the agent's local API socket.
func (c *Config) ControlSocket() string { return filepath.Join(c.StateDir, "control.sock") }

// StaticPeer is a site configured by hand: a router running plain WireGuard,
// or a dcmesh site before gossip discovers it.
type StaticPeer struct {
	Name                string
	PublicKey           wg.PublicKey
	Endpoint            netip.AddrPort // zero: the peer must initiate
	AllowedPrefixes     []netip.Prefix
	PersistentKeepalive time.Duration
}

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
	Gossip              *fileGossip   `yaml:"gossip"`
	Trust               fileTrust     `yaml:"trust"`
	Rotation            fileRotation  `yaml:"rotation"`
	Userspace           fileUserspace `yaml:"userspace"`
	Health              fileHealth    `yaml:"health"`
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

// FieldError is one problem with one configuration field.
type FieldError struct {
	Field string // e.g. peers[1].endpoint
	Msg   string // what is wrong and how to fix it
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// LoadConfig reads and validates the configuration at path. The error lists
// every problem found, one per line, each naming its field.
func LoadConfig(path string) (*Config, error) {
	// Never blocks: a FIFO or device here is refused, not read (issue 15.9).
	raw, err := wg.ReadRegularFile(path, maxConfigSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist (pass --config, or create it: see examples/dcmesh.yaml): %w", path, err)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(raw, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

var yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// ParseConfig parses and validates YAML. Relative file names in it are taken
// relative to dir.
func ParseConfig(raw []byte, dir string) (*Config, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it needs at least site, overlay_address and private_key_file (see examples/dcmesh.yaml)")
		}
		msg := yamlUnknownField.ReplaceAllString(err.Error(), "unknown field $1 (check its spelling and indentation)")
		return nil, errors.New(strings.TrimPrefix(msg, "yaml: "))
	}
	return fc.validate(dir)
}

var siteName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (fc *fileConfig) validate(dir string) (*Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
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
	switch {
	case c.Site == "":
		bad("site", "required: this site's name, e.g. site: fra1")
	case !siteName.MatchString(c.Site):
		bad("site", "%q is not a valid site name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.Site)
	}
	if c.Interface == "" {
		c.Interface = DefaultInterface
	} else if len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/: \t") {
		bad("interface", "%q is not a valid interface name: at most 15 characters, no '/', ':' or spaces", c.Interface)
	}
	if fc.ListenPort != nil {
		c.ListenPort = *fc.ListenPort
		if c.ListenPort < 1 || c.ListenPort > 65535 {
			bad("listen_port", "%d is out of range: use 1-65535 (default %d)", c.ListenPort, DefaultListenPort)
		}
	}
	if fc.PrivateKeyFile == "" {
		bad("private_key_file", "required: path of the WireGuard private key (create one with: dcmesh key generate --out /etc/dcmesh/wg.key)")
	} else {
		c.PrivateKeyFile = fc.PrivateKeyFile
		if !filepath.IsAbs(c.PrivateKeyFile) {
			c.PrivateKeyFile = filepath.Join(dir, c.PrivateKeyFile)
		}
	}
	if fc.OverlayAddress == "" {
		if fc.Gossip == nil {
			bad("overlay_address", "required: this site's address on the tunnel interface, e.g. overlay_address: 10.255.0.1/32")
		}
	} else if p, err := parseAddress(fc.OverlayAddress); err != nil {
		bad("overlay_address", "%v", err)
	} else {
		c.OverlayAddress = p
	}
	for i, s := range fc.LocalPrefixes {
		p, err := parsePrefix(s)
		if err != nil {
			bad(fmt.Sprintf("local_prefixes[%d]", i), "%v", err)
			continue
		}
		c.LocalPrefixes = append(c.LocalPrefixes, p)
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 9000) {
		bad("mtu", "%d is out of range: use 1280-9000, or 0 (the default) for the underlay MTU minus %d", c.MTU, underlayOverhead)
	}
	mode, err := wg.ParseMode(fc.WireGuard)
	if err != nil {
		bad("wireguard", "%q is not a backend: use auto (the default), kernel or userspace", fc.WireGuard)
	}
	c.WireGuard = mode
	if fc.PersistentKeepalive != "" {
		d, err := parseKeepalive(fc.PersistentKeepalive)
		if err != nil {
			bad("persistent_keepalive", "%v", err)
		}
		c.PersistentKeepalive = d
	}
	if fc.ResyncInterval != "" {
		d, err := time.ParseDuration(fc.ResyncInterval)
		if err != nil || d < time.Second || d > time.Hour {
			bad("resync_interval", "%q: use a duration between 1s and 1h, e.g. 10s", fc.ResyncInterval)
		} else {
			c.ResyncInterval = d
		}
	}
	if fc.Routes.Table != nil {
		c.RouteTable = *fc.Routes.Table
		if c.RouteTable < 1 || c.RouteTable > 0xFFFFFFFE || c.RouteTable == 255 || c.RouteTable == 253 {
			bad("routes.table", "%d cannot hold dcmesh routes: use 254 (main, the default) or a table of your own, 1-252 or 256 and up", c.RouteTable)
		}
	}
	if fc.Routes.Metric != nil {
		c.RouteMetric = *fc.Routes.Metric
		if c.RouteMetric < 0 || c.RouteMetric >= 0xFFFFFFFF {
			bad("routes.metric", "%d is out of range: use 0-4294967294 (fail-closed routes use metric+1)", c.RouteMetric)
		}
	}
	c.Userspace.BuffersPerPool = DefaultBuffersPerPool
	if n := fc.Userspace.BuffersPerPool; n != nil {
		if *n != 0 && (*n < wg.MinBuffersPerPool || *n > maxBuffersPerPool) {
			bad("userspace.buffers_per_pool", "%d is out of range: use %d-%d, or 0 for no bound (default %d)", *n, wg.MinBuffersPerPool, maxBuffersPerPool, DefaultBuffersPerPool)
		} else {
			c.Userspace.BuffersPerPool = *n
		}
	}
	c.Userspace.MemoryLimit = DefaultUserspaceMemoryLimit(c.Userspace.BuffersPerPool)
	if fc.Userspace.MemoryLimit != "" {
		need := userspaceBaseMemory/2 + int64(c.Userspace.BuffersPerPool)*messageBufferSize
		n, err := parseSize(fc.Userspace.MemoryLimit)
		switch {
		case err != nil:
			bad("userspace.memory_limit", "%v", err)
		case n != 0 && (n < minUserspaceMemoryLimit || n > 1<<40):
			bad("userspace.memory_limit", "%q is out of range: use 16MiB to 1TiB, or 0 for no limit (default: 32MiB plus 64KiB per buffers_per_pool)", fc.Userspace.MemoryLimit)
		case n != 0 && n < need:
			bad("userspace.memory_limit", "%q is less than the %d buffers of 64KiB that userspace.buffers_per_pool lets the device use, plus 16MiB: raise it to at least %dMiB, lower buffers_per_pool, or leave it out (default %dMiB)",
				fc.Userspace.MemoryLimit, c.Userspace.BuffersPerPool, (need+(1<<20)-1)>>20, DefaultUserspaceMemoryLimit(c.Userspace.BuffersPerPool)>>20)
		default:
			c.Userspace.MemoryLimit = n
		}
	}
	errs = append(errs, c.parseHealth(fc.Health)...)
	errs = append(errs, c.parsePeers(fc.Peers)...)
	errs = append(errs, c.parseGossip(fc, dir)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := c.checkOverlaps(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseGossip reads state_dir, endpoint, gossip and trust. File names in
// gossip and trust are relative to state_dir.
func (c *Config) parseGossip(fc *fileConfig, dir string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	c.StateDir = fc.StateDir
	switch {
	case c.StateDir == "":
		c.StateDir = DefaultStateDir
	case !filepath.IsAbs(c.StateDir):
		c.StateDir = filepath.Join(dir, c.StateDir)
	}
	inState := func(name, def string) string {
		if name == "" {
			name = def
		}
		if filepath.IsAbs(name) {
			return name
		}
		return filepath.Join(c.StateDir, name)
	}
	if fc.Endpoint != "" {
		ap, err := netip.ParseAddrPort(fc.Endpoint)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			bad("endpoint", "%q is not IP:PORT: the underlay address other sites send WireGuard traffic to, e.g. 192.0.2.10:51820", fc.Endpoint)
		} else {
			c.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	duration := func(field, s string, def, min, max time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < min || d > max {
			bad(field, "%q: use a duration between %s and %s", s, min, max)
			return def
		}
		return d
	}
	c.Trust = TrustConfig{
		CAFile:          inState(fc.Trust.CAFile, "ca.crt"),
		CertFile:        inState(fc.Trust.CertFile, "site.crt"),
		IdentityKeyFile: inState(fc.Trust.IdentityKeyFile, "identity.key"),
		RecordRefresh:   duration("trust.record_refresh", fc.Trust.RecordRefresh, DefaultRecordRefresh, time.Second, 7*24*time.Hour),
		RecordExpiry:    duration("trust.record_expiry", fc.Trust.RecordExpiry, DefaultRecordExpiry, 10*time.Second, 365*24*time.Hour),
		ClockSkew:       duration("trust.clock_skew", fc.Trust.ClockSkew, DefaultClockSkew, 0, time.Hour),
	}
	c.Rotation = RotationConfig{
		AckTimeout:      duration("rotation.ack_timeout", fc.Rotation.AckTimeout, DefaultAckTimeout, 100*time.Millisecond, time.Hour),
		CompleteTimeout: duration("rotation.complete_timeout", fc.Rotation.CompleteTimeout, DefaultCompleteTimeout, time.Second, time.Hour),
		PSK:             fc.Rotation.PSK,
	}
	if fc.Rotation.Interval == "0" || fc.Rotation.Interval == "0s" {
		c.Rotation.Interval = 0
	} else {
		c.Rotation.Interval = duration("rotation.interval", fc.Rotation.Interval, DefaultRotationInterval, time.Minute, 365*24*time.Hour)
	}
	if c.Trust.RecordRefresh*2 > c.Trust.RecordExpiry {
		bad("trust.record_refresh", "%s must be at most half of trust.record_expiry (%s), or live sites would expire", c.Trust.RecordRefresh, c.Trust.RecordExpiry)
	}
	fg := fc.Gossip
	if fg == nil {
		return errs
	}
	g := &GossipConfig{
		KeyFile:        inState(fg.KeyFile, "gossip.key"),
		Cluster:        fg.Cluster,
		Profile:        fg.Profile,
		RejoinInterval: duration("gossip.rejoin_interval", fg.RejoinInterval, 30*time.Second, 100*time.Millisecond, time.Hour),
	}
	if fc.Endpoint == "" {
		bad("endpoint", "required with gossip: the underlay IP:PORT other sites send WireGuard traffic to, e.g. endpoint: 192.0.2.10:51820")
	}
	if ap, err := parseGossipAddr(fg.Address); err != nil {
		bad("gossip.address", "%v", err)
	} else {
		g.Address = ap
	}
	if fg.Advertise != "" {
		if ap, err := parseGossipAddr(fg.Advertise); err != nil {
			bad("gossip.advertise", "%v", err)
		} else {
			g.Advertise = ap
		}
	} else if g.Address.Addr().IsUnspecified() {
		bad("gossip.advertise", "required when gossip.address is %s: the address other sites reach this one at", g.Address)
	}
	for i, j := range fg.Join {
		if _, err := parseGossipAddr(j); err != nil {
			bad(fmt.Sprintf("gossip.join[%d]", i), "%v", err)
			continue
		}
		g.Join = append(g.Join, strings.TrimSpace(j))
	}
	if g.Cluster == "" {
		bad("gossip.cluster", "required: the cluster name given to `dcmesh ca init --cluster` (sites of other clusters are kept apart)")
	}
	switch g.Profile {
	case "":
		g.Profile = "wan"
	case "wan", "lan":
	default:
		bad("gossip.profile", "%q: use wan (the default: sites far apart) or lan", g.Profile)
	}
	c.Gossip = g
	return errs
}

func parseGossipAddr(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("required: IP:PORT for gossip, e.g. 192.0.2.10:7946")
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:PORT (host names are not resolved), e.g. 192.0.2.10:7946", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (c *Config) parsePeers(peers []filePeer) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	names := map[string]int{}
	keys := map[wg.PublicKey]int{}
	for i, fp := range peers {
		f := fmt.Sprintf("peers[%d]", i)
		p := StaticPeer{Name: fp.Name, PersistentKeepalive: c.PersistentKeepalive}
		switch {
		case fp.Name == "":
			bad(f+".name", "required: the peer site's name")
		case !siteName.MatchString(fp.Name):
			bad(f+".name", "%q is not a valid site name: use lowercase letters, digits and '-'", fp.Name)
		case fp.Name == c.Site:
			bad(f+".name", "%q is this site's own name", fp.Name)
		default:
			if j, dup := names[fp.Name]; dup {
				bad(f+".name", "%q is also the name of peers[%d]", fp.Name, j)
			}
			names[fp.Name] = i
		}
		if k, err := wg.ParsePublicKey(strings.TrimSpace(fp.PublicKey)); err != nil {
			bad(f+".public_key", "not a WireGuard public key: want the 44-character base64 line printed by `dcmesh key public` or `wg pubkey`")
		} else {
			if j, dup := keys[k]; dup {
				bad(f+".public_key", "same key as peers[%d]: every site has its own key", j)
			}
			keys[k] = i
			p.PublicKey = k
		}
		if fp.Endpoint != "" {
			ap, err := netip.ParseAddrPort(fp.Endpoint)
			if err != nil || ap.Port() == 0 {
				bad(f+".endpoint", "%q is not IP:PORT: write e.g. 192.0.2.10:51820 or [2001:db8::10]:51820 (host names are not resolved)", fp.Endpoint)
			} else {
				p.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			}
		}
		if len(fp.AllowedPrefixes) == 0 {
			bad(f+".allowed_prefixes", "required: the prefixes behind this peer (its site prefixes and its overlay address)")
		}
		for j, s := range fp.AllowedPrefixes {
			pf, err := parsePrefix(s)
			if err != nil {
				bad(fmt.Sprintf("%s.allowed_prefixes[%d]", f, j), "%v", err)
				continue
			}
			if pf.Bits() == 0 {
				bad(fmt.Sprintf("%s.allowed_prefixes[%d]", f, j), "%s would send all traffic to one site: dcmesh routes site prefixes, not default routes", pf)
				continue
			}
			p.AllowedPrefixes = append(p.AllowedPrefixes, pf)
		}
		if fp.PersistentKeepalive != nil {
			d, err := parseKeepalive(*fp.PersistentKeepalive)
			if err != nil {
				bad(f+".persistent_keepalive", "%v", err)
			}
			p.PersistentKeepalive = d
		}
		c.Peers = append(c.Peers, p)
	}
	return errs
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

func parsePrefix(s string) (netip.Prefix, error) {
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

// DefaultUserspaceMemoryLimit is userspace.memory_limit when the file does
// not set it: 32 MiB plus 64 KiB per buffer of the pool bound, or none when
// the pools are unbounded (see userspaceBaseMemory).
func DefaultUserspaceMemoryLimit(buffersPerPool int) int64 {
	if buffersPerPool == 0 {
		return 0
	}
	return userspaceBaseMemory + int64(buffersPerPool)*messageBufferSize
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
