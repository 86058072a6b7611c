package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// dcmesh man renders a page with every command and flag that --help shows,
// and man(1) reads it without a warning, as lintian checks it in the package.
func TestManPage(t *testing.T) {
	page, err := runCLI(t, "man")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, ".TH dcmesh 8") {
		t.Fatalf("no .TH dcmesh 8 header:\n%.300s", page)
	}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				if strings.Contains(page, "\n.SH "+c.Name+"\n") {
					t.Errorf("hidden command %s is in the man page", c.Name)
				}
				continue
			}
			if !strings.Contains(page, "\n.SH "+c.Name+"\n") && !strings.Contains(page, "\n.SS "+c.Name+"\n") {
				t.Errorf("command %s%s has no section in the man page", prefix, c.Name)
			}
			for _, f := range c.VisibleFlags() {
				if n := f.Names()[0]; n != "help" && !strings.Contains(page, `\fB--`+n+`\fP`) && !strings.Contains(page, `\fB--`+n+`,`) {
					t.Errorf("flag --%s of %s%s is not in the man page", n, prefix, c.Name)
				}
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("", newApp().Commands)
	if _, err := runCLI(t, "man", "extra"); err == nil {
		t.Error("dcmesh man extra: no error")
	}

	if _, err := exec.LookPath("man"); err != nil {
		t.Log("man(1) not installed: the page was not rendered")
		return
	}
	path := filepath.Join(t.TempDir(), "dcmesh.8")
	if err := os.WriteFile(path, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	// As lintian renders it (checks/documentation/manual.pm).
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("man --warnings: %v\n%s", err, stderr.String())
	}
}
