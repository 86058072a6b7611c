package wg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data so that a crash at any moment leaves
// either the old file or the new one, never a torn or empty one: it writes a
// temporary file in the same directory (created 0600, then set to perm),
// fsyncs it, renames it over path and fsyncs the directory so the rename
// itself is durable.
//
// It refuses to replace anything but a regular file: a symbolic link
// (ErrSymlink — the rename would replace the link and leave the old content,
// perhaps a retired key, in its target) or a FIFO, device or directory
// (ErrNotRegularFile). The check and the rename are two steps; it guards
// against a misconfiguration, not against someone who can write the
// directory (who holds the keys anyway).
//
// Package mesh uses it for its state files too; it lives here because key
// files were its first user and wg imports no other dcmesh package.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	if err := checkReplaceable(path); err != nil {
		return fmt.Errorf("refusing to write: %w", err)
	}
	dir := dirOf(path)
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := renameHook(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: fsync directory: %w", path, err)
	}
	return nil
}

// CreateFileAtomic writes a new file at path, like WriteFileAtomic, but never
// replaces anything: if path exists — as anything, a dangling symbolic link
// included — it fails with an error wrapping fs.ErrExist and leaves it alone.
// The file appears whole or not at all: it is written and fsynced under a
// temporary name and hard-linked into place, and link(2) refuses a taken name
// in the same step, so not even a race overwrites a file.
func CreateFileAtomic(path string, data []byte, perm os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, fs.ErrExist)
	}
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	err = linkHook(tmp, path)
	// Linked or not, the temporary name goes, before the directory is synced
	// so that its removal is durable too.
	_ = os.Remove(tmp)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dirOf(path)); err != nil {
		return fmt.Errorf("write %s: fsync directory: %w", path, err)
	}
	return nil
}

// checkReplaceable allows a missing path or a regular file.
func checkReplaceable(path string) error {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.Mode()&fs.ModeSymlink != 0:
		if serr := symlinkError(path); serr != nil {
			return serr
		}
		return fmt.Errorf("%s %w", path, ErrSymlink)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s is %s, %w: dcmesh writes only regular files; remove it", path, describeFileType(st.Mode()), ErrNotRegularFile)
	}
	return nil
}

// writeTemp writes data to a new temporary file next to path (created 0600,
// then set to perm), fsyncs and closes it, and returns its name. On error it
// leaves nothing behind.
func writeTemp(path string, data []byte, perm os.FileMode) (name string, err error) {
	tmp, err := os.CreateTemp(dirOf(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp.Name(), nil
}

func dirOf(path string) string {
	if dir, _ := filepath.Split(path); dir != "" {
		return dir
	}
	return "."
}

// renameHook is os.Rename and linkHook os.Link; tests replace them to inject
// a crash between the write and the rename or link.
var (
	renameHook = os.Rename
	linkHook   = os.Link
)

// SyncDir fsyncs a directory, which makes the creation, renaming or removal
// of the names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
