package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// enrolledSite makes a CA and one site initialised from its bundle, as the
// runbook does, and returns the site's configuration and state directory.
func enrolledSite(t *testing.T, extra ...string) (cfg, state string) {
	t.Helper()
	dir := t.TempDir()
	ca, bundle, state := filepath.Join(dir, "ca"), filepath.Join(dir, "fra1"), filepath.Join(dir, "state")
	for _, args := range [][]string{
		{"ca", "init", "--dir", ca, "--cluster", "prod"},
		{"ca", "issue", "--dir", ca, "--site", "fra1", "--prefix", "10.1.0.0/16", "--overlay", "10.255.0.1", "--underlay", "192.0.2.0/24", "--out", bundle},
		append([]string{"init", "--bundle", bundle, "--state-dir", state, "--endpoint", "192.0.2.10:51820"}, extra...),
	} {
		if out, err := runCLI(t, args...); err != nil {
			t.Fatalf("dcmesh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return filepath.Join(state, "dcmesh.yaml"), state
}

// snapshot lists a directory's entries with their size, mode and time.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(e.Name() + " " + fi.Mode().String() + " " + fi.ModTime().String() + "\n")
	}
	return b.String()
}

// dcmesh config check, through the binary: OK in one line for a site as
// init made it, touching nothing; the agent's field-named errors, exit 1,
// for a bad field, a file it names that is wrong, or yaml.v3's type errors.
func TestConfigCheck(t *testing.T) {
	cfg, state := enrolledSite(t)
	before := snapshot(t, state)
	stdout, stderr, code := runBinary(t, "config", "check", "--config", cfg)
	want := "config " + cfg + " OK: site fra1, interface dcm0, gossip on 192.0.2.10:7946, 0 static peers\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("config check: exit %d, %q, %q; want exit 0 and %q", code, stdout, stderr, want)
	}
	if after := snapshot(t, state); after != before {
		t.Errorf("config check changed the state directory:\nbefore\n%safter\n%s", before, after)
	}

	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name, content string) string {
		p := filepath.Join(state, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name   string
		config string
		setup  func()
		want   []string
	}{
		{"table by name", bad("table.yaml", string(raw)+"routes:\n  table: main\n"), nil,
			[]string{"routes.table: \"main\"", "254 for main"}},
		{"field out of range", bad("port.yaml", strings.Replace(string(raw), "listen_port: 51820", "listen_port: 99999", 1)), nil,
			[]string{"listen_port: 99999 is out of range"}},
		{"site not the certificate's", bad("site.yaml", strings.Replace(string(raw), "site: fra1", "site: ams1", 1)), nil,
			[]string{"site: the config says \"ams1\" but the certificate", "is for \"fra1\""}},
		{"identity key readable by others", cfg, func() {
			if err := os.Chmod(filepath.Join(state, "identity.key"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"trust.identity_key_file", "0644"}},
		{"corrupt records", cfg, func() {
			_ = os.Chmod(filepath.Join(state, "identity.key"), 0o600)
			bad("records.json", "{not json")
		}, []string{"records.json is corrupt", "move it away"}},
	}
	for _, c := range cases {
		if c.setup != nil {
			c.setup()
		}
		stdout, stderr, code := runBinary(t, "config", "check", "--config", c.config)
		if code != 1 || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q; want exit 1, nothing on stdout", c.name, code, stdout)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr does not say %q: %s", c.name, w, stderr)
			}
		}
		if strings.Contains(stderr, "unmarshal") {
			t.Errorf("%s: yaml.v3's text leaks: %s", c.name, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "control.sock")); err == nil {
		t.Error("config check opened the control socket")
	}
}

// A site with static peers only: its key file is read.
func TestConfigCheckStatic(t *testing.T) {
	dir := t.TempDir()
	cfg := writeAgentConfig(t, dir)
	if _, stderr, code := runBinary(t, "config", "check", "--config", cfg); code != 1 || !strings.Contains(stderr, "private_key_file") {
		t.Errorf("missing key file: exit %d, %s", code, stderr)
	}
	if _, err := runCLI(t, "key", "generate", "--out", filepath.Join(dir, "wg.key")); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := runBinary(t, "config", "check", "--config", cfg); code != 0 || !strings.Contains(stdout, "OK: site a") || !strings.Contains(stdout, "static peers only (0)") {
		t.Errorf("static site: exit %d, %q %q", code, stdout, stderr)
	}
}
