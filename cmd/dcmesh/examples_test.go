package main

import (
	"os/exec"
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
