package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// decodeOne decodes stdout as exactly one JSON document of the shape of
// want, refusing fields the shape does not document.
func decodeOne(t *testing.T, what, stdout string, into any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s --json: %v\n%s", what, err, stdout)
	}
	if dec.More() {
		t.Fatalf("%s --json: more than one document:\n%s", what, stdout)
	}
	// Lists are [], never null: a script can iterate without a check.
	if strings.Contains(stdout, "null") {
		t.Errorf("%s --json has a null: %s", what, stdout)
	}
}

// ca issue, ca revoke and init print one documented JSON document each
// with --json, through the binary.
func TestCLIJSONOperatorCommands(t *testing.T) {
	dir := t.TempDir()
	ca, bundle, state := filepath.Join(dir, "ca"), filepath.Join(dir, "fra1"), filepath.Join(dir, "state")
	if _, err := runCLI(t, "ca", "init", "--dir", ca); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runBinary(t, "ca", "issue", "--dir", ca, "--site", "fra1", "--prefix", "10.1.0.0/16", "--prefix", "fd00:1::/48",
		"--overlay", "10.255.0.1", "--underlay", "192.0.2.0/24", "--valid", "90d", "--out", bundle, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("ca issue --json: exit %d, %s", code, stderr)
	}
	var is issueJSON
	decodeOne(t, "ca issue", stdout, &is)
	if is.Schema != 1 || is.Site != "fra1" || is.Serial == "" || is.Overlay != "10.255.0.1" || is.Bundle != bundle || is.AllowDefault ||
		!reflect.DeepEqual(is.Prefixes, []string{"10.1.0.0/16", "fd00:1::/48"}) || !reflect.DeepEqual(is.Underlay, []string{"192.0.2.0/24"}) ||
		is.NotAfter.Sub(is.NotBefore).Hours() < 90*24 || is.NotAfter.Sub(is.NotBefore).Hours() > 90*24+1 {
		t.Errorf("ca issue --json: %+v", is)
	}

	stdout, stderr, code = runBinary(t, "init", "--bundle", bundle, "--state-dir", state, "--endpoint", "192.0.2.10:51820", "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("init --json: exit %d, %s", code, stderr)
	}
	var in initJSON
	decodeOne(t, "init", stdout, &in)
	cfg := filepath.Join(state, "dcmesh.yaml")
	if in.Schema != 1 || in.Site != "fra1" || len(in.PublicKey) != 44 || in.Config != cfg || in.StateDir != state ||
		!reflect.DeepEqual(in.Endpoints, []string{"192.0.2.10:51820"}) || in.Next != "dcmesh agent --config "+cfg {
		t.Errorf("init --json: %+v", in)
	}

	// An error with --json: non-zero, nothing on stdout, the message on stderr.
	stdout, stderr, code = runBinary(t, "ca", "issue", "--dir", ca, "--site", "ams1", "--prefix", "10.1.0.0/16", "--overlay", "10.255.0.2",
		"--out", filepath.Join(dir, "ams1"), "--json")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "overlaps") {
		t.Errorf("ca issue --json refused: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	crl := filepath.Join(dir, "crl.pem")
	stdout, stderr, code = runBinary(t, "ca", "revoke", "--dir", ca, "--site", "fra1", "--out", crl, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("ca revoke --json: exit %d, %s", code, stderr)
	}
	var rv caRevokeJSON
	decodeOne(t, "ca revoke", stdout, &rv)
	if rv.Schema != 1 || rv.Site != "fra1" || rv.Number != "1" || !reflect.DeepEqual(rv.Serials, []string{is.Serial}) || rv.Out != crl {
		t.Errorf("ca revoke --json: %+v (issued serial %s)", rv, is.Serial)
	}

	stdout, stderr, code = runBinary(t, "ca", "list", "--dir", ca, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("ca list --json: exit %d, %s", code, stderr)
	}
	var ls caListJSON
	decodeOne(t, "ca list", stdout, &ls)
	if ls.Schema != 1 || len(ls.Certificates) != 1 || ls.Certificates[0].Serial != is.Serial || ls.Certificates[0].State != "revoked" ||
		!reflect.DeepEqual(ls.Certificates[0].Prefixes, is.Prefixes) {
		t.Errorf("ca list --json: %+v (issued serial %s, revoked)", ls, is.Serial)
	}

}

// fakeAgent serves the control API's rotate, revoke, leave and down on a
// socket, answering as an agent would.
func fakeAgent(t *testing.T, rotate func(control.RotateRequest) (control.RotateReply, error)) string {
	t.Helper()
	mux := http.NewServeMux()
	control.Serve(mux, control.EndpointRotate, func(_ context.Context, r control.RotateRequest) (control.RotateReply, error) { return rotate(r) })
	control.Serve(mux, control.EndpointRevoke, func(context.Context, control.RevokeRequest) (control.RevokeReply, error) {
		return control.RevokeReply{Number: "7", Revoked: 2}, nil
	})
	control.Serve(mux, control.EndpointLeave, func(context.Context, control.Empty) (control.Empty, error) { return control.Empty{}, nil })
	control.Serve(mux, control.EndpointDown, func(context.Context, control.DownRequest) (control.Empty, error) { return control.Empty{}, nil })
	sock := filepath.Join(t.TempDir(), "control.sock")
	srv, err := control.Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return sock
}

// rotate, revoke, leave and down print one documented JSON document each
// with --json, through the binary; an agent's refusal is an error on
// stderr with a non-zero exit, as without --json.
func TestCLIJSONAgentCommands(t *testing.T) {
	var refuse bool
	sock := fakeAgent(t, func(r control.RotateRequest) (control.RotateReply, error) {
		switch {
		case refuse:
			return control.RotateReply{}, errors.New("a rotation is already under way (epoch 4)")
		case r.Wait:
			return control.RotateReply{Epoch: 4, PublicKey: "K", Result: control.RotateIncomplete, CutOver: []string{"ams1"},
				Missing: []string{"par1"}, Pending: map[string]string{"par1": "no handshake under the new key"}}, nil
		}
		return control.RotateReply{Epoch: 4, PublicKey: "K", Result: control.RotateStarted}, nil
	})
	var rot rotateJSON
	stdout, stderr, code := runBinary(t, "rotate", "--socket", sock, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("rotate --json: exit %d, %s", code, stderr)
	}
	decodeOne(t, "rotate", stdout, &rot)
	if want := (rotateJSON{Schema: 1, Epoch: 4, PublicKey: "K", Result: "started", CutOver: []string{}, Missing: []string{}, Pending: map[string]string{}}); !reflect.DeepEqual(rot, want) {
		t.Errorf("rotate --json: %+v, want %+v", rot, want)
	}
	// Incomplete: the document, and exit 1 as without --json.
	stdout, _, code = runBinary(t, "rotate", "--socket", sock, "--wait", "--timeout", "1m", "--json")
	rot = rotateJSON{}
	decodeOne(t, "rotate --wait", stdout, &rot)
	if code != 1 || rot.Result != "incomplete" || !reflect.DeepEqual(rot.Missing, []string{"par1"}) || rot.Pending["par1"] == "" {
		t.Errorf("rotate --wait --json, incomplete: exit %d, %+v", code, rot)
	}
	refuse = true
	if stdout, stderr, code := runBinary(t, "rotate", "--socket", sock, "--json"); code != 1 || stdout != "" || !strings.Contains(stderr, "already under way") {
		t.Errorf("rotate --json refused: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	crl := filepath.Join(t.TempDir(), "crl.pem")
	if err := os.WriteFile(crl, []byte("list"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, code = runBinary(t, "revoke", "--in", crl, "--socket", sock, "--json")
	var rv revokeJSON
	decodeOne(t, "revoke", stdout, &rv)
	if code != 0 || rv != (revokeJSON{Schema: 1, Number: "7", Revoked: 2}) {
		t.Errorf("revoke --json: exit %d, %+v", code, rv)
	}

	stdout, _, code = runBinary(t, "leave", "--socket", sock, "--json")
	var lv leaveJSON
	decodeOne(t, "leave", stdout, &lv)
	if code != 0 || lv != (leaveJSON{Schema: 1, Result: "left", Next: "systemctl disable --now dcmesh"}) {
		t.Errorf("leave --json: exit %d, %+v", code, lv)
	}

	stdout, _, code = runBinary(t, "down", "--socket", sock, "--json")
	var dn downJSON
	decodeOne(t, "down", stdout, &dn)
	if code != 0 || dn.Schema != 1 || dn.Result != "stopping" || dn.Purge {
		t.Errorf("down --json: exit %d, %+v", code, dn)
	}
	stdout, _, code = runBinary(t, "down", "--socket", filepath.Join(t.TempDir(), "none.sock"), "--json")
	dn = downJSON{}
	decodeOne(t, "down, no agent", stdout, &dn)
	if code != 0 || dn.Result != "not_running" {
		t.Errorf("down --json without an agent: exit %d, %+v", code, dn)
	}
}

// leave tells the user about the enabled unit: it would rejoin at boot.
func TestLeaveSaysDisableTheUnit(t *testing.T) {
	sock := fakeAgent(t, nil)
	stdout, _, code := runBinary(t, "leave", "--socket", sock)
	if code != 0 || !strings.Contains(stdout, "left the mesh") || !strings.Contains(stdout, "run: systemctl disable --now dcmesh") ||
		!bytes.Contains([]byte(stdout), []byte("next boot")) {
		t.Errorf("leave: exit %d, %q", code, stdout)
	}
}

// Each example in docs/CLI.md decodes into the shape its command prints,
// field for field: the page cannot drift from the code.
func TestCLIDocJSONExamples(t *testing.T) {
	raw, err := os.ReadFile("../../docs/CLI.md")
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string]any{
		"dcmesh rotate --json": &rotateJSON{}, "dcmesh ca issue --json": &issueJSON{}, "dcmesh ca revoke --json": &caRevokeJSON{},
		"dcmesh revoke --json": &revokeJSON{}, "dcmesh init --json": &initJSON{}, "dcmesh leave --json": &leaveJSON{}, "dcmesh down --json": &downJSON{},
		"dcmesh status --json`, `dcmesh health --json": &control.Health{},
		"dcmesh ca list --json":                        &caListJSON{}, "dcmesh renew --json": &renewJSON{},
		"dcmesh ca gossip-key rotate --json": &caGossipKeyJSON{}, "dcmesh gossip-key install --json": &gossipKeyInstallJSON{},
		"dcmesh drain --json`, `dcmesh undrain --json": &drainJSON{},
	}
	seen := map[string]bool{}
	for _, section := range strings.Split(string(raw), "\n### `")[1:] {
		title, body, _ := strings.Cut(section, "`\n")
		shape, ok := shapes[title]
		if !ok {
			t.Errorf("docs/CLI.md section %q: no shape for it in the test", title)
			continue
		}
		_, rest, ok := strings.Cut(body, "```json\n")
		example, _, _ := strings.Cut(rest, "```")
		if !ok {
			t.Errorf("docs/CLI.md %s: no example", title)
			continue
		}
		dec := json.NewDecoder(strings.NewReader(example))
		dec.DisallowUnknownFields()
		if err := dec.Decode(shape); err != nil {
			t.Errorf("docs/CLI.md %s: the example does not decode: %v", title, err)
		}
		// And every field of the shape is in the example (health's are
		// docs/STATUS.md's business).
		fields := reflect.TypeOf(shape).Elem()
		for i := range fields.NumField() * btoi(fields.PkgPath() != reflect.TypeOf(control.Health{}).PkgPath()) {
			name, _, _ := strings.Cut(fields.Field(i).Tag.Get("json"), ",")
			if name == "" {
				continue // an embedded wire type: its fields are its own docs' business
			}
			if !strings.Contains(example, `"`+name+`"`) {
				t.Errorf("docs/CLI.md %s: the example lacks %q", title, name)
			}
		}
		seen[title] = true
	}
	for title := range shapes {
		if !seen[title] {
			t.Errorf("docs/CLI.md has no section %q", title)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
