package enroll_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

func TestInitSite(t *testing.T) {
	now := catest.Now()
	bundle, cert := catest.Bundle(t, now, ca.IssueOptions{})
	cases := []struct {
		name       string
		opts       enroll.InitOptions
		wantListen int
		wantIface  string
		wantGossip string
		wantJoin   []string
		ownConfig  bool // ConfigPath outside the state directory
	}{
		{
			name:       "defaults",
			opts:       enroll.InitOptions{Endpoint: netip.MustParseAddrPort("192.0.2.10:51820")},
			wantListen: 51820, wantIface: config.DefaultInterface, wantGossip: "192.0.2.10:7946",
		},
		{
			name: "explicit",
			opts: enroll.InitOptions{Endpoint: netip.MustParseAddrPort("192.0.2.10:51999"), ListenPort: 51821, Interface: "dcm1",
				GossipAddr: netip.MustParseAddrPort("192.0.2.11:8000"), Join: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.20:7946"), netip.MustParseAddrPort("192.0.2.21:7946")}},
			wantListen: 51821, wantIface: "dcm1", wantGossip: "192.0.2.11:8000",
			wantJoin: []string{"192.0.2.20:7946", "192.0.2.21:7946"}, ownConfig: true,
		},
		{
			name:       "endpoint port becomes the listen port",
			opts:       enroll.InitOptions{Endpoint: netip.MustParseAddrPort("192.0.2.10:4500"), Join: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.20:7946")}},
			wantListen: 4500, wantIface: config.DefaultInterface, wantGossip: "192.0.2.10:7946",
			wantJoin: []string{"192.0.2.20:7946"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.Bundle = bundle
			o.StateDir = filepath.Join(t.TempDir(), "var", "lib", "dcmesh")
			o.Now = now
			wantConfig := filepath.Join(o.StateDir, "dcmesh.yaml")
			if c.ownConfig {
				wantConfig = filepath.Join(t.TempDir(), "etc", "dcmesh.yaml")
				o.ConfigPath = wantConfig
			}
			res, err := enroll.InitSite(o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Site != "fra1" || res.ConfigPath != wantConfig {
				t.Errorf("result %+v", res)
			}

			wgtest.AssertMode(t, o.StateDir, 0o700)
			for _, f := range []struct {
				name string
				mode os.FileMode
			}{{config.CACertFile, 0o644}, {config.SiteCertFile, 0o644}, {config.IdentityKeyFile, 0o600}, {config.GossipKeyFile, 0o600}} {
				path := filepath.Join(o.StateDir, f.name)
				wgtest.AssertMode(t, path, f.mode)
				got, _ := os.ReadFile(path)
				want, _ := os.ReadFile(filepath.Join(bundle, f.name))
				if len(want) == 0 || !bytes.Equal(got, want) {
					t.Errorf("%s is not a copy of the bundle's", f.name)
				}
			}
			keyPath := filepath.Join(o.StateDir, "wg.key")
			wgtest.AssertMode(t, keyPath, 0o600)
			key, err := wg.ReadPrivateKeyFile(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if key.Public() != res.PublicKey {
				t.Error("result's public key is not wg.key's")
			}
			wgtest.AssertMode(t, wantConfig, 0o600)

			cfg, err := config.Load(wantConfig)
			if err != nil {
				t.Fatalf("the written configuration is refused: %v", err)
			}
			if cfg.Site != "fra1" || cfg.Interface != c.wantIface || cfg.ListenPort != c.wantListen ||
				cfg.PrivateKeyFile != keyPath || string(cfg.StateDir) != o.StateDir {
				t.Errorf("config %+v", cfg)
			}
			if cfg.OverlayAddress != netip.MustParsePrefix("10.255.0.1/32") {
				t.Errorf("overlay_address %v", cfg.OverlayAddress)
			}
			if !slices.Equal(cfg.LocalPrefixes, cert.Prefixes) {
				t.Errorf("local_prefixes %v, want %v", cfg.LocalPrefixes, cert.Prefixes)
			}
			if cfg.Endpoint != o.Endpoint {
				t.Errorf("endpoint %v", cfg.Endpoint)
			}
			g := cfg.Gossip
			if g == nil {
				t.Fatal("no gossip section")
			}
			if g.Address.String() != c.wantGossip || g.Cluster != "prod" || !slices.Equal(g.Join, c.wantJoin) ||
				g.KeyFile != filepath.Join(o.StateDir, config.GossipKeyFile) {
				t.Errorf("gossip %+v", g)
			}
			if cfg.Trust.CAFile != filepath.Join(o.StateDir, config.CACertFile) || cfg.Trust.CertFile != filepath.Join(o.StateDir, config.SiteCertFile) ||
				cfg.Trust.IdentityKeyFile != filepath.Join(o.StateDir, config.IdentityKeyFile) {
				t.Errorf("trust %+v", cfg.Trust)
			}

			enr, err := enroll.Load(cfg, now)
			if err != nil {
				t.Fatalf("the agent would not start: %v", err)
			}
			if !bytes.Equal(enr.Cert.Raw, cert.Raw) || len(enr.GossipKey) != enroll.GossipKeyLen {
				t.Error("enrollment is not the bundle's")
			}
		})
	}
}

// An existing, too open state directory is tightened to 0700.
func TestInitSiteTightensStateDir(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now}); err != nil {
		t.Fatal(err)
	}
	wgtest.AssertMode(t, state, 0o700)
}

// A certificate without underlay ranges allows any endpoint.
func TestInitSiteNoUnderlay(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{Underlay: []netip.Prefix{}})
	state := filepath.Join(t.TempDir(), "state")
	if _, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("198.51.100.7:51820"), Now: now}); err != nil {
		t.Fatal(err)
	}
}

func TestInitSiteRefuses(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})

	// A certificate that expired an hour ago: CA made two days ago.
	past := now.Add(-48 * time.Hour)
	expired, _ := catest.Bundle(t, past, ca.IssueOptions{Now: past.Add(time.Hour), Valid: time.Hour})
	// A certificate issued for two hours from now.
	future, _ := catest.Bundle(t, now, ca.IssueOptions{Now: now.Add(2 * time.Hour)})
	// A bundle whose ca.crt is another CA's.
	foreign := catest.CopyBundle(t, bundle)
	otherCA := catest.NewDir(t, now)
	catest.CopyFile(t, filepath.Join(otherCA, config.CACertFile), filepath.Join(foreign, config.CACertFile))
	// A bundle whose identity key is readable by everyone.
	openKey := catest.CopyBundle(t, bundle)
	if err := os.Chmod(filepath.Join(openKey, config.IdentityKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := func(f string) string {
		b := catest.CopyBundle(t, bundle)
		if err := os.Remove(filepath.Join(b, f)); err != nil {
			t.Fatal(err)
		}
		return b
	}

	cases := []struct {
		name     string
		bundle   string
		endpoint string
		gossip   string // GossipAddr, if set
		noState  bool   // empty StateDir
		hints    []string
	}{
		{name: "no state dir", noState: true, hints: []string{"StateDir is required"}},
		{name: "endpoint port zero", endpoint: "192.0.2.10:0", hints: []string{"Endpoint", "IP:PORT"}},
		{name: "unspecified endpoint", endpoint: "0.0.0.0:51820", hints: []string{"Endpoint", "IP:PORT"}},
		{name: "unspecified v6 endpoint", endpoint: "[::]:51820", hints: []string{"Endpoint", "IP:PORT"}},
		{name: "empty endpoint", endpoint: "-", hints: []string{"Endpoint", "IP:PORT"}},
		{name: "endpoint outside underlay", endpoint: "198.51.100.7:51820", hints: []string{"Endpoint 198.51.100.7:51820", "outside the underlay"}},
		{name: "gossip address outside underlay", gossip: "198.51.100.7:7946", hints: []string{"GossipAddr 198.51.100.7:7946 is outside the underlay ranges of the certificate (192.0.2.0/24, 2001:db8::/32): give an address in them (default: the endpoint's IP, port 7946)"}},
		{name: "missing ca.crt", bundle: missing(config.CACertFile), hints: []string{"Bundle", config.CACertFile}},
		{name: "missing site.crt", bundle: missing(config.SiteCertFile), hints: []string{"Bundle", config.SiteCertFile}},
		{name: "missing identity.key", bundle: missing(config.IdentityKeyFile), hints: []string{"Bundle", config.IdentityKeyFile}},
		{name: "missing gossip.key", bundle: missing(config.GossipKeyFile), hints: []string{"Bundle", config.GossipKeyFile}},
		{name: "no bundle at all", bundle: filepath.Join(t.TempDir(), "nothing"), hints: []string{"Bundle", "dcmesh ca issue --out"}},
		{name: "identity key readable by others", bundle: openKey, hints: []string{"Bundle", "mode 0644"}},
		{name: "expired certificate", bundle: expired, hints: []string{"not usable", string(trust.ReasonExpired)}},
		{name: "certificate not yet valid", bundle: future, hints: []string{"not usable", string(trust.ReasonNotYetValid)}},
		{name: "certificate of another CA", bundle: foreign, hints: []string{"not usable", string(trust.ReasonUnknownCA)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := enroll.InitOptions{Bundle: c.bundle, Now: now}
			if o.Bundle == "" {
				o.Bundle = bundle
			}
			switch c.endpoint {
			case "":
				o.Endpoint = netip.MustParseAddrPort("192.0.2.10:51820")
			case "-":
			default:
				o.Endpoint = netip.MustParseAddrPort(c.endpoint)
			}
			if c.gossip != "" {
				o.GossipAddr = netip.MustParseAddrPort(c.gossip)
			}
			root := t.TempDir()
			if !c.noState {
				o.StateDir = filepath.Join(root, "state")
			}
			_, err := enroll.InitSite(o)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, h := range c.hints {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error does not say %q: %v", h, err)
				}
			}
			// Everything is checked before anything is written.
			if ents, _ := os.ReadDir(root); len(ents) != 0 {
				t.Errorf("a refused init wrote %s", ents[0].Name())
			}
		})
	}
}

func TestInitSiteRefusesExistingConfig(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	for _, own := range []bool{false, true} {
		state := filepath.Join(t.TempDir(), "state")
		cfgPath := filepath.Join(state, "dcmesh.yaml")
		if own {
			cfgPath = filepath.Join(t.TempDir(), "mine.yaml")
		}
		if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, []byte("# hand written\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		o := enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now}
		if own {
			o.ConfigPath = cfgPath
		}
		_, err := enroll.InitSite(o)
		if err == nil || !strings.Contains(err.Error(), cfgPath) || !strings.Contains(err.Error(), "refusing to overwrite") {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(cfgPath); string(b) != "# hand written\n" {
			t.Error("the configuration was overwritten")
		}
		if _, err := os.Stat(filepath.Join(state, "wg.key")); err == nil {
			t.Error("a key was written")
		}
	}
}

// IPv6 underlay: the endpoint, gossip address and seeds are written into
// the YAML unquoted, and "[2001:db8::10]:51820" starts a YAML flow sequence.
func TestInitSiteIPv6Endpoint(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	state := filepath.Join(t.TempDir(), "state")
	res, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("[2001:db8::10]:51820"),
		Join: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::20]:7946")}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoint.String() != "[2001:db8::10]:51820" || cfg.Gossip.Address.String() != "[2001:db8::10]:7946" ||
		!slices.Equal(cfg.Gossip.Join, []string{"[2001:db8::20]:7946"}) {
		t.Errorf("endpoint %v gossip %+v", cfg.Endpoint, cfg.Gossip)
	}
}

// InitSite promises to check "everything the agent will check at start",
// but does not check that identity.key belongs to site.crt, nor that
// gossip.key is a 32-byte key: the site is set up and the agent then refuses
// to start.
func TestInitSiteChecksWhatTheAgentChecks(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	other, _ := catest.Bundle(t, now, ca.IssueOptions{Site: "ams1"})
	wrongKey := catest.CopyBundle(t, bundle)
	catest.CopyFile(t, filepath.Join(other, config.IdentityKeyFile), filepath.Join(wrongKey, config.IdentityKeyFile))
	badGossip := catest.CopyBundle(t, bundle)
	if err := os.WriteFile(filepath.Join(badGossip, config.GossipKeyFile), []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]string{"identity key of another site": wrongKey, "short gossip key": badGossip} {
		t.Run(name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			if _, err := enroll.InitSite(enroll.InitOptions{Bundle: b, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now}); err == nil {
				t.Error("accepted a bundle the agent will refuse")
			}
		})
	}
}

// Options only the generated configuration checks (listen port, interface,
// gossip address, seeds) are refused only after the state directory and
// wg.key were written, so the corrected command then fails on the existing
// wg.key.
func TestInitSiteBadOptionWritesNothing(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	cases := []struct {
		name string
		edit func(o *enroll.InitOptions)
	}{
		{"listen port", func(o *enroll.InitOptions) { o.ListenPort = 70000 }},
		{"interface", func(o *enroll.InitOptions) { o.Interface = "averyveryverylongname" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			o := enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now}
			bad := o
			c.edit(&bad)
			if _, err := enroll.InitSite(bad); err == nil {
				t.Fatal("accepted")
			}
			if _, err := os.Stat(filepath.Join(state, "wg.key")); err == nil {
				t.Error("a refused init wrote wg.key")
			}
			if _, err := enroll.InitSite(o); err != nil {
				t.Errorf("corrected retry: %v", err)
			}
		})
	}
}

// fileState is what a refused init must leave exactly as it was.
type fileState struct {
	sum   [32]byte // content of a regular file
	link  string   // target of a symbolic link
	mode  fs.FileMode
	mtime time.Time
}

// snapshotTree records every file, link and directory under root (root
// included).
func snapshotTree(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		fst := fileState{mode: st.Mode(), mtime: st.ModTime()}
		switch {
		case st.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fst.sum = sha256.Sum256(b)
		case st.Mode()&fs.ModeSymlink != 0:
			if fst.link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		out[path] = fst
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertSameTree(t *testing.T, before, after map[string]fileState) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s was removed", p)
		case a.sum != b.sum || a.link != b.link:
			t.Errorf("%s changed content", p)
		case a.mode != b.mode:
			t.Errorf("%s changed mode: %v, was %v", p, a.mode, b.mode)
		case !a.mtime.Equal(b.mtime):
			t.Errorf("%s was rewritten (mtime %v, was %v)", p, a.mtime, b.mtime)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}

// Issue 15.6: init on the state directory of an existing site, with another
// bundle and another --config, replaced identity.key, site.crt, gossip.key and
// ca.crt and only then refused because wg.key existed. Now it refuses before
// writing anything, naming the site that lives there, and every file keeps
// its content, mode and mtime.
func TestInitSiteRefusesExistingSite(t *testing.T) {
	now := catest.Now()
	fra1, _ := catest.Bundle(t, now, ca.IssueOptions{})
	ams1, _ := catest.Bundle(t, now, ca.IssueOptions{Site: "ams1", Prefixes: catest.Prefixes("10.2.0.0/16"), Overlay: netip.MustParseAddr("10.255.0.2")})
	cases := []struct {
		name  string
		setup func(t *testing.T, state string) // leaves a site, or part of one, in state
		hints []string
	}{
		{"a whole site", func(t *testing.T, state string) {
			if _, err := enroll.InitSite(enroll.InitOptions{Bundle: fra1, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"),
				ConfigPath: filepath.Join(filepath.Dir(state), "etc-fra1", "dcmesh.yaml"), Now: now}); err != nil {
				t.Fatal(err)
			}
		}, []string{"site.crt for fra1", config.IdentityKeyFile, config.WGKeyFile}},
		{"only wg.key", func(t *testing.T, state string) {
			k, _ := wg.GeneratePrivateKey()
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := wg.WritePrivateKeyFile(filepath.Join(state, config.WGKeyFile), k, false); err != nil {
				t.Fatal(err)
			}
		}, []string{config.WGKeyFile, "interrupted init"}},
		{"only state of a running agent", func(t *testing.T, state string) {
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(state, "records.json"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"records.json"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			state := filepath.Join(root, "state")
			c.setup(t, state)
			before := snapshotTree(t, root)
			for _, cfg := range []string{"", filepath.Join(root, "etc-ams1", "dcmesh.yaml")} {
				_, err := enroll.InitSite(enroll.InitOptions{Bundle: ams1, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.11:51820"), ConfigPath: cfg, Now: now})
				if err == nil {
					t.Fatal("accepted")
				}
				for _, h := range append([]string{"StateDir " + state, "already holds a site", "use a new directory"}, c.hints...) {
					if !strings.Contains(err.Error(), h) {
						t.Errorf("error does not say %q: %v", h, err)
					}
				}
				assertSameTree(t, before, snapshotTree(t, root))
			}
		})
	}
}

// initSteps are the writes of InitSite, in order.
var initSteps = []string{config.CACertFile, config.SiteCertFile, config.IdentityKeyFile, config.GossipKeyFile, config.WGKeyFile, "config"}

// A crash at any step of init leaves no configuration, so no agent starts
// from the half-written directory; the next init names the files it finds
// and changes nothing, and once they are removed it succeeds. A write that
// fails (not a crash) undoes what init wrote.
func TestInitSiteCrashAtEveryStep(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	for i, step := range initSteps {
		for _, crash := range []bool{true, false} {
			name := "error at " + step
			if crash {
				name = "crash at " + step
			}
			t.Run(name, func(t *testing.T) {
				root := t.TempDir()
				state := filepath.Join(root, "state")
				o := enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"),
					ConfigPath: filepath.Join(root, "etc", "dcmesh.yaml"), Now: now}
				restore := enroll.SetInitStepHook(func(s string) error {
					if s != step {
						return nil
					}
					if crash {
						panic("crash")
					}
					return errors.New("injected write error")
				})
				err := initCrashed(o)
				restore()
				if _, serr := os.Lstat(o.ConfigPath); serr == nil {
					t.Fatal("a configuration exists: the directory looks complete")
				}
				if _, lerr := config.Load(o.ConfigPath); lerr == nil {
					t.Error("an agent would start")
				}
				var left []string
				ents, _ := os.ReadDir(state)
				for _, e := range ents {
					left = append(left, e.Name())
				}
				if !crash {
					if err == nil || !strings.Contains(err.Error(), "injected write error") {
						t.Errorf("err = %v", err)
					}
					if ents, _ := os.ReadDir(root); len(ents) != 0 {
						t.Errorf("a failed init left %s", ents[0].Name())
					}
				} else if len(left) != i {
					t.Errorf("after a crash at step %d the state directory holds %v", i, left)
				}
				before := snapshotTree(t, root)
				_, err = enroll.InitSite(o)
				if len(left) > 0 {
					if err == nil || !strings.Contains(err.Error(), "interrupted init") || !strings.Contains(err.Error(), left[0]) {
						t.Fatalf("rerun after a crash: %v", err)
					}
					assertSameTree(t, before, snapshotTree(t, root))
					for _, n := range left {
						if err := os.Remove(filepath.Join(state, n)); err != nil {
							t.Fatal(err)
						}
					}
					_, err = enroll.InitSite(o)
				}
				if err != nil {
					t.Fatalf("init after cleaning up: %v", err)
				}
				if _, err := config.Load(o.ConfigPath); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// initCrashed runs InitSite and turns a panic of initStepHook (a crash) into
// an error.
func initCrashed(o enroll.InitOptions) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("crashed: %v", r)
		}
	}()
	_, err = enroll.InitSite(o)
	return err
}

// A failed write restores an existing state directory's mode (init tightens
// it to 0700 only when it succeeds) and leaves it empty.
func TestInitSiteFailedWriteRestoresStateDir(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enroll.SetInitStepHook(func(s string) error {
		if s == "config" {
			return errors.New("injected")
		}
		return nil
	}))
	if _, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: state, Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now}); err == nil {
		t.Fatal("no error")
	}
	wgtest.AssertMode(t, state, 0o755)
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("left %s", ents[0].Name())
	}
}
