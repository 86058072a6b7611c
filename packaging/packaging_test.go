// Package packaging holds the Debian packaging (build-deb, nfpm.yaml,
// maintainer scripts); this test checks the parts that can drift from the
// tree without building a package. scripts/ci-package-check builds,
// lints, installs and purges one.
package packaging

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// packaging/version maps a Go version to a Debian one that sorts the same
// way (a pre-release before its release, snapshots after a tag).
func TestVersionMapping(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("skipping: needs bash")
	}
	for in, want := range map[string]string{
		"v1.2.3":                             "v1.2.3 1.2.3",
		"v1.2.3-rc.1":                        "v1.2.3-rc.1 1.2.3~rc.1",
		"v1.2.3-4-gabcdef123456":             "v1.2.3-4-gabcdef123456 1.2.3+git4.gabcdef123456",
		"v1.2.3-4-gabcdef123456-dirty":       "v1.2.3-4-gabcdef123456-dirty 1.2.3+git4.gabcdef123456+dirty",
		"v0.0.0-20261201110751-abcdef123456": "v0.0.0-20261201110751-abcdef123456 0.0.0~git20261201110751.abcdef123456",
	} {
		cmd := exec.Command("./version")
		cmd.Env = append(os.Environ(), "DCMESH_VERSION="+in)
		out, err := cmd.Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("DCMESH_VERSION=%s packaging/version = %q, %v; want %q", in, got, err, want)
		}
	}
	cmd := exec.Command("./version")
	cmd.Env = append(os.Environ(), "DCMESH_VERSION=1.2")
	if err := cmd.Run(); err == nil {
		t.Error("packaging/version accepted 1.2")
	}
	if _, err := exec.LookPath("dpkg"); err == nil {
		// dpkg's own ordering agrees: rc < release < snapshot after it.
		if err := exec.Command("dpkg", "--compare-versions", "1.2.3~rc.1-1", "lt", "1.2.3-1").Run(); err != nil {
			t.Error("dpkg: 1.2.3~rc.1 does not sort before 1.2.3")
		}
		if err := exec.Command("dpkg", "--compare-versions", "1.2.3-1", "lt", "1.2.3+git4.gabcdef123456-1").Run(); err != nil {
			t.Error("dpkg: a snapshot after 1.2.3 does not sort after it")
		}
	}
}

// Every file nfpm.yaml takes from the tree exists, and the unit the package
// installs is where systemd and lintian look for it.
func TestNfpmConfig(t *testing.T) {
	raw, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Contents []struct {
			Src, Dst, Type string
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	dsts := map[string]string{}
	for _, c := range cfg.Contents {
		dsts[c.Dst] = c.Type
		if !strings.HasPrefix(c.Src, "${DCMESH_STAGING}") {
			if _, err := os.Stat("../" + c.Src); err != nil {
				t.Errorf("nfpm.yaml: %s: %v", c.Src, err)
			}
		}
		if strings.HasPrefix(c.Dst, "/etc/") && c.Type != "config" {
			t.Errorf("nfpm.yaml: %s is under /etc but not a conffile (type: config)", c.Dst)
		}
	}
	for _, want := range []string{"/usr/bin/dcmesh", "/usr/lib/systemd/system/dcmesh.service",
		"/etc/iproute2/rt_protos.d/dcmesh.conf", "/usr/share/man/man8/dcmesh.8.gz",
		"/usr/share/bash-completion/completions/dcmesh", "/usr/share/zsh/vendor-completions/_dcmesh",
		"/usr/share/doc/dcmesh/copyright", "/usr/share/doc/dcmesh/changelog.Debian.gz"} {
		if _, ok := dsts[want]; !ok {
			t.Errorf("nfpm.yaml does not install %s", want)
		}
	}
	for _, s := range cfg.Scripts {
		if st, err := os.Stat("../" + s); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s: %v (mode %v)", s, err, st)
		}
	}
	// build-deb points the example unit's ExecStart at /usr/bin/dcmesh.
	unit, err := os.ReadFile("../examples/dcmesh.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/local/bin/dcmesh agent ") {
		t.Error("examples/dcmesh.service has no ExecStart=/usr/local/bin/dcmesh agent line for build-deb to rewrite")
	}
}
