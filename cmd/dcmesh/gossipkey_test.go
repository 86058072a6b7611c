package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

var gossipKeySealedLine = regexp.MustCompile(`gossip key [0-9a-f]{16} \(epoch \d+\) sealed to 1 sites \(fra1\)`)

// fakeGossipKeyAgent serves POST /v1/gossip-key with reply and records the
// request.
func fakeGossipKeyAgent(t *testing.T, reply control.GossipKeyReply) (string, *control.GossipKeyRequest) {
	t.Helper()
	got := &control.GossipKeyRequest{}
	mux := http.NewServeMux()
	control.Serve(mux, control.EndpointGossipKey, func(_ context.Context, in control.GossipKeyRequest) (control.GossipKeyReply, error) {
		*got = in
		return reply, nil
	})
	sock := filepath.Join(t.TempDir(), "control.sock")
	srv, err := control.Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return sock, got
}

// `gossip-key install` hands the file to the agent as it is, and words each
// outcome: complete (exit 0), incomplete naming every site not there yet
// and why (exit 1).
func TestGossipKeyInstallCLI(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gk.bundle")
	bundle := []byte("\x30\x03bundle bytes")
	if err := os.WriteFile(file, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	sock, got := fakeGossipKeyAgent(t, control.GossipKeyReply{Epoch: 7, KeyID: "0011223344556677", Result: control.GossipKeyComplete, Using: []string{"ams1", "fra1"}})
	out, code := runCLIWithin(t, 10*time.Second, "gossip-key", "install", "--file", file, "--wait", "--timeout", "20s", "--socket", sock)
	if code != 0 || !strings.Contains(out, "gossip key 0011223344556677 (epoch 7) in use by every live site (ams1, fra1)") {
		t.Errorf("complete: exit %d, %q", code, out)
	}
	if !bytes.Equal(got.Bundle, bundle) || !got.Wait || got.Timeout != 20*time.Second {
		t.Errorf("request: %+v", got)
	}
	sock, _ = fakeGossipKeyAgent(t, control.GossipKeyReply{Epoch: 7, KeyID: "0011223344556677", Result: control.GossipKeyIncomplete, Using: []string{"fra1"},
		Pending: map[string]string{"ams1": "does not hold key 0011223344556677 yet"}})
	out, code = runCLIWithin(t, 10*time.Second, "gossip-key", "install", "--file", file, "--wait", "--socket", sock)
	if code != 1 || !strings.Contains(out, "incomplete: using it: fra1; not yet: ams1 (does not hold key 0011223344556677 yet)") {
		t.Errorf("incomplete: exit %d, %q", code, out)
	}
	out, code = runCLIWithin(t, 10*time.Second, "gossip-key", "install", "--file", filepath.Join(t.TempDir(), "none"), "--socket", sock)
	if code != 1 || !strings.Contains(out, "--file") {
		t.Errorf("missing file: exit %d, %q", code, out)
	}
}

// `ca gossip-key rotate` seals to the sites the CA issued, and says so;
// a CA that issued nothing has nobody to seal to.
func TestCAGossipKeyRotateCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if out, code := runCLIWithin(t, 10*time.Second, "ca", "init", "--dir", dir); code != 0 {
		t.Fatal(out)
	}
	file := filepath.Join(t.TempDir(), "gk.bundle")
	out, code := runCLIWithin(t, 10*time.Second, "ca", "gossip-key", "rotate", "--dir", dir, "--out", file)
	if code != 1 || !strings.Contains(out, "no site to seal the gossip key to") {
		t.Errorf("empty CA: exit %d, %q", code, out)
	}
	if out, code := runCLIWithin(t, 10*time.Second, "ca", "issue", "--dir", dir, "--site", "fra1", "--prefix", "10.1.0.0/16", "--overlay", "10.255.0.1", "--out", filepath.Join(t.TempDir(), "b")); code != 0 {
		t.Fatal(out)
	}
	out, code = runCLIWithin(t, 10*time.Second, "ca", "gossip-key", "rotate", "--dir", dir, "--out", file)
	if code != 0 || !gossipKeySealedLine.MatchString(out) || !strings.Contains(out, "dcmesh gossip-key install --file "+file+" --wait") {
		t.Errorf("one site: exit %d, %q", code, out)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("bundle file: %v", err)
	}
}

// --json of both commands: one document of the documented shape, also for
// an incomplete rotation (and exit 1).
func TestGossipKeyJSON(t *testing.T) {
	sock, _ := fakeGossipKeyAgent(t, control.GossipKeyReply{Epoch: 7, KeyID: "0011223344556677", Result: control.GossipKeyIncomplete, Using: []string{"fra1"},
		Pending: map[string]string{"ams1": "does not hold key 0011223344556677 yet"}})
	file := filepath.Join(t.TempDir(), "gk.bundle")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runCLIWithin(t, 10*time.Second, "gossip-key", "install", "--file", file, "--wait", "--timeout", "90m", "--json", "--socket", sock)
	var r gossipKeyInstallJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Schema != 1 || r.Result != control.GossipKeyIncomplete || len(r.Using) != 1 || r.Pending["ams1"] == "" {
		t.Errorf("install --json: exit %d, %+v (%v) from %q", code, r, err, out)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	runCLIWithin(t, 10*time.Second, "ca", "init", "--dir", dir)
	runCLIWithin(t, 10*time.Second, "ca", "issue", "--dir", dir, "--site", "fra1", "--prefix", "10.1.0.0/16", "--overlay", "10.255.0.1", "--out", filepath.Join(t.TempDir(), "b"))
	out, code = runCLIWithin(t, 10*time.Second, "ca", "gossip-key", "rotate", "--dir", dir, "--out", file, "--json")
	var c caGossipKeyJSON
	if err := json.Unmarshal([]byte(out), &c); err != nil || code != 0 || c.Schema != 1 || len(c.KeyID) != 16 || c.Epoch == 0 || len(c.Recipients) != 1 || c.Skipped == nil || c.Out != file {
		t.Errorf("ca gossip-key rotate --json: exit %d, %+v (%v) from %q", code, c, err, out)
	}
}
