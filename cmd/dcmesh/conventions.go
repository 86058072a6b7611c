package main

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/urfave/cli/v2"
)

// exitUsage is the exit code of a command line dcmesh cannot run as typed
// (an unknown command or flag, a bad flag value, a missing flag, arguments
// a command does not take), as for most Unix tools and kubectl.
const exitUsage = 2

// usageError is one line saying what is wrong and where the help is, exit
// code 2: never the error twice, never the whole help on stdout. `health`
// exits 3 instead (unknown: the site was not checked), since its 2 means
// critical to a monitoring system.
func usageError(c *cli.Context, format string, args ...any) error {
	code := exitUsage
	if c != nil && c.Command != nil && c.Command.Name == "health" {
		code = exitNoAnswer
	}
	return cli.Exit(fmt.Sprintf(format, args...)+"\nRun '"+helpName(c)+" --help' for usage.", code)
}

// commandName is c's command as typed after "dcmesh", e.g. "ca issue"
// (main prefixes every error with "dcmesh: ").
func commandName(c *cli.Context) string {
	return strings.TrimPrefix(helpName(c), "dcmesh ")
}

// helpName is the command line of c's command, e.g. "dcmesh ca issue".
func helpName(c *cli.Context) string {
	if c != nil && c.Command != nil && c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return "dcmesh"
}

// applyConventions gives every command the CLI's conventions, on top of
// urfave/cli's parser: usage errors as usageError, unknown commands with
// a suggestion, positional arguments refused by the commands that take
// none, and required flags checked without printing the help.
func applyConventions(app *cli.App) {
	app.OnUsageError = onUsageError
	app.Action = unknownCommand(app.Commands)
	// Flags can be shared between commands (ca's --dir): note which are
	// required before any is changed.
	required := map[cli.Flag]bool{}
	var note func(cmds []*cli.Command)
	note = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			for _, f := range cmd.Flags {
				if rf, ok := f.(interface{ IsRequired() bool }); ok && rf.IsRequired() {
					required[f] = true
				}
			}
			note(cmd.Subcommands)
		}
	}
	note(app.Commands)
	for _, cmd := range app.Commands {
		applyCommandConventions(cmd, required)
	}
}

func applyCommandConventions(cmd *cli.Command, isRequired map[cli.Flag]bool) {
	cmd.OnUsageError = onUsageError
	if len(cmd.Subcommands) > 0 {
		if cmd.Action == nil {
			cmd.Action = unknownCommand(cmd.Subcommands)
		}
		for _, sub := range cmd.Subcommands {
			applyCommandConventions(sub, isRequired)
		}
		return
	}
	// No "help" subcommand under a command that has none: `rotate <TAB>`
	// offered "help h"; --help stays.
	cmd.HideHelpCommand = true
	var required []string
	for _, f := range cmd.Flags {
		if bf, ok := f.(*cli.BoolFlag); ok {
			bf.DisableDefaultText = true // "(default: false)" on every switch says nothing
		}
		if isRequired[f] {
			required = append(required, f.Names()[0])
			unrequire(f)
		}
	}
	before, action := cmd.Before, cmd.Action
	cmd.Before = func(c *cli.Context) error {
		for _, name := range required {
			if !c.IsSet(name) {
				return usageError(c, "%s needs --%s", commandName(c), name)
			}
		}
		if before != nil {
			return before(c)
		}
		return nil
	}
	if cmd.ArgsUsage == "" && action != nil {
		cmd.Action = func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError(c, "%s takes no arguments (got %q)", commandName(c), c.Args().First())
			}
			return action(c)
		}
	}
}

// unrequire clears Required: the check moves into the command's Before,
// since urfave/cli prints the whole help with a missing flag's error.
// Every urfave/cli flag type has the field (reflection: a flag type added
// by another command needs no case here).
func unrequire(f cli.Flag) {
	if v := reflect.ValueOf(f); v.Kind() == reflect.Pointer {
		if r := v.Elem().FieldByName("Required"); r.IsValid() && r.CanSet() && r.Kind() == reflect.Bool {
			r.SetBool(false)
		}
	}
}

// unknownCommand is the action of a command with subcommands: without an
// argument it shows the help (exit 0), with one it refuses it (exit 2),
// suggesting the closest command.
func unknownCommand(cmds []*cli.Command) cli.ActionFunc {
	return func(c *cli.Context) error {
		if !c.Args().Present() {
			if c.Command == nil || c.Command.HelpName == "" || c.Command.HelpName == c.App.HelpName {
				return cli.ShowAppHelp(c)
			}
			return cli.ShowSubcommandHelp(c)
		}
		name := c.Args().First()
		if name == "help" && c.Command.HelpName == c.App.HelpName { // dcmesh help [COMMAND]; the groups have their own
			topic := c.Args().Get(1)
			switch {
			case topic == "":
				return cli.ShowAppHelp(c)
			case c.App.Command(topic) != nil:
				// As `dcmesh TOPIC --help`, which sets the command up
				// (a group's help lists its subcommands).
				nc := cli.NewContext(c.App, nil, c)
				nc.Command = c.App.Command(topic)
				return nc.Command.Run(nc, topic, "--help")
			}
			name = topic
		}
		msg := fmt.Sprintf("unknown command %q", name)
		if sub := commandName(c); sub != "dcmesh" {
			msg = fmt.Sprintf("unknown command %q for %s", name, sub)
		}
		var names []string
		for _, cmd := range cmds {
			if !cmd.Hidden {
				names = append(names, cmd.Names()...)
			}
		}
		if s := closest(names, name); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return usageError(c, "%s", msg)
	}
}

// closest is the one of names nearest to name, if any is near: one that
// starts with it, or one within two edits.
func closest(names []string, name string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if name != "" && strings.HasPrefix(n, name) {
			return n
		}
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// goFlagName matches a flag as Go's flag package names it in its errors
// (one dash).
var goFlagName = regexp.MustCompile(`(^|[ :])-([A-Za-z0-9][A-Za-z0-9-]+)`)

// onUsageError rewords the flag package's errors: flags as they are typed
// (--jsn, not -jsn), a suggestion for an unknown one, one line.
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := goFlagName.ReplaceAllString(err.Error(), "$1--$2")
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		msg = "unknown flag " + name
		if c.Command != nil {
			var names []string
			for _, f := range c.Command.Flags {
				names = append(names, f.Names()...)
			}
			if s := closest(names, strings.TrimLeft(name, "-")); len(s) > 1 {
				msg += fmt.Sprintf(" (did you mean --%s?)", s)
			}
		}
	}
	return usageError(c, "%s", msg)
}

// durationValue is a duration flag's value in config.ParseDuration's syntax
// (days too: 365d, 1d12h): every duration flag of dcmesh is one.
type durationValue struct{ d time.Duration }

func (v *durationValue) Set(s string) error {
	d, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	v.d = d
	return nil
}

func (v *durationValue) String() string { return config.FormatDuration(v.d) }

// durationFlag is a duration flag with the default def; read it with
// durationOf.
func durationFlag(name, usage string, def time.Duration) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Usage: usage, Value: &durationValue{def}}
}

// durationOf is the value of a durationFlag.
func durationOf(c *cli.Context, name string) time.Duration {
	if v, ok := c.Generic(name).(*durationValue); ok {
		return v.d
	}
	panic("durationOf: --" + name + " is not a durationFlag")
}
