package mesh

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules enforces the layering: wg and netconfig (and their test
// doubles) import no other dcmesh package, and nothing below cmd imports cmd.
func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: needs the go command")
	}
	const mod = "github.com/dcmesh/dcmesh/"
	rules := map[string][]string{
		"../wg/...":        {mod},
		"../netconfig/...": {mod},
		"./...":            {mod + "cmd"},
	}
	for pkgs, banned := range rules {
		out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}: {{join .Deps " "}}`, pkgs).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkgs, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			pkg, deps, _ := strings.Cut(line, ": ")
			for _, d := range strings.Fields(deps) {
				for _, b := range banned {
					// A package may import its own sub-packages.
					if strings.HasPrefix(d, b) && !strings.HasPrefix(d, ownTree(pkg)) {
						t.Errorf("%s imports %s, which the layering forbids", pkg, d)
					}
				}
			}
		}
	}
}

// ownTree returns the top-level dcmesh package tree a package belongs to,
// e.g. github.com/dcmesh/dcmesh/wg for .../wg/wgtest.
func ownTree(pkg string) string {
	rest := strings.TrimPrefix(pkg, "github.com/dcmesh/dcmesh/")
	top, _, _ := strings.Cut(rest, "/")
	return "github.com/dcmesh/dcmesh/" + top
}
