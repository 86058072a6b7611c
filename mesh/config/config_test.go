package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/wg"
)

var (
	keyB = mustPub("B+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyC = mustPub("C+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
)

func mustPub(s string) wg.PublicKey {
	k, err := wg.ParsePublicKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

const validConfig = `
site: fra1
interface: dcm0
listen_port: 51821
private_key_file: wg.key
overlay_address: 10.255.0.1/32
local_prefixes: [10.1.0.0/16]
routes:
  table: 100
  metric: 50
peers:
  - name: ams1
    public_key: B+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=
    endpoint: 192.0.2.2:51820
    allowed_prefixes: [10.2.0.0/16, 10.255.0.2/32]
  - name: par1
    public_key: C+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=
    allowed_prefixes: [10.3.0.0/16]
    persistent_keepalive: 0s
`

func TestParseValidConfig(t *testing.T) {
	c, err := Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	if c.PrivateKeyFile != "/etc/dcmesh/wg.key" {
		t.Errorf("relative key path resolved to %q", c.PrivateKeyFile)
	}
	if c.ListenPort != 51821 || c.RouteTable != 100 || c.RouteMetric != 50 || c.WireGuard != wg.ModeAuto || c.MTU != 0 {
		t.Errorf("fields: %+v", c)
	}
	if len(c.Peers) != 2 || c.Peers[0].PersistentKeepalive != DefaultPersistentKeepalive || c.Peers[1].PersistentKeepalive != 0 {
		t.Errorf("peers: %+v", c.Peers)
	}
	if c.Peers[1].Endpoint.IsValid() {
		t.Errorf("par1 has no endpoint, got %v", c.Peers[1].Endpoint)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.1\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface != DefaultInterface || c.ListenPort != DefaultListenPort || c.RouteTable != 254 ||
		c.RouteMetric != DefaultRouteMetric || c.PersistentKeepalive != 25*time.Second || c.ResyncInterval != DefaultResyncInterval ||
		c.OverlayAddress.String() != "10.255.0.1/32" {
		t.Errorf("defaults: %+v", c)
	}
}

// Each invalid configuration is rejected with an error that names the field
// and says what to do.
func TestConfigValidation(t *testing.T) {
	base := "site: fra1\nprivate_key_file: /k\noverlay_address: 10.255.0.1/32\nlocal_prefixes: [10.1.0.0/16]\n"
	peer := func(fields string) string {
		return base + "peers:\n  - name: ams1\n    public_key: " + keyB.String() + "\n" + fields
	}
	cases := []struct {
		name, yaml, field, hint string
	}{
		{"empty file", "", "", "site, overlay_address and private_key_file"},
		{"unknown field", base + "listen_prot: 1\n", "", "unknown field listen_prot"},
		{"missing site", "private_key_file: /k\noverlay_address: 10.255.0.1\n", "site", "required"},
		{"bad site", strings.Replace(base, "fra1", "Fra_1", 1), "site", "lowercase"},
		{"missing key file", "site: a\noverlay_address: 10.255.0.1\n", "private_key_file", "dcmesh key generate"},
		{"missing overlay", "site: a\nprivate_key_file: /k\n", "overlay_address", "required"},
		{"bad overlay", "site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.300\n", "overlay_address", "e.g. 10.255.0.1/32"},
		{"long interface", base + "interface: averyveryverylongname\n", "interface", "15 characters"},
		{"port zero", base + "listen_port: 0\n", "listen_port", "1-65535"},
		{"host bits", strings.Replace(base, "10.1.0.0/16", "10.1.0.1/16", 1), "local_prefixes[0]", "did you mean 10.1.0.0/16"},
		{"mtu", base + "mtu: 500\n", "mtu", "1280-9000"},
		{"backend", base + "wireguard: boringtun\n", "wireguard", "auto (the default), kernel or userspace"},
		{"keepalive", base + "persistent_keepalive: 1.5s\n", "persistent_keepalive", "whole seconds"},
		{"resync", base + "resync_interval: 1ms\n", "resync_interval", "between 1s and 1h"},
		{"table local", base + "routes:\n  table: 255\n", "routes.table", "254 (main"},
		{"metric", base + "routes:\n  metric: -1\n", "routes.metric", "2-4294967294"},
		{"metric without room below for drain", base + "routes:\n  metric: 1\n", "routes.metric", "metric-1"},
		{"metric without room above for fail-closed", base + "routes:\n  metric: 4294967295\n", "routes.metric", "metric+1"},
		{"peer name", base + "peers:\n  - public_key: " + keyB.String() + "\n    allowed_prefixes: [10.2.0.0/16]\n", "peers[0].name", "required"},
		{"peer is self", base + "peers:\n  - name: fra1\n    public_key: " + keyB.String() + "\n    allowed_prefixes: [10.2.0.0/16]\n", "peers[0].name", "this site's own name"},
		{"peer key", base + "peers:\n  - name: ams1\n    public_key: nope\n    allowed_prefixes: [10.2.0.0/16]\n", "peers[0].public_key", "dcmesh key public"},
		{"endpoint", peer("    endpoint: ams1.example:51820\n    allowed_prefixes: [10.2.0.0/16]\n"), "peers[0].endpoint", "IP:PORT"},
		{"endpoint no port", peer("    endpoint: 192.0.2.2\n    allowed_prefixes: [10.2.0.0/16]\n"), "peers[0].endpoint", "IP:PORT"},
		{"no prefixes", peer(""), "peers[0].allowed_prefixes", "required"},
		{"default route", peer("    allowed_prefixes: [0.0.0.0/0]\n"), "peers[0].allowed_prefixes[0]", "not default routes"},
		{"overlaps local", peer("    allowed_prefixes: [10.1.2.0/24]\n"), "peers[0].allowed_prefixes[0]", "overlaps this site's local_prefixes[0]"},
		{"overlaps overlay", peer("    allowed_prefixes: [10.255.0.0/24]\n"), "peers[0].allowed_prefixes[0]", "overlaps this site's overlay_address"},
		{"endpoint in tunnel", peer("    endpoint: 10.2.0.9:51820\n    allowed_prefixes: [10.2.0.0/16]\n"), "peers[0].endpoint", "routed into itself"},
		{"two peers overlap", peer("    allowed_prefixes: [10.2.0.0/16]\n") + "  - name: par1\n    public_key: " + keyC.String() + "\n    allowed_prefixes: [10.2.128.0/17]\n",
			"peers[1].allowed_prefixes[0]", "overlaps peers[0].allowed_prefixes[0]"},
		{"duplicate key", peer("    allowed_prefixes: [10.2.0.0/16]\n") + "  - name: par1\n    public_key: " + keyB.String() + "\n    allowed_prefixes: [10.3.0.0/16]\n",
			"peers[1].public_key", "same key as peers[0]"},
		{"buffers too few", base + "userspace:\n  buffers_per_pool: 100\n", "userspace.buffers_per_pool", "use 512-65536, or 0 for no bound"},
		{"buffers too many", base + "userspace:\n  buffers_per_pool: 1000000\n", "userspace.buffers_per_pool", "or 0 for no bound"},
		{"memory limit below buffers", base + "userspace:\n  buffers_per_pool: 2048\n  memory_limit: 64MiB\n", "userspace.memory_limit", "at least 144MiB"},
		{"memory limit unit", base + "userspace:\n  memory_limit: 64MB\n", "userspace.memory_limit", "KiB, MiB or GiB"},
		{"memory limit small", base + "userspace:\n  memory_limit: 1MiB\n", "userspace.memory_limit", "16MiB to 1TiB, or 0 for no limit"},
		{"userspace unknown", base + "userspace:\n  buffers: 1024\n", "", "unknown field buffers"},
		{"duplicate name", peer("    allowed_prefixes: [10.2.0.0/16]\n") + "  - name: ams1\n    public_key: " + keyC.String() + "\n    allowed_prefixes: [10.3.0.0/16]\n",
			"peers[1].name", "also the name of peers[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "/")
			if err == nil {
				t.Fatal("accepted")
			}
			if c.field != "" {
				var fe *FieldError
				found := false
				for _, e := range unwrapAll(err) {
					if errors.As(e, &fe) && fe.Field == c.field {
						found = true
					}
				}
				if !found {
					t.Errorf("no error for field %s in:\n%v", c.field, err)
				}
			}
			if !strings.Contains(err.Error(), c.hint) {
				t.Errorf("error does not say %q:\n%v", c.hint, err)
			}
		})
	}
}

// The embedded device's memory settings: bounded by default, each can be
// set or turned off with 0.
func TestParseUserspace(t *testing.T) {
	base := "site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.1\n"
	for _, c := range []struct {
		yaml    string
		buffers int
		limit   int64
	}{
		{"", 0, 0}, // no bound by default: see DefaultBuffersPerPool
		{"userspace: {buffers_per_pool: 1024}\n", 1024, 96 << 20},
		{"userspace: {buffers_per_pool: 0, memory_limit: 0}\n", 0, 0},
		{"userspace: {buffers_per_pool: 0}\n", 0, 0},
		{"userspace: {buffers_per_pool: 2048}\n", 2048, 160 << 20},
		{"userspace: {memory_limit: 0}\n", DefaultBuffersPerPool, 0},
		{"userspace:\n  buffers_per_pool: 4096\n  memory_limit: 1GiB\n", 4096, 1 << 30},
		{"userspace:\n  memory_limit: 100000000\n", DefaultBuffersPerPool, 100000000},
		{"userspace:\n  memory_limit: 512 MiB\n", DefaultBuffersPerPool, 512 << 20},
	} {
		cfg, err := Parse([]byte(base+c.yaml), "/")
		if err != nil {
			t.Errorf("%q: %v", c.yaml, err)
			continue
		}
		if cfg.Userspace.BuffersPerPool != c.buffers || cfg.Userspace.MemoryLimit != c.limit {
			t.Errorf("%q: got %+v, want buffers %d, limit %d", c.yaml, cfg.Userspace, c.buffers, c.limit)
		}
	}
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) || strings.Count(err.Error(), "missing.yaml") != 1 || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(p, make([]byte, maxConfigSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge file: %v", err)
	}
	p = filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(p, []byte("site: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("syntax error does not name the file: %v", err)
	}
}
