package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
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
	// MinRouteMetric and MaxRouteMetric bound routes.metric: a drained
	// gateway's tunnel routes take metric-1 (kept at 1 or more, so they never
	// become the kernel's 0, which some routing daemons treat as "unset"),
	// and fail-closed routes metric+1 (a 32-bit priority).
	MinRouteMetric = 2
	MaxRouteMetric = 0xFFFFFFFE
	// UnderlayOverhead is the outer IPv6 (40) + UDP (8) + WireGuard (32)
	// header, so tunnels work over either IP version without fragmenting.
	UnderlayOverhead = 80
	// FallbackMTU is 1500 minus UnderlayOverhead, for when the underlay
	// cannot be determined.
	FallbackMTU   = 1420
	maxConfigSize = 1 << 20
	// DefaultStateDir holds the control socket and, with gossip, the
	// enrollment bundle, the records seen and the sequence number.
	DefaultStateDir StateDir = "/var/lib/dcmesh"
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
	// DefaultBuffersPerPool is 0: the embedded device's packet pools stay
	// unbounded, as wireguard-go leaves them on Linux. A bound holds memory,
	// but the pools are shared by all peers and traffic toward a few dead
	// sites fills any fixed bound, stopping every live tunnel; so it is
	// opt-in (measurements: docs/BENCHMARKS.md, "Data plane").
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
	StateDir StateDir
	// Endpoint is the underlay IP:PORT this site announces for WireGuard:
	// the preferred one, Endpoints[0].
	Endpoint netip.AddrPort
	// Endpoints are all of them (one per uplink), in order of preference:
	// `endpoints: [...]`, or the one `endpoint`. Peers use the first and
	// fail over to the next when the in-tunnel probes stop answering.
	Endpoints []netip.AddrPort
	// Gossip is nil for a site with static peers only.
	Gossip   *GossipConfig
	Trust    TrustConfig
	Rotation RotationConfig
	// Userspace tunes the embedded wireguard-go device.
	Userspace UserspaceConfig
	// Health sets the in-tunnel probes (gossip sites).
	Health HealthConfig
	// MetricsAddr serves Prometheus metrics on HOST:PORT/metrics; "" for
	// none. The agent's --metrics-addr overrides it.
	MetricsAddr string
	// GatewayWeight is this gateway's share of its site's traffic among the
	// site's healthy gateways, 1-255 (default 1), or 0 for a standby that
	// carries traffic only while no active gateway of the site is healthy.
	// Peers weight their nexthop groups with it; a one-gateway site's
	// peers do not use it.
	GatewayWeight int
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

// Find returns DefaultConfigPath, or the configuration `dcmesh init` writes
// in DefaultStateDir when only that one exists.
func Find() string {
	if _, err := os.Stat(DefaultConfigPath); err != nil {
		alt := DefaultStateDir.Config()
		if _, err := os.Stat(alt); err == nil {
			return alt
		}
	}
	return DefaultConfigPath
}

// StaticPeer is a site configured by hand: a router running plain WireGuard,
// or a dcmesh site before gossip discovers it.
type StaticPeer struct {
	Name                string
	PublicKey           wg.PublicKey
	Endpoint            netip.AddrPort // zero: the peer must initiate
	AllowedPrefixes     []netip.Prefix
	PersistentKeepalive time.Duration
}

// FieldError is one problem with one configuration field.
type FieldError struct {
	Field string // e.g. peers[1].endpoint
	Msg   string // what is wrong and how to fix it
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Load reads and validates the configuration at path. The error lists
// every problem found, one per line, each naming its field.
func Load(path string) (*Config, error) {
	// Never blocks: a FIFO or device here is refused, not read (issue 15.9).
	raw, err := wg.ReadRegularFile(path, maxConfigSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &missingConfigError{path}
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(raw, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// Parse parses and validates YAML. Relative file names in it are taken
// relative to dir.
func Parse(raw []byte, dir string) (*Config, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it needs at least site, overlay_address and private_key_file (see examples/dcmesh.yaml)")
		}
		return nil, yamlFieldErrors(raw, err)
	}
	return fc.validate(dir)
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

// ErrNoGossip is what operations that need gossip (leave, revoke, rotate,
// records) answer on a site without it.
var ErrNoGossip = errors.New("this site runs with static peers only (no gossip section in its configuration)")

// missingConfigError names the missing file once (the error below it
// repeats the path twice) and is still an os.ErrNotExist.
type missingConfigError struct{ path string }

func (e *missingConfigError) Error() string {
	return "config " + e.path + " does not exist (pass --config, or create it: see examples/dcmesh.yaml)"
}

func (e *missingConfigError) Unwrap() error { return os.ErrNotExist }
