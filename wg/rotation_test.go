package wg

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var (
	rotT0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	rotT1 = time.Date(2025, 3, 1, 10, 5, 0, 0, time.UTC)
	rotT2 = time.Date(2025, 3, 1, 10, 6, 0, 0, time.UTC)
)

// rotStore returns a store in a fresh directory holding a current key (no
// state file), and that key.
func rotStore(t *testing.T) (*KeyStore, PrivateKey, string) {
	t.Helper()
	dir := t.TempDir()
	ks := NewKeyStore(filepath.Join(dir, "wg.key"), filepath.Join(dir, "rotation.json"))
	old := mustKey(t)
	if err := WritePrivateKeyFile(ks.KeyPath, old, false); err != nil {
		t.Fatal(err)
	}
	return ks, old, dir
}

// rotDiskState decodes the state file as written.
func rotDiskState(t *testing.T, ks *KeyStore) RotationState {
	t.Helper()
	raw, err := os.ReadFile(ks.StatePath)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	var st RotationState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("state file %s is not JSON: %v\n%s", ks.StatePath, err, raw)
	}
	return st
}

func rotMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func rotSameState(a, b RotationState) bool {
	return a.Epoch == b.Epoch && a.Phase == b.Phase && a.Started.Equal(b.Started) &&
		a.Emergency == b.Emergency && a.KeySince.Equal(b.KeySince) && a.LastResult == b.LastResult
}

// rotMustLoad loads through a fresh KeyStore, as a restarted agent would.
func rotMustLoad(t *testing.T, ks *KeyStore) (PrivateKey, PrivateKey, RotationState) {
	t.Helper()
	cur, next, st, err := NewKeyStore(ks.KeyPath, ks.StatePath).Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cur, next, st
}

// failRenameTo makes WriteFileAtomic fail (as a crash before the rename
// would) for writes to target only.
func failRenameTo(t *testing.T, target string) {
	t.Helper()
	renameHook = func(from, to string) error {
		if to == target {
			return errors.New("injected crash")
		}
		return os.Rename(from, to)
	}
	t.Cleanup(func() { renameHook = os.Rename })
}

func TestRotationHappyPath(t *testing.T) {
	ks, old, dir := rotStore(t)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(ks.KeyPath, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if ks.NextPath != ks.KeyPath+".next" {
		t.Fatalf("NextPath = %q", ks.NextPath)
	}

	// Fresh directory: stable, epoch 0, the key's age from its mtime.
	cur, next, st, err := ks.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !cur.Equal(old) || !next.IsZero() || st.Phase != PhaseStable || st.Epoch != 0 || !st.KeySince.Equal(mtime) {
		t.Fatalf("fresh load: cur ok=%v next zero=%v state %+v", cur.Equal(old), next.IsZero(), st)
	}
	if _, err := os.Stat(ks.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load created the state file: %v", err)
	}

	// Prepare: next key and state durable before it returns.
	newKey, st, err := ks.Prepare(st, rotT0, false)
	if err != nil {
		t.Fatal(err)
	}
	if newKey.IsZero() || newKey.Equal(old) {
		t.Fatal("Prepare returned no new key")
	}
	if st.Phase != PhasePrepared || !st.Started.Equal(rotT0) || st.Emergency || st.Epoch != 0 {
		t.Errorf("prepared state %+v", st)
	}
	if m := rotMode(t, ks.NextPath); m != 0o600 {
		t.Errorf("next key mode %04o, want 0600", m)
	}
	if k, err := ReadPrivateKeyFile(ks.NextPath); err != nil || !k.Equal(newKey) {
		t.Fatalf("next key on disk: %v", err)
	}
	if k, err := ReadPrivateKeyFile(ks.KeyPath); err != nil || !k.Equal(old) {
		t.Fatalf("current key changed by Prepare: %v", err)
	}
	if m := rotMode(t, ks.StatePath); m != 0o600 {
		t.Errorf("state file mode %04o, want 0600", m)
	}
	if disk := rotDiskState(t, ks); !rotSameState(disk, st) {
		t.Errorf("state on disk %+v, returned %+v", disk, st)
	}

	// BeginSwitch, MarkSwitched: each persisted.
	if st, err = ks.BeginSwitch(st); err != nil || st.Phase != PhaseSwitching {
		t.Fatalf("BeginSwitch: %+v %v", st, err)
	}
	if disk := rotDiskState(t, ks); disk.Phase != PhaseSwitching || !rotSameState(disk, st) {
		t.Errorf("after BeginSwitch disk %+v", disk)
	}
	if st, err = ks.MarkSwitched(st); err != nil || st.Phase != PhaseSwitched {
		t.Fatalf("MarkSwitched: %+v %v", st, err)
	}
	if disk := rotDiskState(t, ks); disk.Phase != PhaseSwitched || !rotSameState(disk, st) {
		t.Errorf("after MarkSwitched disk %+v", disk)
	}

	// Commit: the new key replaces the old one; stable, epoch 1.
	st, err = ks.Commit(st, rotT1, "switched")
	if err != nil {
		t.Fatal(err)
	}
	want := RotationState{Epoch: 1, Phase: PhaseStable, KeySince: rotT1, LastResult: "switched"}
	if !rotSameState(st, want) {
		t.Errorf("committed state %+v, want %+v", st, want)
	}
	if disk := rotDiskState(t, ks); !rotSameState(disk, want) {
		t.Errorf("committed state on disk %+v, want %+v", disk, want)
	}
	if k, err := ReadPrivateKeyFile(ks.KeyPath); err != nil || !k.Equal(newKey) {
		t.Fatalf("key file after Commit: %v", err)
	}
	if m := rotMode(t, ks.KeyPath); m != 0o600 {
		t.Errorf("key mode %04o after Commit", m)
	}
	if _, err := os.Stat(ks.NextPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("next key file still present: %v", err)
	}
	assertOnlyFiles(t, dir, "rotation.json", "wg.key")
	// The old private key is nowhere on disk, in any encoding.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(old.encode())) || bytes.Contains(raw, old.k[:]) {
			t.Errorf("%s still holds the old private key", e.Name())
		}
	}

	cur, next, st2 := rotMustLoad(t, ks)
	if !cur.Equal(newKey) || !next.IsZero() || !rotSameState(st2, want) {
		t.Errorf("reload after Commit: cur is new=%v next zero=%v state %+v", cur.Equal(newKey), next.IsZero(), st2)
	}

	// SaveResult persists a later verdict.
	st.LastResult = "complete"
	if err := ks.SaveResult(st); err != nil {
		t.Fatal(err)
	}
	if _, _, st3 := rotMustLoad(t, ks); st3.LastResult != "complete" || st3.Epoch != 1 || st3.Phase != PhaseStable {
		t.Errorf("after SaveResult %+v", st3)
	}
	assertOnlyFiles(t, dir, "rotation.json", "wg.key")
}

// After every step, what a restarted agent loads is what it needs to
// resume from that point.
func TestRotationRestartAtEveryPhase(t *testing.T) {
	type step int
	const (
		toPrepared step = iota
		toSwitching
		toSwitched
		toRenamedOnly // switched, rename done by hand, state not yet written
		toCommitted
	)
	cases := []struct {
		name      string
		upTo      step
		emergency bool
		phase     RotationPhase
		epoch     uint64
		curIsNew  bool
		nextIsNew bool // else next is zero
	}{
		{"prepared", toPrepared, false, PhasePrepared, 0, false, true},
		{"prepared emergency", toPrepared, true, PhasePrepared, 0, false, true},
		{"switching", toSwitching, false, PhaseSwitching, 0, false, true},
		{"switched before commit", toSwitched, false, PhaseSwitched, 0, false, true},
		{"switched after the rename", toRenamedOnly, false, PhaseSwitched, 0, true, false},
		{"committed", toCommitted, false, PhaseStable, 1, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks, old, dir := rotStore(t)
			_, _, st, err := ks.Load()
			if err != nil {
				t.Fatal(err)
			}
			newKey, st, err := ks.Prepare(st, rotT0, c.emergency)
			if err != nil {
				t.Fatal(err)
			}
			if c.upTo >= toSwitching {
				if st, err = ks.BeginSwitch(st); err != nil {
					t.Fatal(err)
				}
			}
			if c.upTo >= toSwitched {
				if st, err = ks.MarkSwitched(st); err != nil {
					t.Fatal(err)
				}
			}
			if c.upTo == toRenamedOnly {
				if err := os.Rename(ks.NextPath, ks.KeyPath); err != nil {
					t.Fatal(err)
				}
			}
			if c.upTo == toCommitted {
				if _, err = ks.Commit(st, rotT1, "switched"); err != nil {
					t.Fatal(err)
				}
			}

			cur, next, got := rotMustLoad(t, ks)
			if got.Phase != c.phase || got.Epoch != c.epoch {
				t.Errorf("phase %s epoch %d, want %s %d", got.Phase, got.Epoch, c.phase, c.epoch)
			}
			if c.phase != PhaseStable && (!got.Started.Equal(rotT0) || got.Emergency != c.emergency) {
				t.Errorf("rotation details lost: %+v", got)
			}
			wantCur := old
			if c.curIsNew {
				wantCur = newKey
			}
			if !cur.Equal(wantCur) {
				t.Errorf("cur is the new key = %v, want %v", cur.Equal(newKey), c.curIsNew)
			}
			if c.nextIsNew && !next.Equal(newKey) {
				t.Errorf("next is not the new key (zero=%v)", next.IsZero())
			}
			if !c.nextIsNew && !next.IsZero() {
				t.Error("next is set, want zero")
			}

			// The restarted agent can always finish the rotation.
			if got.Phase == PhaseSwitching {
				if got, err = ks.MarkSwitched(got); err != nil {
					t.Fatal(err)
				}
			}
			if got.Phase == PhaseSwitched {
				if got, err = ks.Commit(got, rotT2, "switched"); err != nil {
					t.Fatalf("commit after restart: %v", err)
				}
				if got.Epoch != 1 || got.Phase != PhaseStable {
					t.Errorf("after resumed commit %+v", got)
				}
				if k, err := ReadPrivateKeyFile(ks.KeyPath); err != nil || !k.Equal(newKey) {
					t.Errorf("key after resumed commit: %v", err)
				}
				assertOnlyFiles(t, dir, "rotation.json", "wg.key")
			}
		})
	}
}

// A crash inside Commit after the rename but before the state write (here:
// the state write fails) leaves switched with the new key in place.
func TestRotationCommitStateWriteFails(t *testing.T) {
	ks, _, dir := rotStore(t)
	_, _, st, _ := ks.Load()
	newKey, st, err := ks.Prepare(st, rotT0, false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ = ks.BeginSwitch(st)
	st, _ = ks.MarkSwitched(st)
	failRenameTo(t, ks.StatePath)
	if _, err := ks.Commit(st, rotT1, "switched"); err == nil {
		t.Fatal("Commit succeeded despite a failed state write")
	}
	renameHook = os.Rename
	cur, next, got := rotMustLoad(t, ks)
	if got.Phase != PhaseSwitched || !cur.Equal(newKey) || !next.IsZero() {
		t.Fatalf("after failed commit: phase %s, cur is new %v, next zero %v", got.Phase, cur.Equal(newKey), next.IsZero())
	}
	if got, err = ks.Commit(got, rotT2, "switched"); err != nil || got.Epoch != 1 || got.Phase != PhaseStable {
		t.Fatalf("second commit: %+v %v", got, err)
	}
	assertOnlyFiles(t, dir, "rotation.json", "wg.key")
}

func TestRotationWrongOrder(t *testing.T) {
	cases := []struct {
		name  string
		setup []string // steps from stable
		call  func(*KeyStore, RotationState) error
		phase RotationPhase
	}{
		{"Prepare twice", []string{"prepare"}, func(ks *KeyStore, st RotationState) error {
			_, _, err := ks.Prepare(st, rotT1, false)
			return err
		}, PhasePrepared},
		{"Prepare while switched", []string{"prepare", "begin", "mark"}, func(ks *KeyStore, st RotationState) error {
			_, _, err := ks.Prepare(st, rotT1, true)
			return err
		}, PhaseSwitched},
		{"BeginSwitch from stable", nil, func(ks *KeyStore, st RotationState) error {
			_, err := ks.BeginSwitch(st)
			return err
		}, PhaseStable},
		{"BeginSwitch twice", []string{"prepare", "begin"}, func(ks *KeyStore, st RotationState) error {
			_, err := ks.BeginSwitch(st)
			return err
		}, PhaseSwitching},
		{"MarkSwitched from prepared", []string{"prepare"}, func(ks *KeyStore, st RotationState) error {
			_, err := ks.MarkSwitched(st)
			return err
		}, PhasePrepared},
		{"Commit from switching", []string{"prepare", "begin"}, func(ks *KeyStore, st RotationState) error {
			_, err := ks.Commit(st, rotT1, "x")
			return err
		}, PhaseSwitching},
		{"Commit from stable", nil, func(ks *KeyStore, st RotationState) error {
			_, err := ks.Commit(st, rotT1, "x")
			return err
		}, PhaseStable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks, old, _ := rotStore(t)
			_, _, st, err := ks.Load()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.setup {
				switch s {
				case "prepare":
					_, st, err = ks.Prepare(st, rotT0, false)
				case "begin":
					st, err = ks.BeginSwitch(st)
				case "mark":
					st, err = ks.MarkSwitched(st)
				}
				if err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			stateBefore, _ := os.ReadFile(ks.StatePath)
			nextBefore, _ := os.ReadFile(ks.NextPath)

			err = c.call(ks, st)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), string(c.phase)) {
				t.Errorf("error %q does not name phase %s", err, c.phase)
			}
			// Nothing on disk changed.
			if after, _ := os.ReadFile(ks.StatePath); !bytes.Equal(after, stateBefore) {
				t.Error("refused call changed the state file")
			}
			if after, _ := os.ReadFile(ks.NextPath); !bytes.Equal(after, nextBefore) {
				t.Error("refused call changed the next key file")
			}
			if k, err := ReadPrivateKeyFile(ks.KeyPath); err != nil || !k.Equal(old) {
				t.Errorf("refused call changed the current key: %v", err)
			}
		})
	}
}

func TestRotationCorruptState(t *testing.T) {
	cases := []struct{ name, content string }{
		{"garbage", "this is not json {\n"},
		{"empty file", ""},
		{"null", "null\n"},
		{"empty phase", `{"epoch": 3}` + "\n"},
		{"blank phase", `{"epoch": 3, "phase": ""}` + "\n"},
		{"unknown phase", `{"epoch": 3, "phase": "exploding"}` + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks, _, _ := rotStore(t)
			if err := os.WriteFile(ks.StatePath, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := ks.Load()
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("Load: %v, want ErrCorruptState", err)
			}
			if !strings.Contains(err.Error(), ks.StatePath) {
				t.Errorf("error %q does not name %s", err, ks.StatePath)
			}
		})
	}
}

func TestRotationNextKeyUnusable(t *testing.T) {
	for _, phase := range []RotationPhase{PhasePrepared, PhaseSwitching} {
		for _, what := range []string{"missing", "corrupt"} {
			t.Run(string(phase)+" "+what, func(t *testing.T) {
				ks, _, _ := rotStore(t)
				_, _, st, _ := ks.Load()
				_, st, err := ks.Prepare(st, rotT0, false)
				if err != nil {
					t.Fatal(err)
				}
				if phase == PhaseSwitching {
					if _, err := ks.BeginSwitch(st); err != nil {
						t.Fatal(err)
					}
				}
				if what == "missing" {
					err = os.Remove(ks.NextPath)
				} else {
					err = os.WriteFile(ks.NextPath, []byte("garbage, not a key\n"), 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
				_, _, _, err = NewKeyStore(ks.KeyPath, ks.StatePath).Load()
				if err == nil {
					t.Fatal("Load accepted an unusable next key")
				}
				if !strings.Contains(err.Error(), ks.NextPath) || !strings.Contains(err.Error(), string(phase)) {
					t.Errorf("error %q does not name %s and phase %s", err, ks.NextPath, phase)
				}
				if what == "corrupt" && !errors.Is(err, ErrCorruptKeyFile) {
					t.Errorf("error %v does not wrap ErrCorruptKeyFile", err)
				}
			})
		}
	}
	t.Run("switched corrupt", func(t *testing.T) {
		ks, _, _ := rotStore(t)
		_, _, st, _ := ks.Load()
		_, st, _ = ks.Prepare(st, rotT0, false)
		st, _ = ks.BeginSwitch(st)
		if _, err := ks.MarkSwitched(st); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ks.NextPath, []byte("garbage\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := ks.Load(); !errors.Is(err, ErrCorruptKeyFile) {
			t.Fatalf("Load: %v, want ErrCorruptKeyFile", err)
		}
	})
}

// A crash while Prepare writes the state leaves the previous state
// readable: a fresh site stays stable at epoch 0, a rotated one keeps its
// epoch and result byte for byte, and no temporary file is left behind.
func TestRotationPrepareCrashKeepsPreviousState(t *testing.T) {
	for _, previous := range []string{"no state file", "after one rotation"} {
		t.Run(previous, func(t *testing.T) {
			ks, old, dir := rotStore(t)
			_, _, st, _ := ks.Load()
			cur := old
			if previous == "after one rotation" {
				var err error
				if cur, st, err = ks.Prepare(st, rotT0, false); err != nil {
					t.Fatal(err)
				}
				st, _ = ks.BeginSwitch(st)
				st, _ = ks.MarkSwitched(st)
				if st, err = ks.Commit(st, rotT1, "complete"); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := os.ReadFile(ks.StatePath)

			failRenameTo(t, ks.StatePath)
			if _, _, err := ks.Prepare(st, rotT2, false); err == nil {
				t.Fatal("Prepare succeeded despite the injected crash")
			}
			renameHook = os.Rename

			if after, _ := os.ReadFile(ks.StatePath); !bytes.Equal(after, before) {
				t.Errorf("state file changed:\n%s\nwas:\n%s", after, before)
			}
			gotCur, gotNext, got := rotMustLoad(t, ks)
			if got.Phase != PhaseStable || got.Epoch != st.Epoch || got.LastResult != st.LastResult {
				t.Errorf("state after crash %+v, want %+v", got, st)
			}
			if !gotCur.Equal(cur) || !gotNext.IsZero() {
				t.Error("keys after crash: current changed or next set")
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
			// A new attempt works.
			if _, st2, err := ks.Prepare(got, rotT2, false); err != nil || st2.Phase != PhasePrepared {
				t.Fatalf("retry: %+v %v", st2, err)
			}
		})
	}
}

// When persisting a phase fails, the state returned with the error must be
// what is on disk (the input), not the phase that was never written: the
// agent assigns the result before it checks the error (mesh/rotate.go
// switchKey), and a phantom "switching" stops it from ever retrying.
func TestRotationFailedSaveReturnsPersistedState(t *testing.T) {
	ks, _, _ := rotStore(t)
	_, _, st, _ := ks.Load()
	_, prepared, err := ks.Prepare(st, rotT0, false)
	if err != nil {
		t.Fatal(err)
	}
	failRenameTo(t, ks.StatePath)
	got, err := ks.BeginSwitch(prepared)
	if err == nil {
		t.Fatal("BeginSwitch succeeded despite the injected crash")
	}
	if disk := rotDiskState(t, ks); disk.Phase != PhasePrepared {
		t.Fatalf("disk says %s", disk.Phase)
	}
	if got.Phase != PhasePrepared {
		t.Fatalf("BeginSwitch returned phase %s with its save error; the disk still says prepared", got.Phase)
	}
}

// rotRecorder records every configuration sent to the fake.
type rotRecorder struct {
	*wgtest.Client
	cfgs []wgtypes.Config
}

func (r *rotRecorder) ConfigureDevice(name string, cfg wgtypes.Config) error {
	r.cfgs = append(r.cfgs, cfg)
	return r.Client.ConfigureDevice(name, cfg)
}

func TestSwitchKey(t *testing.T) {
	old, newKey := mustKey(t), mustKey(t)
	b, c, d, n := mustKey(t).Public(), mustKey(t).Public(), mustKey(t).Public(), mustKey(t).Public()
	fake := wgtest.NewClient("dcm0")
	want := Config{PrivateKey: old, ListenPort: 51820, Peers: []Peer{
		{PublicKey: b, Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: pfx("10.2.0.0/16", "10.255.0.2/32"), PersistentKeepalive: 25 * time.Second},
		{PublicKey: c, AllowedIPs: pfx("10.3.0.0/16")}, // keepalive 0, no endpoint
		{PublicKey: d, Endpoint: netip.MustParseAddrPort("[2001:db8::4]:51820"), AllowedIPs: pfx("fd00:4::/48"), PersistentKeepalive: 7 * time.Second},
		// Another site's pre-installed next key: it must never initiate.
		{PublicKey: n, Endpoint: netip.MustParseAddrPort("192.0.2.4:51820")},
	}}
	if _, err := Apply(fake, "dcm0", want); err != nil {
		t.Fatal(err)
	}
	before := fake.String()
	sess := map[PublicKey]int{}
	kaBefore := map[PublicKey]int{}
	for _, p := range want.Peers {
		sess[p.PublicKey] = fake.Session("dcm0", wgtypes.Key(p.PublicKey))
		kaBefore[p.PublicKey] = fake.KeepalivesSent("dcm0", wgtypes.Key(p.PublicKey))
	}
	calls := fake.Calls

	rec := &rotRecorder{Client: fake}
	if err := SwitchKey(rec, "dcm0", newKey, nil); err != nil {
		t.Fatal(err)
	}
	if fake.Calls != calls+1 || len(rec.cfgs) != 1 {
		t.Fatalf("%d ConfigureDevice calls, want 1", fake.Calls-calls)
	}
	if fake.ReplacePeersCalls != 0 {
		t.Error("SwitchKey used ReplacePeers")
	}
	cfg := rec.cfgs[0]
	if cfg.PrivateKey == nil || *cfg.PrivateKey != newKey.k || cfg.ListenPort != nil || cfg.ReplacePeers {
		t.Errorf("device-wide part of the config: key set %v, port %v, replace %v", cfg.PrivateKey != nil, cfg.ListenPort, cfg.ReplacePeers)
	}
	for _, pc := range cfg.Peers {
		if !pc.UpdateOnly || pc.Remove || pc.Endpoint != nil || pc.ReplaceAllowedIPs || len(pc.AllowedIPs) != 0 || pc.PresharedKey != nil {
			t.Errorf("peer %s config touches more than the keepalive: %+v", pc.PublicKey.String()[:8], pc)
		}
		if wgtypes.Key(n) == pc.PublicKey {
			t.Error("the pre-installed key is mentioned")
		}
	}
	// Every peer that owns allowed IPs sent one keepalive (which starts the
	// handshake under the new key) and keeps its interval; the pre-installed
	// key sent nothing.
	for _, p := range want.Peers {
		sent := fake.KeepalivesSent("dcm0", wgtypes.Key(p.PublicKey)) - kaBefore[p.PublicKey]
		if wantSent := min(len(p.AllowedIPs), 1); sent != wantSent {
			t.Errorf("peer %s: %d keepalives sent, want %d", p.PublicKey.Short(), sent, wantSent)
		}
	}

	// Only the device's public key changed in the rendering.
	after := fake.String()
	wantAfter := strings.Replace(before, "public="+old.Public().Short(), "public="+newKey.Public().Short(), 1)
	if after != wantAfter {
		t.Errorf("device after SwitchKey:\n%s\nwant:\n%s", after, wantAfter)
	}
	for k, g := range sess {
		if got := fake.Session("dcm0", wgtypes.Key(k)); got != g || got == 0 {
			t.Errorf("peer %s session generation %d → %d", k.Short(), g, got)
		}
	}

	// A device that does not exist, and a failing configure, are errors.
	if err := SwitchKey(fake, "nope0", newKey, nil); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("missing device: %v", err)
	}
	fake.ConfigureErr = errors.New("injected")
	if err := SwitchKey(fake, "dcm0", old, nil); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Errorf("failing configure: %v", err)
	}
}
