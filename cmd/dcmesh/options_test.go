package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/urfave/cli/v2"
)

// Every option the libraries name in their errors maps to a flag that one of
// the commands has.
func TestCLIOptionFlagsExist(t *testing.T) {
	var flags []string
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				for _, n := range f.Names() {
					flags = append(flags, "--"+n)
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(newApp().Commands)
	for option, flag := range optionFlags {
		if !slices.Contains(flags, flag) {
			t.Errorf("option %s maps to %s, which no command has", option, flag)
		}
	}
}

// The libraries' option errors reach the user with the flags' names; the
// flags' values are parsed (and refused) here, before the libraries see
// them.
func TestCLIOptionErrorsNameFlags(t *testing.T) {
	now := time.Now()
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Init(caDir, "prod", now); err != nil {
		t.Fatal(err)
	}
	issue := func(extra ...string) []string {
		args := []string{"ca", "issue", "--dir", caDir, "--out", filepath.Join(t.TempDir(), "b")}
		for _, kv := range [][2]string{{"--site", "fra1"}, {"--prefix", "10.1.0.0/16"}, {"--overlay", "10.255.0.1"}} {
			if !slices.Contains(extra, kv[0]) {
				args = append(args, kv[0], kv[1])
			}
		}
		return append(args, extra...)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	out, err := runCLI(t, "ca", "issue", "--dir", caDir, "--site", "fra1", "--prefix", " 10.1.0.0/16 ", "--prefix", "fd00:1::/48 ",
		"--overlay", " 10.255.0.1 ", "--underlay", "192.0.2.0/24", "--out", bundle)
	if err != nil || !strings.Contains(out, "for [10.1.0.0/16 fd00:1::/48]") {
		t.Fatalf("spaces around values: %v\n%s", err, out)
	}
	initArgs := func(extra ...string) []string {
		args := []string{"init", "--bundle", bundle, "--state-dir", filepath.Join(t.TempDir(), "state")}
		if !slices.Contains(extra, "--endpoint") {
			args = append(args, "--endpoint", "192.0.2.10:51820")
		}
		return append(args, extra...)
	}
	for _, c := range []struct {
		name  string
		args  []string
		hints []string
	}{
		{"bad cluster", []string{"ca", "init", "--dir", filepath.Join(t.TempDir(), "ca2"), "--cluster", "Prod_1"}, []string{"--cluster", "Prod_1"}},
		{"bad site", issue("--site", "Fra_1"), []string{"--site", "Fra_1"}},
		{"not a prefix", issue("--prefix", "10.1.0.0"), []string{"--prefix", "not a CIDR prefix"}},
		{"host bits", issue("--prefix", "10.1.2.3/16"), []string{"--prefix", "host bits", "10.1.0.0/16"}},
		{"default route", issue("--prefix", "0.0.0.0/0"), []string{"--prefix", "default route", "--allow-default"}},
		{"bad overlay", issue("--overlay", "10.255.0.300"), []string{"--overlay", "10.255.0.300"}},
		{"overlay is a prefix", issue("--overlay", "10.255.0.1/32"), []string{"--overlay"}},
		{"bad underlay", issue("--underlay", "192.0.2.1/24"), []string{"--underlay", "host bits"}},
		{"too short", issue("--valid", "1ms"), []string{"--valid 1ms: too short: give a lifetime of at least 1s, e.g. 365d"}},
		{"negative", issue("--valid", "-5h"), []string{"--valid -5h: too short: give a lifetime of at least 1s"}},
		{"not a CA dir", []string{"ca", "revoke", "--dir", t.TempDir(), "--site", "fra1", "--out", filepath.Join(t.TempDir(), "crl")}, []string{"--dir", "not a CA directory"}},
		{"host name endpoint", initArgs("--endpoint", "fra1.example.net:51820"), []string{"--endpoint", "host names are not resolved"}},
		{"endpoint without port", initArgs("--endpoint", "192.0.2.10"), []string{"--endpoint", "IP:PORT", "host names are not resolved"}},
		{"endpoint port zero", initArgs("--endpoint", "192.0.2.10:0"), []string{"--endpoint", "host names are not resolved"}},
		{"unspecified endpoint", initArgs("--endpoint", "0.0.0.0:51820"), []string{"--endpoint", "host names are not resolved"}},
		{"endpoint outside underlay", initArgs("--endpoint", "198.51.100.7:51820"), []string{"--endpoint 198.51.100.7:51820", "outside the underlay"}},
		{"gossip address", initArgs("--gossip-addr", "gossip.example:7946"), []string{"--gossip-addr", "host names are not resolved"}},
		{"gossip address outside underlay", initArgs("--gossip-addr", "198.51.100.7:7946"),
			[]string{"--gossip-addr 198.51.100.7:7946 is outside the underlay ranges of the certificate (192.0.2.0/24): give an address in them"}},
		{"join", initArgs("--join", "seed.example:7946"), []string{"--join", "host names are not resolved"}},
		{"no bundle", []string{"init", "--bundle", t.TempDir(), "--state-dir", filepath.Join(t.TempDir(), "s"), "--endpoint", "192.0.2.10:51820"},
			[]string{"--bundle", config.CACertFile, "dcmesh ca issue --out"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := runCLI(t, c.args...)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, h := range c.hints {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error does not say %q: %v", h, err)
				}
			}
		})
	}
	// A refused init wrote nothing; the corrected one works.
	state := filepath.Join(t.TempDir(), "state")
	if _, err := runCLI(t, "init", "--bundle", bundle, "--state-dir", state, "--endpoint", "192.0.2.10:51820", "--join", "seed.example:7946"); err == nil {
		t.Fatal("accepted a host name seed")
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("a refused init created the state directory")
	}
	if _, err := runCLI(t, "init", "--bundle", bundle, "--state-dir", state, "--endpoint", "192.0.2.10:51820", "--join", "192.0.2.20:7946"); err != nil {
		t.Errorf("corrected init: %v", err)
	}
}
