package mesh

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportRules enforces the layering (docs/ARCHITECTURE.md): imports only
// point down. Each rule names a package tree and the dcmesh trees its
// production code may import besides its own; a tree with no entry may
// import anything below cmd. On top of that: nothing imports cmd, and only
// cmd imports mesh/ca (the operator's CA is no part of the agent).
func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: needs the go command")
	}
	const mod = "github.com/dcmesh/dcmesh/"
	may := map[string][]string{
		"wg":                       {},
		"netconfig":                {},
		"mesh/control":             {},
		"mesh/probe":               {},
		"mesh/trust":               {"wg"},
		"mesh/gossip":              {"wg"},
		"mesh/config":              {"wg", "mesh/trust", "mesh/probe"},
		"mesh/enroll":              {"wg", "mesh/trust", "mesh/config"},
		"mesh/ca":                  {"wg", "mesh/trust", "mesh/config", "mesh/enroll"},
		"mesh/records":             {"wg", "mesh/trust", "mesh/gossip", "mesh/config"},
		"mesh/rotation":            {"wg", "mesh/trust", "mesh/records", "mesh/config", "mesh/control"},
		"cmd/dcmesh/internal/demo": {"mesh/control", "mesh/config", "netconfig"},
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		pkg = strings.TrimPrefix(pkg, mod)
		tree := ruleTree(pkg, may)
		for _, d := range strings.Fields(imports) {
			dep, ours := strings.CutPrefix(d, mod)
			if !ours || within(dep, pkg) {
				continue // not dcmesh, or the package's own sub-packages
			}
			switch {
			case within(dep, "cmd") && !within(pkg, "cmd"):
				t.Errorf("%s imports %s: nothing below cmd imports cmd", pkg, dep)
			case within(dep, "mesh/ca") && !within(pkg, "cmd") && !within(pkg, "mesh/ca"):
				t.Errorf("%s imports %s: only cmd uses the operator's CA", pkg, dep)
			case (within(pkg, "mesh/records") || within(pkg, "mesh/rotation")) && dep == "mesh":
				t.Errorf("%s imports the agent (mesh): it must talk to it through an interface", pkg)
			case tree != "" && !within(dep, tree) && !slices.ContainsFunc(may[tree], func(a string) bool { return within(dep, a) }):
				t.Errorf("%s imports %s, which the layering forbids (%s may import %v)", pkg, dep, tree, may[tree])
			}
		}
	}
}

// ruleTree returns the tree of may that pkg belongs to (the longest), or "".
func ruleTree(pkg string, may map[string][]string) string {
	best := ""
	for tree := range may {
		if within(pkg, tree) && len(tree) > len(best) {
			best = tree
		}
	}
	return best
}

// within reports whether pkg is tree or one of its sub-packages.
func within(pkg, tree string) bool {
	return pkg == tree || strings.HasPrefix(pkg, tree+"/")
}
