package enroll_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// enrollFixture is a state directory holding a valid enrollment for fra1
// (10.1.0.0/16, 10.16.0.0/16, overlay 10.255.0.1) and the config naming it.
type enrollFixture struct {
	dir       string
	ca        *trust.CA
	cert      *trust.Certificate
	key       ed25519.PrivateKey
	gossipKey []byte
}

func newEnrollFixture(t *testing.T) *enrollFixture {
	t.Helper()
	f := &enrollFixture{dir: t.TempDir(), ca: trusttest.NewCA(t)}
	f.cert, f.key = trusttest.IssueWith(t, f.ca, "fra1", trusttest.CertOptions{Overlay: netip.MustParseAddr("10.255.0.1")},
		"10.1.0.0/16", "10.16.0.0/16")
	f.gossipKey = bytes.Repeat([]byte{7}, enroll.GossipKeyLen)
	keyPEM, err := trust.EncodeKeyPEM(f.key)
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, config.CACertFile, trust.EncodeCertPEM(f.ca.Cert.Raw), 0o644)
	f.write(t, config.SiteCertFile, trust.EncodeCertPEM(f.cert.Raw), 0o644)
	f.write(t, config.IdentityKeyFile, keyPEM, 0o600)
	f.write(t, config.GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(f.gossipKey)+"\n"), 0o600)
	return f
}

func (f *enrollFixture) write(t *testing.T, name string, data []byte, mode os.FileMode) {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func (f *enrollFixture) config() *config.Config {
	return &config.Config{
		Site:     "fra1",
		StateDir: config.StateDir(f.dir),
		Gossip:   &config.GossipConfig{KeyFile: filepath.Join(f.dir, config.GossipKeyFile), Cluster: trusttest.Cluster},
		Trust: config.TrustConfig{
			CAFile:          filepath.Join(f.dir, config.CACertFile),
			CertFile:        filepath.Join(f.dir, config.SiteCertFile),
			IdentityKeyFile: filepath.Join(f.dir, config.IdentityKeyFile),
			ClockSkew:       config.DefaultClockSkew,
		},
	}
}

func TestLoadEnrollment(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix { return trusttest.Prefixes(t, ss...) }
	cases := []struct {
		name         string
		overlay      netip.Prefix
		local        []netip.Prefix
		noGossip     bool
		wantOverlay  netip.Prefix
		wantLocal    []netip.Prefix
		wantGossipOK bool
	}{
		{name: "filled from the certificate", wantOverlay: netip.MustParsePrefix("10.255.0.1/32"),
			wantLocal: pfx("10.1.0.0/16", "10.16.0.0/16"), wantGossipOK: true},
		{name: "matching overlay with a network length", overlay: netip.MustParsePrefix("10.255.0.1/24"),
			wantOverlay: netip.MustParsePrefix("10.255.0.1/24"), wantLocal: pfx("10.1.0.0/16", "10.16.0.0/16"), wantGossipOK: true},
		{name: "subset of the certificate's prefixes", local: pfx("10.1.2.0/24", "10.16.0.0/16"),
			wantOverlay: netip.MustParsePrefix("10.255.0.1/32"), wantLocal: pfx("10.1.2.0/24", "10.16.0.0/16"), wantGossipOK: true},
		{name: "no gossip: the gossip key is not read", noGossip: true,
			wantOverlay: netip.MustParsePrefix("10.255.0.1/32"), wantLocal: pfx("10.1.0.0/16", "10.16.0.0/16")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newEnrollFixture(t)
			cfg := f.config()
			cfg.OverlayAddress, cfg.LocalPrefixes = c.overlay, c.local
			if c.noGossip {
				cfg.Gossip = nil
				// Not even a broken key file matters then.
				f.write(t, config.GossipKeyFile, []byte("junk"), 0o644)
			}
			e, err := enroll.Load(cfg, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OverlayAddress != c.wantOverlay || !slices.Equal(cfg.LocalPrefixes, c.wantLocal) {
				t.Errorf("config overlay %v local %v, want %v %v", cfg.OverlayAddress, cfg.LocalPrefixes, c.wantOverlay, c.wantLocal)
			}
			if !bytes.Equal(e.Cert.Raw, f.cert.Raw) || len(e.CAs) != 1 || !e.CAs[0].Equal(f.ca.Cert) || !e.Identity.Equal(f.key) {
				t.Error("enrollment does not hold the files' contents")
			}
			if c.wantGossipOK != bytes.Equal(e.GossipKey, f.gossipKey) {
				t.Errorf("gossip key %x", e.GossipKey)
			}
		})
	}
}

func TestLoadEnrollmentRefuses(t *testing.T) {
	other := trusttest.NewCA(t)
	cases := []struct {
		name  string
		edit  func(t *testing.T, f *enrollFixture, cfg *config.Config)
		hints []string
	}{
		{"identity key of another certificate", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			_, k, _ := trust.GenerateIdentity()
			pem, _ := trust.EncodeKeyPEM(k)
			f.write(t, config.IdentityKeyFile, pem, 0o600)
		}, []string{"trust.identity_key_file", "does not belong to the certificate"}},
		{"identity key readable by others", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			if err := os.Chmod(cfg.Trust.IdentityKeyFile, 0o640); err != nil {
				t.Fatal(err)
			}
		}, []string{"trust.identity_key_file", "mode 0640"}},
		{"identity key not PEM", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.IdentityKeyFile, []byte("garbage"), 0o600)
		}, []string{"trust.identity_key_file"}},
		{"site name differs", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			cfg.Site = "ams1"
		}, []string{"site:", `"ams1"`, `"fra1"`}},
		{"overlay differs", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			cfg.OverlayAddress = netip.MustParsePrefix("10.255.0.9/32")
		}, []string{"overlay_address", "10.255.0.9", "10.255.0.1"}},
		{"local prefix outside the certificate", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			cfg.LocalPrefixes = trusttest.Prefixes(t, "10.1.0.0/16", "10.12.0.0/16")
		}, []string{"local_prefixes[1]", "10.12.0.0/16"}},
		{"local prefix wider than the certificate's", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			cfg.LocalPrefixes = trusttest.Prefixes(t, "10.16.0.0/12")
		}, []string{"local_prefixes[0]", "10.16.0.0/12"}},
		{"local prefix around the certificate's", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			cfg.LocalPrefixes = trusttest.Prefixes(t, "10.0.0.0/8")
		}, []string{"local_prefixes[0]", "10.0.0.0/8"}},
		{"gossip key mode 0644", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			if err := os.Chmod(cfg.Gossip.KeyFile, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"gossip.key_file", "mode 0644"}},
		{"gossip key too short", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), 0o600)
		}, []string{"gossip.key_file", "corrupt", "32-byte"}},
		{"gossip key too long", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(make([]byte, 33))), 0o600)
		}, []string{"gossip.key_file", "corrupt"}},
		{"gossip key not base64", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.GossipKeyFile, []byte("not base64 at all!"), 0o600)
		}, []string{"gossip.key_file", "corrupt"}},
		{"gossip key missing", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			os.Remove(cfg.Gossip.KeyFile)
		}, []string{"gossip.key_file", "does not exist"}},
		{"certificate of another CA", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.CACertFile, trust.EncodeCertPEM(other.Cert.Raw), 0o644)
		}, []string{"trust.cert_file", "not usable", string(trust.ReasonUnknownCA)}},
		{"site certificate pinned as the CA", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			f.write(t, config.CACertFile, trust.EncodeCertPEM(f.cert.Raw), 0o644)
		}, []string{"trust.ca_file", "not a CA certificate"}},
		{"expired certificate", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			nb := time.Now().Add(-20 * time.Hour).Truncate(time.Second)
			c, _ := trusttest.IssueWith(t, f.ca, "fra1", trusttest.CertOptions{Identity: f.key, Overlay: f.cert.Overlay,
				NotBefore: nb, NotAfter: nb.Add(time.Hour)}, "10.1.0.0/16")
			f.write(t, config.SiteCertFile, trust.EncodeCertPEM(c.Raw), 0o644)
		}, []string{"trust.cert_file", "not usable", "dcmesh ca issue"}},
		{"missing CA file", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			os.Remove(cfg.Trust.CAFile)
		}, []string{"trust.ca_file"}},
		{"missing certificate", func(t *testing.T, f *enrollFixture, cfg *config.Config) {
			os.Remove(cfg.Trust.CertFile)
		}, []string{"trust.cert_file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newEnrollFixture(t)
			cfg := f.config()
			c.edit(t, f, cfg)
			e, err := enroll.Load(cfg, time.Now())
			if err == nil {
				t.Fatalf("accepted (site %s), want a refusal", e.Cert.Site)
			}
			for _, h := range c.hints {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error does not say %q: %v", h, err)
				}
			}
			if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(f.gossipKey)) {
				t.Error("error leaks the gossip key")
			}
		})
	}
}

// The certificate of another gateway of the site loads like gateway 0's:
// the agent runs it (the store keeps a record per gateway).
func TestLoadEnrollmentOfGateway1(t *testing.T) {
	f := newEnrollFixture(t)
	cfg := f.config()
	c, _ := trusttest.IssueWith(t, f.ca, "fra1", trusttest.CertOptions{Identity: f.key, Overlay: f.cert.Overlay, Gateway: 1},
		"10.1.0.0/16", "10.16.0.0/16")
	f.write(t, config.SiteCertFile, trust.EncodeCertPEM(c.Raw), 0o644)
	e, err := enroll.Load(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.Cert.Gateway != 1 || e.Cert.Site != "fra1" {
		t.Errorf("loaded gateway %d of %q, want gateway 1 of fra1", e.Cert.Gateway, e.Cert.Site)
	}
}

func TestReadGossipKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, enroll.GossipKeyLen)
	b64 := base64.StdEncoding.EncodeToString(key)
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		ok      bool
	}{
		{"plain", b64, 0o600, true},
		{"with newline and spaces", "  " + b64 + "\n\n", 0o400, true},
		{"group readable", b64, 0o640, false},
		{"world readable", b64, 0o644, false},
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31]), 0o600, false},
		{"raw bytes", string(key), 0o600, false},
		{"URL alphabet", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, enroll.GossipKeyLen)), 0o600, false},
		{"empty", "", 0o600, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gossip.key")
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			k, err := enroll.ReadGossipKey(path)
			if c.ok {
				if err != nil || !bytes.Equal(k, key) {
					t.Errorf("key %x, err %v", k, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %x", k)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}
