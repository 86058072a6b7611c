package wg

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Reading the files dcmesh depends on. Every configuration, certificate, key
// and state file goes through one of ReadRegularFile, ReadStateFile and
// ReadSecretFile, so that whatever sits at the path instead of a small
// regular file is refused at once with an error that names it:
//
//   - a FIFO: a plain open(2) waits for a writer, forever, and Go cannot
//     interrupt it, so the agent ignored SIGTERM at start and its loop stopped
//     on SIGHUP. The open here is O_NONBLOCK, which returns at once for a
//     FIFO, and the descriptor's type is checked before any read;
//   - a device (/dev/zero reads forever), a directory, a socket;
//   - a file larger than the caller's bound (a sparse 1 GB file): refused by
//     its size before anything is read, and the read stops at the bound in
//     case it grows meanwhile;
//   - a symbolic link, for the files dcmesh itself replaces (keys, state):
//     see ErrSymlink.

// ErrNotRegularFile means a path dcmesh reads holds something other than a
// regular file: a FIFO, a device, a directory or a socket.
var ErrNotRegularFile = errors.New("not a regular file")

// ErrSymlink means a key or state file is a symbolic link. dcmesh replaces
// those files atomically, by renaming a new file over the old one; rename
// replaces the link itself, so the file the link pointed to would keep the
// old content — after a key rotation, the retired private key, readable for
// as long as nobody notices. Writing through the link instead would need the
// old content erased in place, which is not atomic (a crash midway leaves a
// torn key) and would let a link planted in the state directory aim dcmesh's
// writes at any file root can write. So dcmesh refuses: a key or state file
// must be the real file, and the error says where the link points.
var ErrSymlink = errors.New("is a symbolic link")

// ErrFileTooLarge means a file is larger than dcmesh ever writes or reads for
// its purpose.
var ErrFileTooLarge = errors.New("file too large")

// ReadRegularFile reads a file dcmesh only reads and never replaces — the
// configuration, certificates, a bundle, a revocation list — of at most max
// bytes. Symbolic links are followed: configuration management often links
// such files into place, and nothing is lost when dcmesh does not rewrite
// them. Anything but a regular file is refused without blocking.
func ReadRegularFile(path string, max int64) ([]byte, error) {
	f, st, err := openRegular(path, max, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f, path, st.Size(), max)
}

// ReadStateFile reads a file dcmesh writes with WriteFileAtomic (state JSON:
// rotation state, sequence numbers, site records, known peers) of at most max
// bytes. Like ReadRegularFile, but a symbolic link is refused (ErrSymlink):
// the next write would replace the link, and the agent would read one file
// and write another.
func ReadStateFile(path string, max int64) ([]byte, error) {
	f, st, err := openRegular(path, max, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f, path, st.Size(), max)
}

// openRegular opens path for reading without blocking and returns it only if
// it is a regular file of at most max bytes. With noFollow a symbolic link
// is refused. A missing file is an error wrapping fs.ErrNotExist.
func openRegular(path string, max int64, noFollow bool) (*os.File, fs.FileInfo, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY
	if noFollow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if noFollow && errors.Is(err, syscall.ELOOP) {
			if lerr := symlinkError(path); lerr != nil {
				return nil, nil, lerr
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s does not exist: %w", path, err)
		}
		return nil, nil, err
	}
	st, err := f.Stat() // fstat: the file opened, not whatever the name points to now
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is %s, %w: dcmesh reads its configuration, keys, certificates and state only from regular files (a FIFO or device would block or never end); point the configuration at the real file",
			path, describeFileType(st.Mode()), ErrNotRegularFile)
	}
	if st.Size() > max {
		f.Close()
		return nil, nil, tooLarge(path, st.Size(), max)
	}
	return f, st, nil
}

// symlinkError describes the symbolic link at path, or returns nil if path
// is not one (O_NOFOLLOW's ELOOP also means too many links in the directories
// above).
func symlinkError(path string) error {
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&fs.ModeSymlink == 0 {
		return nil
	}
	target, err := os.Readlink(path)
	if err != nil {
		target = "?"
	}
	real := target
	if r, err := filepath.EvalSymlinks(path); err == nil {
		real = r
	}
	return fmt.Errorf("%s %w to %s: dcmesh replaces key and state files atomically (a new file renamed over the old one), which would replace the link and leave the old content — for a key, the retired private key — in %s; point the configuration at the real file (%s), or put that file in place of the link",
		path, ErrSymlink, target, real, real)
}

func describeFileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "a special file"
	}
}

func tooLarge(path string, size, max int64) error {
	if size < 0 {
		return fmt.Errorf("%s is larger than %d bytes (%w)", path, max, ErrFileTooLarge)
	}
	return fmt.Errorf("%s is larger than %d bytes (%d bytes; %w)", path, max, size, ErrFileTooLarge)
}

// readBounded reads f to its end, refusing more than max bytes. It starts
// with a buffer of the file's size, so a secret is normally read into one
// buffer; when the file grew and the buffer must grow, the old one is
// cleared, so no copy of a key is left behind in memory.
func readBounded(f *os.File, path string, size, max int64) ([]byte, error) {
	buf := make([]byte, 0, min(size, max)+1) // +1: see the end, or the growth
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				clear(buf)
				return nil, tooLarge(path, -1, max)
			}
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), max+1))
			copy(grown, buf)
			clear(buf)
			buf = grown
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			clear(buf)
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
}
