package wg

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// ErrCorruptKeyFile is returned when a key file exists but does not hold a
// WireGuard private key. dcmesh never replaces such a file by itself: a silent
// new key would be a silent new identity.
var ErrCorruptKeyFile = errors.New("corrupt key file")

// maxKeyFileSize bounds what ReadPrivateKeyFile reads: a key file is one
// 44-character line.
const maxKeyFileSize = 1024

// WritePrivateKeyFile stores k at path in the format of `wg genkey` (one
// base64 line), mode 0600, atomically. Unless overwrite is set it refuses to
// replace an existing file, so an operator's typo cannot destroy a key. With
// overwrite it still refuses to replace a symbolic link (ErrSymlink).
func WritePrivateKeyFile(path string, k PrivateKey, overwrite bool) error {
	if k.IsZero() {
		return errors.New("write key file: refusing to write an empty key")
	}
	data := []byte(k.encode() + "\n")
	defer clear(data)
	if overwrite {
		return WriteFileAtomic(path, data, 0o600)
	}
	// CreateFileAtomic refuses an existing file in the same step that puts
	// the new one in place, so not even a race replaces a key.
	if err := CreateFileAtomic(path, data, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write key file %s: %w (refusing to overwrite a key; use --force to replace it)", path, fs.ErrExist)
		}
		return err
	}
	return nil
}

// ReadSecretFile reads a small secret file (a key): it must be a regular
// file of at most max bytes that neither group nor others can read, and not
// a symbolic link (ErrSymlink: dcmesh replaces key files by rename, which
// would leave the retired key in the link's target). It never blocks on a
// FIFO or reads a device (see ReadRegularFile). Errors never contain the
// content. The caller should clear the returned bytes.
func ReadSecretFile(path string, max int) ([]byte, error) {
	f, st, err := openRegular(path, int64(max), true)
	if errors.Is(err, ErrFileTooLarge) {
		return nil, secretTooLarge(path, max)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a secret must not be readable by group or others (fix: chmod 600 %s, and consider the key exposed)", path, perm, path)
	}
	buf, err := readBounded(f, path, st.Size(), int64(max))
	if errors.Is(err, ErrFileTooLarge) {
		return nil, secretTooLarge(path, max)
	}
	return buf, err
}

func secretTooLarge(path string, max int) error {
	return fmt.Errorf("%s: %w (%w: larger than %d bytes)", path, ErrCorruptKeyFile, ErrFileTooLarge, max)
}

// ReadPrivateKeyFile loads a key written by WritePrivateKeyFile or `wg genkey`.
// It refuses files that group or others can read, and reports a file that does
// not parse as ErrCorruptKeyFile. Errors never contain the file's content.
func ReadPrivateKeyFile(path string) (PrivateKey, error) {
	buf, err := ReadSecretFile(path, maxKeyFileSize)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return PrivateKey{}, fmt.Errorf("key file %s does not exist (create one with: dcmesh key generate --out %s): %w", path, path, err)
		}
		if errors.Is(err, ErrCorruptKeyFile) {
			return PrivateKey{}, fmt.Errorf("key file %w, expected one base64 line as written by `dcmesh key generate`", err)
		}
		return PrivateKey{}, fmt.Errorf("key file %w", err)
	}
	defer clear(buf)
	k, err := parsePrivateKey(strings.TrimSpace(string(buf)))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("key file %s: %w: expected one base64 WireGuard private key as written by `dcmesh key generate`; dcmesh will not replace it by itself (restore it from backup, or create a new key with `dcmesh key generate --force --out %s` and give its public key to every peer)", path, ErrCorruptKeyFile, path)
	}
	if k.IsZero() {
		return PrivateKey{}, fmt.Errorf("key file %s: %w: the key is all zeros", path, ErrCorruptKeyFile)
	}
	return k, nil
}
