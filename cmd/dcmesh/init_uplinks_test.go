package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
)

// `init --endpoint` repeated configures one endpoint per uplink, the
// preferred first, each inside the certificate's underlay ranges; a refusal
// names --endpoint and the ranges and writes nothing.
func TestCLIInitUplinks(t *testing.T) {
	dir := t.TempDir()
	ca, bundle := filepath.Join(dir, "ca"), filepath.Join(dir, "fra1")
	if _, err := runCLI(t, "ca", "init", "--dir", ca); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "ca", "issue", "--dir", ca, "--site", "fra1", "--prefix", "10.1.0.0/16", "--overlay", "10.255.0.1",
		"--underlay", "192.0.2.0/24", "--underlay", "198.51.100.0/24", "--out", bundle); err != nil {
		t.Fatal(err)
	}
	initSite := func(eps ...string) (state, stdout, stderr string, code int) {
		state = filepath.Join(t.TempDir(), "state")
		args := []string{"init", "--bundle", bundle, "--state-dir", state, "--json"}
		for _, e := range eps {
			args = append(args, "--endpoint", e)
		}
		stdout, stderr, code = runBinary(t, args...)
		return state, stdout, stderr, code
	}

	t.Run("two uplinks", func(t *testing.T) {
		state, stdout, stderr, code := initSite("192.0.2.10:51820", "198.51.100.10:51820")
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var in initJSON
		decodeOne(t, "init", stdout, &in)
		if want := []string{"192.0.2.10:51820", "198.51.100.10:51820"}; !reflect.DeepEqual(in.Endpoints, want) {
			t.Errorf("init --json endpoints %v, want %v", in.Endpoints, want)
		}
		raw := readConfig(t, state)
		if !strings.Contains(raw, "\nendpoints:\n") || strings.Contains(raw, "\nendpoint:") {
			t.Errorf("configuration does not list endpoints:\n%s", raw)
		}
		cfg, err := config.Load(filepath.Join(state, "dcmesh.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:51820"), netip.MustParseAddrPort("198.51.100.10:51820")}
		if !reflect.DeepEqual(cfg.Endpoints, want) || cfg.ListenPort != 51820 {
			t.Errorf("loaded endpoints %v, listen port %d", cfg.Endpoints, cfg.ListenPort)
		}
	})
	t.Run("one uplink", func(t *testing.T) {
		state, stdout, stderr, code := initSite("198.51.100.10:4500")
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var in initJSON
		decodeOne(t, "init", stdout, &in)
		if !reflect.DeepEqual(in.Endpoints, []string{"198.51.100.10:4500"}) {
			t.Errorf("init --json endpoints %v", in.Endpoints)
		}
		if raw := readConfig(t, state); !strings.Contains(raw, "\nendpoint: \"198.51.100.10:4500\"\n") || strings.Contains(raw, "endpoints:") {
			t.Errorf("configuration:\n%s", raw)
		}
	})
	var tooMany []string
	for i := range config.MaxEndpoints + 1 {
		tooMany = append(tooMany, fmt.Sprintf("192.0.2.%d:51820", i+1))
	}
	for _, c := range []struct {
		name  string
		eps   []string
		hints []string
	}{
		{"second outside underlay", []string{"192.0.2.10:51820", "203.0.113.10:51820"},
			[]string{"--endpoint 203.0.113.10:51820 (the 2nd) is outside the underlay ranges of the certificate (192.0.2.0/24, 198.51.100.0/24)"}},
		{"twice", []string{"192.0.2.10:51820", "192.0.2.10:51820"}, []string{"--endpoint 192.0.2.10:51820 is given twice"}},
		{"too many", tooMany, []string{fmt.Sprintf("--endpoint is given %d times: a site announces at most %d", len(tooMany), config.MaxEndpoints)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			state, stdout, stderr, code := initSite(c.eps...)
			if code != 1 || stdout != "" {
				t.Errorf("exit %d, stdout %q", code, stdout)
			}
			for _, h := range c.hints {
				if !strings.Contains(stderr, h) {
					t.Errorf("stderr does not say %q: %s", h, stderr)
				}
			}
			if _, err := os.Stat(state); err == nil {
				t.Error("a refused init created the state directory")
			}
		})
	}
}

func readConfig(t *testing.T, state string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state, "dcmesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
