package wgtest

import (
	"os"
	"path/filepath"
	"testing"
)

// AssertMode checks that path exists with permission bits want (0600 for
// every secret the tree writes), reporting a failure on t.
func AssertMode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", filepath.Base(path), got, want)
	}
}
