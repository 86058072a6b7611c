package enroll

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/wg"
)

// initStepHook runs before each file write creates; tests make it fail (a
// write error, which write undoes) or panic (a crash: nothing is undone).
var initStepHook = func(step string) error { return nil }

// write creates the planned files, the configuration last. On an error it
// removes what it created and restores the state directory's mode.
func (p *initPlan) write() (err error) {
	var created []string // files and directories, in creation order
	restoreMode := os.FileMode(0)
	defer func() {
		if err == nil {
			return
		}
		for i := len(created) - 1; i >= 0; i-- {
			_ = os.Remove(created[i]) // a directory only if empty
		}
		if restoreMode != 0 {
			_ = os.Chmod(string(p.stateDir), restoreMode)
		}
	}()
	if st, err := os.Stat(string(p.stateDir)); err == nil {
		restoreMode = st.Mode().Perm()
	}
	dirs, err := mkdirs(string(p.stateDir), 0o700)
	created = append(created, dirs...)
	if err != nil {
		return config.Optionf("StateDir", ": %w", err)
	}
	if err := os.Chmod(string(p.stateDir), 0o700); err != nil {
		return config.Optionf("StateDir", ": %w", err)
	}
	for _, f := range p.files {
		path := p.stateDir.File(f.name)
		if err := initStepHook(f.name); err != nil {
			return err
		}
		if err := wg.CreateFileAtomic(path, f.data, f.perm); err != nil {
			return config.Optionf("StateDir", ": %w", err)
		}
		created = append(created, path)
	}
	if err := initStepHook(config.WGKeyFile); err != nil {
		return err
	}
	keyPath := p.stateDir.WGKey()
	if err := wg.WritePrivateKeyFile(keyPath, p.key, false); err != nil {
		return config.Optionf("StateDir", ": %w", err)
	}
	created = append(created, keyPath)
	dirs, err = mkdirs(filepath.Dir(p.configPath), 0o755)
	created = append(created, dirs...)
	if err != nil {
		return config.Optionf("ConfigPath", ": %w", err)
	}
	if err := initStepHook("config"); err != nil {
		return err
	}
	if err := wg.CreateFileAtomic(p.configPath, p.config, 0o600); err != nil {
		return config.Optionf("ConfigPath", ": %w", err)
	}
	return nil
}

// mkdirs is os.MkdirAll that returns the directories it created, outermost
// first, and makes each creation durable (fsync of the parent).
func mkdirs(dir string, perm os.FileMode) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], perm); err != nil {
			return created, err
		}
		created = append(created, missing[i])
		if err := wg.SyncDir(filepath.Dir(missing[i])); err != nil {
			return created, err
		}
	}
	return created, nil
}
