package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/wg"
)

// How a renewal is written. Each configured file (trust.ca_file,
// trust.cert_file, trust.identity_key_file) is replaced atomically
// (wg.WriteFileAtomic: temp file, fsync, rename, fsync of the directory),
// and the file it replaces is kept beside it as FILE.prev (same mode), so
// that an operator can go back by hand: the previous certificate stays
// valid until it expires or is revoked. A file whose content does not change
// is not rewritten. The three files cannot be replaced in one step; after
// writing, they are read back exactly as a restart would read them
// (enroll.Read), and on any failure every file already replaced is put back.
// A crash between two renames can leave a certificate without its key: the
// agent then refuses to start, naming both, and FILE.prev holds the old
// ones.

// PrevSuffix is appended to a trust file's name for the copy a renewal
// replaced.
const PrevSuffix = ".prev"

type trustFile struct {
	path, field string
	data        []byte
	perm        os.FileMode
	secret      bool
}

// writeTrustFiles writes r over the files cfg names and returns the paths
// replaced.
func writeTrustFiles(cfg *config.Config, r *renewal) ([]string, error) {
	files := []trustFile{
		{cfg.Trust.CAFile, "trust.ca_file", r.caPEM, 0o644, false},
		{cfg.Trust.IdentityKeyFile, "trust.identity_key_file", r.keyPEM, 0o600, true},
		{cfg.Trust.CertFile, "trust.cert_file", r.certPEM, 0o644, false},
	}
	written := []string{}
	var replaced []trustFile // with their old content
	defer func() {
		for _, f := range replaced {
			clear(f.data)
		}
	}()
	rollback := func(cause error) ([]string, error) {
		var errs []error
		for i := len(replaced) - 1; i >= 0; i-- {
			errs = append(errs, wg.WriteFileAtomic(replaced[i].path, replaced[i].data, replaced[i].perm))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("%w: %w; putting the old files back also failed (%w): they are in FILE%s", errRenewWrite, cause, err, PrevSuffix)
		}
		return nil, fmt.Errorf("%w, the old files are back in place: %w", errRenewWrite, cause)
	}
	for _, f := range files {
		old, changed, err := replaceTrustFile(f)
		if err != nil {
			return rollback(err)
		}
		if changed {
			replaced = append(replaced, trustFile{path: f.path, data: old, perm: f.perm})
			written = append(written, f.path)
		}
	}
	check := enroll.Files{CA: enroll.File{Path: cfg.Trust.CAFile, Name: "trust.ca_file"},
		Cert:     enroll.File{Path: cfg.Trust.CertFile, Name: "trust.cert_file"},
		Identity: enroll.File{Path: cfg.Trust.IdentityKeyFile, Name: "trust.identity_key_file"}}
	_, c, err := enroll.Read(check, time.Now(), cfg.Trust.ClockSkew)
	if err != nil {
		return rollback(fmt.Errorf("the files written do not read back: %w", err))
	}
	c.Clear()
	return written, nil
}

// replaceTrustFile keeps f's old content as f.path+PrevSuffix and writes the
// new one; it returns the old content (the caller clears it), or changed
// false when the file already holds the new content.
func replaceTrustFile(f trustFile) (old []byte, changed bool, err error) {
	if f.secret {
		old, err = wg.ReadSecretFile(f.path, enroll.MaxPEMFileSize)
	} else {
		old, err = wg.ReadRegularFile(f.path, enroll.MaxPEMFileSize)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", f.field, err)
	}
	if bytes.Equal(old, f.data) {
		clear(old)
		return nil, false, nil
	}
	if err := wg.WriteFileAtomic(f.path+PrevSuffix, old, f.perm); err != nil {
		clear(old)
		return nil, false, fmt.Errorf("%s: keep the old file: %w", f.field, err)
	}
	if err := wg.WriteFileAtomic(f.path, f.data, f.perm); err != nil {
		clear(old)
		return nil, false, fmt.Errorf("%s: %w", f.field, err)
	}
	return old, true, nil
}
