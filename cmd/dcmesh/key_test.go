package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// key generate --out - writes the private key, and nothing else, to
// standard output (no file named "-"); key public --in - reads it back.
func TestKeyGenerateToStdout(t *testing.T) {
	bin := dcmeshBinary(t)
	dir := t.TempDir()
	gen := exec.Command(bin, "key", "generate", "--out", "-")
	gen.Dir = dir
	var stderr strings.Builder
	gen.Stderr = &stderr
	key, err := gen.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("key generate --out -: %v, stderr %q", err, stderr.String())
	}
	if !regexp.MustCompile(`^[A-Za-z0-9+/]{43}=\n$`).Match(key) {
		t.Fatalf("stdout is not one key line: %q", key)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("key generate --out - created %s", entries[0].Name())
	}
	pub := exec.Command(bin, "key", "public", "--in", "-")
	pub.Stdin = strings.NewReader(string(key))
	fromStdin, err := pub.Output()
	if err != nil {
		t.Fatal(err)
	}
	// The same key as a file gives the same public key.
	file := filepath.Join(dir, "wg.key")
	if err := os.WriteFile(file, key, 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := runCLI(t, "key", "public", "--in", file)
	if err != nil || fromFile != string(fromStdin) || len(fromFile) != 45 {
		t.Errorf("key public: file %q (%v), stdin %q", fromFile, err, fromStdin)
	}
	if strings.Contains(string(fromStdin), strings.TrimSpace(string(key))) {
		t.Error("key public printed the private key")
	}
	bad := exec.Command(bin, "key", "public", "--in", "-")
	bad.Stdin = strings.NewReader("not a key\n")
	if out, err := bad.CombinedOutput(); err == nil || strings.Contains(string(out), "not a key") {
		t.Errorf("key public --in - with garbage: %v %q (must fail without echoing the input)", err, out)
	}
}
