package mesh

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
)

// hangBound tells a refusal (microseconds: an open and an fstat) from a
// hang (a FIFO opened without O_NONBLOCK blocks forever), with room for a
// loaded machine.
const hangBound = 2 * time.Second

// specialPaths creates a FIFO, a directory and a 1 GB sparse file in dir
// and returns them with /dev/zero, each with what the refusal must say.
func specialPaths(t *testing.T, dir string) map[string][2]string {
	t.Helper()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // unblock a reader stuck in open(2), should one be
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse")
	if err := os.WriteFile(sparse, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparse, 1<<30); err != nil {
		t.Fatal(err)
	}
	return map[string][2]string{
		"fifo":        {fifo, "FIFO"},
		"directory":   {sub, "directory"},
		"char device": {"/dev/zero", "character device"},
		"sparse 1 GB": {sparse, "larger than"},
	}
}

// returnsWithin runs f and fails the test if it has not returned within
// hangBound.
func returnsWithin(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(hangBound):
		t.Fatalf("still running after %v: it hangs", hangBound)
		return nil
	}
}

func assertRefusal(t *testing.T, err error, path, what string, also ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range append([]string{path, what}, also...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q: %v", w, err)
		}
	}
}

// Issue 15.9: a FIFO as configuration, certificate, key or state file hung
// the agent at start and its loop on SIGHUP (a plain open waits for a
// writer). Every file the agent reads is refused at once, by name, when it
// is not a regular file or is far too large.
func TestAgentFilesRefuseSpecialFiles(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	res, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: filepath.Join(t.TempDir(), "state"), Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	good, err := config.Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	readers := map[string]func(path string) error{
		"config": func(p string) error { _, err := config.Load(p); return err },
		"trust.ca_file": func(p string) error {
			c := *good
			c.Trust.CAFile = p
			_, err := enroll.Load(&c, now)
			return err
		},
		"trust.cert_file": func(p string) error {
			c := *good
			c.Trust.CertFile = p
			_, err := enroll.Load(&c, now)
			return err
		},
		"trust.identity_key_file": func(p string) error {
			c := *good
			c.Trust.IdentityKeyFile = p
			_, err := enroll.Load(&c, now)
			return err
		},
		"gossip.key_file": func(p string) error {
			c, g := *good, *good.Gossip
			g.KeyFile, c.Gossip = p, &g
			_, err := enroll.Load(&c, now)
			return err
		},
		"seq.json": func(p string) error { _, err := records.LoadSeq(p); return err },
	}
	for name, read := range readers {
		for kind, pw := range specialPaths(t, t.TempDir()) {
			t.Run(name+"/"+kind, func(t *testing.T) {
				err := returnsWithin(t, func() error { return read(pw[0]) })
				assertRefusal(t, err, pw[0], pw[1])
			})
		}
	}
}

// init reads the bundle the same way.
func TestInitSiteRefusesSpecialBundleFiles(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	for _, f := range []string{config.CACertFile, config.SiteCertFile, config.IdentityKeyFile, config.GossipKeyFile} {
		for kind, pw := range specialPaths(t, t.TempDir()) {
			t.Run(f+"/"+kind, func(t *testing.T) {
				b := catest.CopyBundle(t, bundle)
				if err := os.Remove(filepath.Join(b, f)); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(pw[0], filepath.Join(b, f)); err != nil {
					t.Fatal(err)
				}
				root := t.TempDir()
				err := returnsWithin(t, func() error {
					_, err := enroll.InitSite(enroll.InitOptions{Bundle: b, StateDir: filepath.Join(root, "state"), Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now})
					return err
				})
				// Certificates are followed through the link and refused
				// for what they point to; keys are refused as links.
				what := pw[1]
				if f == config.IdentityKeyFile || f == config.GossipKeyFile {
					what = "symbolic link"
				}
				assertRefusal(t, err, filepath.Join(b, f), what, "Bundle")
				if ents, _ := os.ReadDir(root); len(ents) != 0 {
					t.Errorf("a refused init wrote %s", ents[0].Name())
				}
			})
		}
	}
}

// Files dcmesh only reads may be symbolic links (configuration management
// links them into place); the key files it replaces may not.
func TestAgentFilesSymlinks(t *testing.T) {
	now := catest.Now()
	bundle, _ := catest.Bundle(t, now, ca.IssueOptions{})
	res, err := enroll.InitSite(enroll.InitOptions{Bundle: bundle, StateDir: filepath.Join(t.TempDir(), "state"), Endpoint: netip.MustParseAddrPort("192.0.2.10:51820"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "dcmesh.yaml")
	if err := os.Symlink(res.ConfigPath, link); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(link)
	if err != nil {
		t.Fatalf("a linked configuration is refused: %v", err)
	}
	caLink := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.Symlink(cfg.Trust.CAFile, caLink); err != nil {
		t.Fatal(err)
	}
	cfg.Trust.CAFile = caLink
	if _, err := enroll.Load(cfg, now); err != nil {
		t.Fatalf("a linked CA certificate is refused: %v", err)
	}
	idLink := filepath.Join(t.TempDir(), "identity.key")
	if err := os.Symlink(cfg.Trust.IdentityKeyFile, idLink); err != nil {
		t.Fatal(err)
	}
	cfg.Trust.IdentityKeyFile = idLink
	if _, err := enroll.Load(cfg, now); !errors.Is(err, wg.ErrSymlink) || !strings.Contains(err.Error(), "trust.identity_key_file") {
		t.Fatalf("a linked identity key: %v", err)
	}
}
