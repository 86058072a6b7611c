package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// runBinary runs the built dcmesh as a user does and returns stdout,
// stderr and the exit code.
func runBinary(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(dcmeshBinary(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("dcmesh %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), 0
}

// A command line dcmesh cannot run as typed gets one line saying why and
// where the help is, on stderr, exit 2: not the error twice and the whole
// help on stdout (urfave/cli's default), not exit 3 for an unknown command,
// and arguments a command does not take are refused, not ignored.
func TestCLIUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string // the first line of stderr
		help string // the command named in the hint
	}{
		{[]string{"status", "--jsn"}, "dcmesh: unknown flag --jsn (did you mean --json?)", "dcmesh status"},
		{[]string{"frobnicate"}, `dcmesh: unknown command "frobnicate"`, "dcmesh"},
		{[]string{"rotat"}, `dcmesh: unknown command "rotat" (did you mean "rotate"?)`, "dcmesh"},
		{[]string{"stauts"}, `dcmesh: unknown command "stauts" (did you mean "status"?)`, "dcmesh"},
		{[]string{"ca", "isue"}, `dcmesh: unknown command "isue" for ca (did you mean "issue"?)`, "dcmesh ca"},
		{[]string{"help", "stauts"}, `dcmesh: unknown command "stauts" (did you mean "status"?)`, "dcmesh"},
		{[]string{"rotate", "help"}, `dcmesh: rotate takes no arguments (got "help")`, "dcmesh rotate"},
		{[]string{"status", "extra-arg"}, `dcmesh: status takes no arguments (got "extra-arg")`, "dcmesh status"},
		{[]string{"leave", "now"}, `dcmesh: leave takes no arguments (got "now")`, "dcmesh leave"},
		{[]string{"key", "generate", "--out", "x", "k"}, `dcmesh: key generate takes no arguments (got "k")`, "dcmesh key generate"},
		{[]string{"ca", "issue", "--dir", "x"}, "dcmesh: ca issue needs --site", "dcmesh ca issue"},
		{[]string{"ca", "revoke", "--site", "x", "--out", "y"}, "dcmesh: ca revoke needs --dir", "dcmesh ca revoke"}, // --dir is shared by ca's commands
		{[]string{"ca", "issue", "--site", "x"}, "dcmesh: ca issue needs --dir", "dcmesh ca issue"},
		{[]string{"ca", "issue", "--valid", "1y"}, `dcmesh: invalid value "1y" for flag --valid: "1y" is not a duration: write a number with a unit d, h, m, s or ms, e.g. 365d, 1d12h, 90m or 10s`, "dcmesh ca issue"},
		{[]string{"rotate", "--timeout"}, "dcmesh: flag needs an argument: --timeout", "dcmesh rotate"},
		{[]string{"completion", "fish"}, "dcmesh: completion: say bash or zsh, e.g. source <(dcmesh completion bash)", "dcmesh completion"},
		{[]string{"version", "now"}, `dcmesh: version takes no arguments (got "now")`, "dcmesh version"},
	}
	for _, c := range cases {
		stdout, stderr, code := runBinary(t, c.args...)
		want := c.want + "\nRun '" + c.help + " --help' for usage.\n"
		if code != exitUsage || stdout != "" || stderr != want {
			t.Errorf("dcmesh %s: exit %d, stdout %q, stderr %q; want exit 2, no stdout, stderr %q", strings.Join(c.args, " "), code, stdout, stderr, want)
		}
	}
	// health's 2 means critical: a check that cannot run as typed is
	// unknown (3), as examples/check-dcmesh.sh maps it.
	if stdout, stderr, code := runBinary(t, "health", "--timout", "10s"); code != 3 || stdout != "" ||
		stderr != "dcmesh: unknown flag --timout (did you mean --timeout?)\nRun 'dcmesh health --help' for usage.\n" {
		t.Errorf("health --timout: exit %d, %q, %q; want exit 3", code, stdout, stderr)
	}
	// Without a subcommand, a group shows its help, as before; so does
	// help.
	for _, args := range [][]string{{"ca"}, {"help", "ca"}, {"ca", "help"}, {"help"}} {
		if stdout, _, code := runBinary(t, args...); code != 0 || !strings.Contains(stdout, "issue") && !strings.Contains(stdout, "COMMANDS") {
			t.Errorf("dcmesh %s: exit %d, %q", strings.Join(args, " "), code, stdout)
		}
	}
	if stdout, _, code := runBinary(t, "help", "rotate"); code != 0 || !strings.Contains(stdout, "dcmesh rotate - ") {
		t.Errorf("dcmesh help rotate: exit %d, %q", code, stdout)
	}
	// A command without subcommands offers none to completion (it offered
	// "help h").
	if stdout, _, _ := runBinary(t, "rotate", "--generate-bash-completion"); strings.TrimSpace(stdout) != "" {
		t.Errorf("rotate <TAB> offers %q", stdout)
	}
}

// Every duration flag takes days (one parser, config.ParseDuration).
func TestCLIDurationFlagsTakeDays(t *testing.T) {
	var found []string
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				if _, ok := f.(*cli.DurationFlag); ok {
					t.Errorf("%s%s --%s is a cli.DurationFlag: use durationFlag (days too)", prefix, c.Name, f.Names()[0])
				}
				if g, ok := f.(*cli.GenericFlag); ok {
					if _, ok := g.Value.(*durationValue); ok {
						found = append(found, prefix+c.Name+" --"+g.Name)
					}
				}
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("", newApp().Commands)
	if len(found) < 7 { // timeout of status, health, leave, revoke, down, rotate; valid of ca issue
		t.Errorf("duration flags: %v", found)
	}
	// Through the parser: a --timeout in days reaches the request.
	app := newApp()
	var got time.Duration
	for _, c := range app.Commands {
		if c.Name == "status" {
			c.Action = func(c *cli.Context) error { got = durationOf(c, "timeout"); return nil }
		}
	}
	if err := app.Run([]string{"dcmesh", "status", "--timeout", "1d12h"}); err != nil || got != 36*time.Hour {
		t.Errorf("status --timeout 1d12h: %v, %v", got, err)
	}
}

// Help texts show each default once and name every value's placeholder.
func TestCLIHelpShowsDefaultsOnce(t *testing.T) {
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string{}, path...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(p, c.Subcommands)
				continue
			}
			out, err := runCLI(t, append(p, "--help")...)
			if err != nil {
				t.Fatalf("%v --help: %v", p, err)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Count(line, "(default") > 1 {
					t.Errorf("dcmesh %s --help shows a default twice: %s", strings.Join(p, " "), strings.TrimSpace(line))
				}
				if strings.Contains(line, " value ") || strings.Contains(line, "(default: false)") {
					t.Errorf("dcmesh %s --help: %s", strings.Join(p, " "), strings.TrimSpace(line))
				}
			}
		}
	}
	walk(nil, newApp().Commands)
}
