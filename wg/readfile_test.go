package wg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hangBound is how long a read may take before the test calls it a hang.
// The reads below return in microseconds (an open, an fstat); the bound is
// generous because the machine running the tests may be loaded, and a FIFO
// opened without O_NONBLOCK blocks forever, so any bound tells them apart.
const hangBound = 2 * time.Second

// specialFile creates, in a fresh directory, the kind of non-regular or
// oversized file the readers must refuse, and returns its path.
type specialFile struct {
	name string
	make func(t *testing.T) string
	want []string // in the error, besides the path
	is   error
}

func specialFiles() []specialFile {
	return []specialFile{
		{"fifo", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { releaseFIFO(p) })
			return p
		}, []string{"FIFO"}, ErrNotRegularFile},
		{"directory", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "dir")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"a directory", "not a regular file"}, ErrNotRegularFile},
		{"char device", func(t *testing.T) string { return "/dev/zero" }, []string{"character device"}, ErrNotRegularFile},
		{"sparse 1 GB", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "sparse")
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 30); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"larger than"}, ErrFileTooLarge},
	}
}

// releaseFIFO unblocks a reader stuck in open(2) on the FIFO (what a reader
// without O_NONBLOCK does), so that a failing test does not leak it.
func releaseFIFO(p string) {
	if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

// callWithin runs read and fails the test if it has not returned within
// hangBound.
func callWithin(t *testing.T, read func() error) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- read() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(hangBound):
		t.Fatalf("still reading after %v: it hangs", hangBound)
		return 0, nil
	}
}

// Every reader of configuration, key and state files refuses a FIFO, a
// directory, a character device and a huge sparse file at once, naming the
// file, instead of blocking (FIFO), reading forever (/dev/zero) or reading a
// gigabyte.
func TestReadersRefuseSpecialFiles(t *testing.T) {
	withKey, _, _ := rotStore(t)
	readers := []struct {
		name  string
		read  func(path string) error
		large bool // refuses a large file as ErrCorruptKeyFile rather than ErrFileTooLarge
	}{
		{"ReadRegularFile", func(p string) error { _, err := ReadRegularFile(p, 1<<20); return err }, false},
		{"ReadStateFile", func(p string) error { _, err := ReadStateFile(p, 1<<20); return err }, false},
		{"ReadSecretFile", func(p string) error { _, err := ReadSecretFile(p, 1024); return err }, true},
		{"ReadPrivateKeyFile", func(p string) error { _, err := ReadPrivateKeyFile(p); return err }, true},
		{"LoadPresharedKeys", func(p string) error { _, err := LoadPresharedKeys(p); return err }, true},
		{"KeyStore.Load key", func(p string) error {
			_, _, _, err := NewKeyStore(p, filepath.Join(t.TempDir(), "rotation.json")).Load()
			return err
		}, true},
		{"KeyStore.Load state", func(p string) error {
			_, _, _, err := NewKeyStore(withKey.KeyPath, p).Load()
			return err
		}, false},
	}
	var slowest time.Duration
	for _, r := range readers {
		for _, sf := range specialFiles() {
			t.Run(r.name+"/"+sf.name, func(t *testing.T) {
				p := sf.make(t)
				took, err := callWithin(t, func() error { return r.read(p) })
				slowest = max(slowest, took)
				if err == nil {
					t.Fatal("accepted")
				}
				for _, w := range append([]string{p}, sf.want...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not say %q: %v", w, err)
					}
				}
				if !errors.Is(err, sf.is) {
					t.Errorf("errors.Is(%v) is false: %v", sf.is, err)
				}
				if sf.is == ErrFileTooLarge && r.large && !errors.Is(err, ErrCorruptKeyFile) {
					t.Errorf("a huge key file is not ErrCorruptKeyFile: %v", err)
				}
			})
		}
	}
	t.Logf("slowest refusal: %v", slowest)
}

// The readers still read what they should: small regular files, and the
// bound is exact.
func TestReadRegularFileBounds(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func(string, int64) ([]byte, error){ReadRegularFile, ReadStateFile} {
		if b, err := read(p, 5); err != nil || string(b) != "12345" {
			t.Errorf("at the bound: %q %v", b, err)
		}
		if _, err := read(p, 4); !errors.Is(err, ErrFileTooLarge) || !strings.Contains(err.Error(), p) {
			t.Errorf("over the bound: %v", err)
		}
		if _, err := read(filepath.Join(dir, "missing"), 5); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("missing: %v", err)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadStateFile(empty, 10); err != nil || len(b) != 0 {
		t.Errorf("empty: %q %v", b, err)
	}
}

// A file that grows between the fstat and the read is still cut at the
// bound (readBounded, fed by a file whose size was taken as 0).
func TestReadBoundedStopsAtTheBound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(strings.Repeat("x", 10000)), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readBounded(f, p, 0, 4096); !errors.Is(err, ErrFileTooLarge) {
		t.Fatalf("grown file: %v", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if b, err := readBounded(f, p, 0, 10000); err != nil || len(b) != 10000 {
		t.Fatalf("grown file within the bound: %d bytes, %v", len(b), err)
	}
}

// symlinkTo makes link point at a new regular file holding content, and
// returns the target's path.
func symlinkTo(t *testing.T, link string, content []byte) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "real-"+filepath.Base(link))
	if err := os.WriteFile(target, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return target
}

// assertSymlinkRefusal checks the error names the link, its target, and
// the way out.
func assertSymlinkRefusal(t *testing.T, err error, link, target string) {
	t.Helper()
	if !errors.Is(err, ErrSymlink) {
		t.Fatalf("not refused as a symlink: %v", err)
	}
	for _, w := range []string{link, "to " + target, "retired private key", "point the configuration at the real file"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q: %v", w, err)
		}
	}
}

// Key and state files that are symbolic links are refused when read: dcmesh
// replaces them by rename, which would leave the retired key in the link's
// target. Files dcmesh only reads may be links.
func TestReadersRefuseSymlinks(t *testing.T) {
	k := mustKey(t)
	keyText := []byte(k.encode() + "\n")
	dir := t.TempDir()
	link := filepath.Join(dir, "wg.key")
	target := symlinkTo(t, link, keyText)
	for name, read := range map[string]func() error{
		"ReadPrivateKeyFile": func() error { _, err := ReadPrivateKeyFile(link); return err },
		"ReadSecretFile":     func() error { _, err := ReadSecretFile(link, 1024); return err },
		"ReadStateFile":      func() error { _, err := ReadStateFile(link, 1024); return err },
		"LoadPresharedKeys":  func() error { _, err := LoadPresharedKeys(link); return err },
		"KeyStore.Load": func() error {
			_, _, _, err := NewKeyStore(link, filepath.Join(dir, "rotation.json")).Load()
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := read()
			assertSymlinkRefusal(t, err, link, target)
			if strings.Contains(err.Error(), k.encode()) {
				t.Error("the error holds the key")
			}
		})
	}
	if b, err := ReadRegularFile(link, 1024); err != nil || string(b) != string(keyText) {
		t.Errorf("ReadRegularFile does not follow a link: %v", err)
	}
	// A dangling link is a link, not a missing file.
	dangling := filepath.Join(dir, "dangling.key")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKeyFile(dangling); !errors.Is(err, ErrSymlink) {
		t.Errorf("dangling link: %v", err)
	}
}

// Writes refuse to replace a link (or anything but a regular file), and
// leave both the link and its target as they were.
func TestWritesRefuseSymlinks(t *testing.T) {
	old, next := mustKey(t), mustKey(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "wg.key")
	target := symlinkTo(t, link, []byte(old.encode()+"\n"))
	writes := map[string]func() error{
		"WriteFileAtomic":     func() error { return WriteFileAtomic(link, []byte("new"), 0o600) },
		"WritePrivateKeyFile": func() error { return WritePrivateKeyFile(link, next, true) },
		"SavePresharedKeys":   func() error { return SavePresharedKeys(link, PresharedKeys{}) },
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			assertSymlinkRefusal(t, write(), link, target)
			if dest, err := os.Readlink(link); err != nil || dest != target {
				t.Errorf("the link was replaced: %q %v", dest, err)
			}
			if b, _ := os.ReadFile(target); string(b) != old.encode()+"\n" {
				t.Error("the link's target changed")
			}
			assertOnlyFiles(t, dir, "wg.key")
		})
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(fifo, []byte("x"), 0o600); !errors.Is(err, ErrNotRegularFile) || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("write over a FIFO: %v", err)
	}
}

// CreateFileAtomic never replaces anything, and a crash before the link
// leaves neither the file nor a temporary one.
func TestCreateFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := CreateFileAtomic(p, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" || rotMode(t, p) != 0o640 {
		t.Errorf("content %q mode %04o", b, rotMode(t, p))
	}
	if err := CreateFileAtomic(p, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second create: %v", err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	if err := CreateFileAtomic(dangling, []byte("x"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("create over a dangling link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("created through a dangling link")
	}
	// Someone else creates the file between the check and the link: the
	// link fails, theirs stays.
	linkHook = func(old, new string) error {
		if err := os.WriteFile(new, []byte("theirs"), 0o600); err != nil {
			return err
		}
		return os.Link(old, new)
	}
	t.Cleanup(func() { linkHook = os.Link })
	race := filepath.Join(dir, "race")
	if err := CreateFileAtomic(race, []byte("mine"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("raced create: %v", err)
	}
	if b, _ := os.ReadFile(race); string(b) != "theirs" {
		t.Errorf("raced create replaced the file: %q", b)
	}
	linkHook = func(string, string) error { return errors.New("injected crash") }
	if err := CreateFileAtomic(filepath.Join(dir, "crash"), []byte("x"), 0o600); err == nil {
		t.Error("no error")
	}
	assertOnlyFiles(t, dir, "dangling", "f", "race")
}

// A rotation refuses to start, and to commit, when the key file became a
// link while the agent ran: renaming the next key over the link would leave
// the retired key readable in the link's target. Nothing is renamed, and no
// key other than the current one is left anywhere.
func TestRotationRefusesSymlinkedKey(t *testing.T) {
	t.Run("prepare", func(t *testing.T) {
		ks, old, dir := rotStore(t)
		_, _, st := rotMustLoad(t, ks)
		target := symlinkTo(t, ks.KeyPath, []byte(old.encode()+"\n"))
		_, st2, err := ks.Prepare(st, rotT1, false)
		assertSymlinkRefusal(t, err, ks.KeyPath, target)
		if st2.Phase != PhaseStable {
			t.Errorf("phase %s", st2.Phase)
		}
		assertOnlyFiles(t, dir, "wg.key")
	})
	t.Run("commit", func(t *testing.T) {
		ks, old, dir := rotStore(t)
		_, _, st := rotMustLoad(t, ks)
		next, st, err := ks.Prepare(st, rotT1, false)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = ks.BeginSwitch(st); err != nil {
			t.Fatal(err)
		}
		if st, err = ks.MarkSwitched(st); err != nil {
			t.Fatal(err)
		}
		target := symlinkTo(t, ks.KeyPath, []byte(old.encode()+"\n"))
		_, err = ks.Commit(st, rotT2, "switched")
		assertSymlinkRefusal(t, err, ks.KeyPath, target)
		if dest, _ := os.Readlink(ks.KeyPath); dest != target {
			t.Error("the link was replaced")
		}
		if got, err := ReadPrivateKeyFile(ks.NextPath); err != nil || !got.Equal(next) {
			t.Errorf("the next key moved: %v", err)
		}
		assertOnlyFiles(t, dir, "rotation.json", "wg.key", "wg.key.next")
	})
}
