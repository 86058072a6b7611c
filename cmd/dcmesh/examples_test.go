package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// README's first command runs examples/netns-walkthrough.sh; it must keep
// working and leave nothing behind.
func TestNetnsWalkthroughScript(t *testing.T) {
	netconfigtest.RequireRoot(t)
	requireTool(t, "ip", "ping", "go")
	out, err := exec.Command("../../examples/netns-walkthrough.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	for _, want := range []string{"3 received, 0% packet loss", "refused, as it should be"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, out)
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "dcmwalk") {
		t.Errorf("walkthrough left namespaces behind: %s", ns)
	}
}

// The systemd unit in examples/ passes systemd-analyze verify (with the
// binary path pointed at the one just built).
func TestSystemdUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("skipping: systemd-analyze not installed")
	}
	raw, err := os.ReadFile("../../examples/dcmesh.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(raw), "/usr/local/bin/dcmesh", dcmeshBinary(t))
	path := filepath.Join(t.TempDir(), "dcmesh.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
