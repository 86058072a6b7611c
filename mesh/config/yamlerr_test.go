package config

import (
	"errors"
	"strings"
	"testing"
)

// yaml.v3's type errors ("cannot unmarshal !!str `main` into int") become
// field errors naming the field, the line and what to write instead.
func TestYAMLTypeErrorsNameTheField(t *testing.T) {
	base := "site: fra1\nprivate_key_file: /k\noverlay_address: 10.255.0.1/32\n"
	cases := []struct {
		name, yaml, field, msg string
	}{
		{"table by name", base + "routes:\n  table: main\n", "routes.table",
			`"main" (line 5): write the table's number: 254 for main (the default)`},
		{"prefixes not a list", base + "local_prefixes: 10.1.0.0/16\n", "local_prefixes", `"10.1.0.0/16" (line 4): write a list, e.g. [10.1.0.0/16]`},
		{"site a list", strings.Replace(base, "site: fra1", "site: [fra1]", 1), "site", "a list (line 1): write a single value, not a list"},
		{"routes a number", base + "routes: 5\n", "routes", `"5" (line 4): write a section of fields`},
		{"psk maybe", base + "rotation:\n  psk: maybe\n", "rotation.psk", `"maybe" (line 5): write true or false`},
		{"port a word", base + "listen_port: any\n", "listen_port", `"any" (line 4): write a UDP port`},
		{"nested unknown", base + "routes:\n  tabel: 3\n", "routes.tabel", "unknown field tabel (line 5): check its spelling and indentation"},
		{"peer prefixes a map", base + "peers:\n  - name: ams1\n    allowed_prefixes: {a: b}\n", "peers[0].allowed_prefixes", "a section (line 6): write a list of values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "/")
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.HasPrefix(fe.Msg, c.msg) {
				t.Fatalf("error %v; want field %s: %s", err, c.field, c.msg)
			}
			if strings.Contains(err.Error(), "unmarshal") || strings.Contains(err.Error(), "fileConfig") {
				t.Errorf("yaml.v3's text leaks: %v", err)
			}
		})
	}
	// Every problem at once, each placed.
	_, err := Parse([]byte(base+"listen_prot: 1\nroutes:\n  table: main\n"), "/")
	if err == nil || !strings.Contains(err.Error(), "listen_prot: unknown field listen_prot (line 4)") || !strings.Contains(err.Error(), "routes.table: \"main\" (line 6)") {
		t.Errorf("two problems: %v", err)
	}
}
