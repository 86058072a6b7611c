package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// secret is one piece of key material and the forms it could leak in.
type secret struct {
	name  string // where it comes from, e.g. "site1 wg.key"
	forms [][]byte
}

func keyForms(raw []byte) [][]byte {
	return [][]byte{
		[]byte(base64.StdEncoding.EncodeToString(raw)),
		[]byte(base64.RawStdEncoding.EncodeToString(raw)),
		[]byte(base64.RawURLEncoding.EncodeToString(raw)),
		[]byte(hex.EncodeToString(raw)),
		[]byte(strings.ToUpper(hex.EncodeToString(raw))),
	}
}

// readSecrets collects every private key, identity key and gossip key under
// the CA directory and the sites' state directories.
func readSecrets(t *testing.T, m *testMesh, caDir string) []secret {
	t.Helper()
	var out []secret
	addBase64 := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, secret{name, keyForms(raw)})
	}
	addPEM := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return
		}
		k, err := trust.ParseKeyPEM(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		blk, _ := pem.Decode(b)
		forms := append(keyForms(k.Seed()), []byte(base64.StdEncoding.EncodeToString(blk.Bytes)))
		out = append(out, secret{name, forms})
	}
	addPEM("CA key", filepath.Join(caDir, "ca.key"))
	addBase64("gossip key", filepath.Join(caDir, "gossip.key"))
	for _, s := range m.sites {
		addBase64(s.name+" wg.key", filepath.Join(s.stateDir, "wg.key"))
		addBase64(s.name+" wg.key.next", filepath.Join(s.stateDir, "wg.key.next"))
		addPEM(s.name+" identity.key", filepath.Join(s.stateDir, "identity.key"))
	}
	return out
}

// A full run — bootstrap, mesh, status, health, metrics, a rotation, an
// emergency rotation, a leave — writes no private key, identity key, CA key
// or gossip key into any log line, CLI output, status, metrics or argv.
func TestNoSecretLeaks(t *testing.T) {
	requireTool(t, "curl", "ps")
	m, caDir := newGossipMesh(t, 3)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]
	s1.agentArgs = []string{"--metrics-addr", "127.0.0.1:9469", "--log-format", "json"}
	secrets := readSecrets(t, m, caDir)
	m.startAll()
	m.waitFullMesh(m.sites...)

	var outputs []string
	ps := func() {
		out, err := exec.Command("ps", "-eo", "args").Output()
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, "ps:\n"+string(out))
	}
	ps()
	for _, s := range m.sites {
		m.cli("status", "--json", "--config", s.cfgPath)
		m.cli("status", "--config", s.cfgPath)
		_, _ = s.health()
	}
	outputs = append(outputs, "metrics:\n"+s1.ns.Run(t, "curl", "-sf", "http://127.0.0.1:9469/metrics"))
	m.cli("rotate", "--wait", "--config", s1.cfgPath)
	secrets = append(secrets, readSecrets(t, m, caDir)...) // the new keys
	m.cli("rotate", "--emergency", "--wait", "--config", s2.cfgPath)
	secrets = append(secrets, readSecrets(t, m, caDir)...)
	ps()
	outputs = append(outputs, "metrics:\n"+s1.ns.Run(t, "curl", "-sf", "http://127.0.0.1:9469/metrics"))
	m.cli("leave", "--config", s3.cfgPath)
	waitFor(t, 10*time.Second, "site3 stops", func() error {
		if !s3.agent.Exited() {
			return os.ErrDeadlineExceeded
		}
		return nil
	})
	for _, s := range m.sites {
		_ = s.agent.Stop(10 * time.Second)
		outputs = append(outputs, s.name+" agent log:\n"+s.agent.Output())
	}
	outputs = append(outputs, m.transcript...)

	scanned := 0
	for _, o := range outputs {
		scanned += len(o)
		for _, sec := range secrets {
			for _, f := range sec.forms {
				if bytes.Contains([]byte(o), f) {
					head := o[:min(len(o), 60)]
					t.Errorf("%s appears in output %q… (form of %d bytes)", sec.name, strings.SplitN(head, "\n", 2)[0], len(f))
				}
			}
		}
	}
	t.Logf("searched %d bytes of logs, CLI output, status, health, metrics and argv for %d secrets in %d forms each: none found",
		scanned, len(secrets), len(secrets[0].forms))
	// The secret files themselves stay private.
	for _, s := range m.sites {
		for _, f := range []string{"wg.key", "identity.key", "gossip.key"} {
			if st, err := os.Stat(filepath.Join(s.stateDir, f)); err == nil && st.Mode().Perm() != 0o600 {
				t.Errorf("%s/%s has mode %04o", s.name, f, st.Mode().Perm())
			}
		}
	}
}
