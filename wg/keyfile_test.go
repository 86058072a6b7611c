package wg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFileRoundTripAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wg.key")
	k, _ := GeneratePrivateKey()
	if err := WritePrivateKeyFile(path, k, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if got := string(raw); got != k.encode()+"\n" {
		t.Errorf("file is not in `wg genkey` format")
	}
	back, err := ReadPrivateKeyFile(path)
	if err != nil || !back.Equal(k) {
		t.Fatalf("read back: %v", err)
	}
	assertOnlyFiles(t, dir, "wg.key")
}

func TestKeyFileRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wg.key")
	k1, _ := GeneratePrivateKey()
	k2, _ := GeneratePrivateKey()
	if err := WritePrivateKeyFile(path, k1, false); err != nil {
		t.Fatal(err)
	}
	err := WritePrivateKeyFile(path, k2, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second write: %v, want ErrExist naming --force", err)
	}
	if back, _ := ReadPrivateKeyFile(path); !back.Equal(k1) {
		t.Fatal("refused write changed the file")
	}
	if err := WritePrivateKeyFile(path, k2, true); err != nil {
		t.Fatal(err)
	}
	if back, _ := ReadPrivateKeyFile(path); !back.Equal(k2) {
		t.Fatal("overwrite did not replace the key")
	}
}

// A crash between writing the temporary file and renaming it must leave the
// old key intact and no temporary file behind.
func TestKeyFileCrashBeforeRenameKeepsOldKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wg.key")
	k1, _ := GeneratePrivateKey()
	k2, _ := GeneratePrivateKey()
	if err := WritePrivateKeyFile(path, k1, false); err != nil {
		t.Fatal(err)
	}
	renameHook = func(string, string) error { return errors.New("injected crash") }
	t.Cleanup(func() { renameHook = os.Rename })
	if err := WritePrivateKeyFile(path, k2, true); err == nil {
		t.Fatal("write succeeded despite injected failure")
	}
	if back, err := ReadPrivateKeyFile(path); err != nil || !back.Equal(k1) {
		t.Fatalf("old key lost: %v", err)
	}
	assertOnlyFiles(t, dir, "wg.key")
}

func TestReadKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	k, _ := GeneratePrivateKey()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, path, want string
		corrupt          bool
	}{
		{"missing", filepath.Join(dir, "nope.key"), "dcmesh key generate --out", false},
		{"world readable", write("open.key", k.encode()+"\n", 0o644), "chmod 600", false},
		{"empty", write("empty.key", "", 0o600), "corrupt key file", true},
		{"truncated", write("trunc.key", k.encode()[:20], 0o600), "corrupt key file", true},
		{"garbage", write("garbage.key", "not a key at all, really not one\n", 0o600), "corrupt key file", true},
		{"huge", write("huge.key", strings.Repeat("A", 5000), 0o600), "larger than", true},
		{"zero", write("zero.key", strings.Repeat("A", 43)+"=\n", 0o600), "all zeros", true},
		{"directory", dir, "not a regular file", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadPrivateKeyFile(c.path)
			if err == nil {
				t.Fatal("read succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if errors.Is(err, ErrCorruptKeyFile) != c.corrupt {
				t.Errorf("errors.Is(ErrCorruptKeyFile) = %v, want %v", !c.corrupt, c.corrupt)
			}
			if strings.Contains(err.Error(), k.encode()) || strings.Contains(err.Error(), k.encode()[:20]) {
				t.Errorf("error leaks key material: %q", err)
			}
		})
	}
}

func assertOnlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}
