package mesh

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/wg"
)

// reloadBase is a gossip site's configuration with every field set.
func reloadBase(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(validConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.Endpoint = netip.MustParseAddrPort("192.0.2.1:51820")
	c.Gossip = &config.GossipConfig{Address: netip.MustParseAddrPort("192.0.2.1:7946"), Advertise: netip.MustParseAddrPort("198.51.100.1:7946"),
		Join: []string{"192.0.2.2:7946"}, KeyFile: "/etc/dcmesh/gossip.key", Cluster: "prod", Profile: "wan", RejoinInterval: 30 * time.Second}
	c.Trust = config.TrustConfig{CAFile: "ca.crt", CertFile: "site.crt", IdentityKeyFile: "identity.key", RecordRefresh: time.Hour, RecordExpiry: 24 * time.Hour, ClockSkew: time.Minute}
	c.Userspace = config.UserspaceConfig{BuffersPerPool: 1024, MemoryLimit: 64 << 20}
	return c
}

// cloneConfig copies c deeply enough for one field to be changed.
func cloneConfig(c *config.Config) *config.Config {
	n := *c
	if c.Gossip != nil {
		g := *c.Gossip
		g.Join = slices.Clone(c.Gossip.Join)
		n.Gossip = &g
	}
	n.LocalPrefixes = slices.Clone(c.LocalPrefixes)
	n.Peers = slices.Clone(c.Peers)
	return &n
}

// mutate changes the field at path (Go field names, dotted) of c to a
// different value of its type.
func mutate(t *testing.T, c *config.Config, path string) {
	t.Helper()
	v := reflect.ValueOf(c).Elem()
	for _, name := range strings.Split(path, ".") {
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		v = v.FieldByName(name)
		if !v.IsValid() {
			t.Fatalf("no field %s", path)
		}
	}
	switch x := v.Addr().Interface().(type) {
	case *string:
		*x += "-changed"
	case *config.StateDir:
		*x += "-changed"
	case *int:
		*x++
	case *int64:
		*x++
	case *time.Duration:
		*x += time.Second
	case *wg.Mode:
		*x = map[wg.Mode]wg.Mode{wg.ModeAuto: wg.ModeKernel}[*x]
	case *netip.AddrPort:
		*x = netip.AddrPortFrom(x.Addr(), x.Port()+1)
	case *netip.Prefix:
		*x = netip.MustParsePrefix("10.255.9.9/32")
	case *[]string:
		*x = append(*x, "192.0.2.99:7946")
	case *[]netip.Prefix:
		*x = append(*x, netip.MustParsePrefix("10.77.0.0/16"))
	case *[]netip.AddrPort:
		*x = append(*x, netip.MustParseAddrPort("198.51.100.99:51820"))
	case *[]config.StaticPeer:
		*x = (*x)[:len(*x)-1]
	case **config.GossipConfig:
		*x = nil
	case *config.RotationConfig:
		x.AckTimeout += time.Second
	case *config.HealthConfig:
		x.Interval += time.Millisecond
	case *bool:
		*x = !*x
	default:
		t.Fatalf("mutate: no rule for %s (%T)", path, x)
	}
}

// TestReloadRefusesRestartOnlyFields: changing any one restart-only setting
// refuses the reload and names that setting; so does moving the key file
// during a rotation.
func TestReloadRefusesRestartOnlyFields(t *testing.T) {
	base := reloadBase(t)
	for _, r := range restartOnly {
		t.Run(r.field, func(t *testing.T) {
			n := cloneConfig(base)
			mutate(t, n, r.goField)
			why := reloadRefusal(base, n, false)
			if !strings.Contains(why, r.field+" changed") || !strings.Contains(why, "restart the agent") {
				t.Errorf("changing %s: refusal %q, want it named and a restart asked for", r.field, why)
			}
		})
	}
	n := cloneConfig(base)
	n.PrivateKeyFile += ".new"
	if why := reloadRefusal(base, n, true); !strings.Contains(why, "private_key_file changed during a key rotation") {
		t.Errorf("key file moved during a rotation: %q", why)
	}
	if why := reloadRefusal(base, n, false); why != "" {
		t.Errorf("key file moved while stable: refused (%q), want applied", why)
	}
}

// TestReloadAppliesLiveFields: a change of any other setting is applied.
func TestReloadAppliesLiveFields(t *testing.T) {
	base := reloadBase(t)
	for _, f := range liveFields {
		t.Run(f, func(t *testing.T) {
			n := cloneConfig(base)
			mutate(t, n, f)
			if why := reloadRefusal(base, n, false); why != "" {
				t.Errorf("changing %s refused: %q", f, why)
			}
		})
	}
}

// TestReloadTableCoversEveryField: every config.Config field (struct fields one
// level down, Rotation as a whole) is either restart-only or live, so a
// new setting cannot be forgotten.
func TestReloadTableCoversEveryField(t *testing.T) {
	known := map[string]bool{}
	for _, r := range restartOnly {
		known[r.goField] = true
	}
	for _, f := range liveFields {
		if known[f] {
			t.Errorf("%s is both live and restart-only", f)
		}
		known[f] = true
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			path := prefix + f.Name
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			// Sections are walked into, except those listed as a whole
			// (Rotation live, Health restart-only); Gossip is listed as a
			// whole for on or off, and field by field.
			if prefix == "" && ft.Kind() == reflect.Struct && strings.HasPrefix(ft.PkgPath(), "github.com/dcmesh/") && (!known[path] || path == "Gossip") {
				walk(path+".", ft)
				continue
			}
			if known[path] {
				continue
			}
			t.Errorf("config.Config.%s is neither in restartOnly nor in liveFields (mesh/reload.go)", path)
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
}
