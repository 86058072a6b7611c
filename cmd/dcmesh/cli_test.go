package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/urfave/cli/v2"
)

// runCLI runs the dcmesh app in-process and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(append([]string{"dcmesh"}, args...))
	return out.String(), err
}

func TestKeyCommands(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "wg.key")
	pub, err := runCLI(t, "key", "generate", "--out", key)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(key)
	if strings.Contains(pub, strings.TrimSpace(string(raw))) {
		t.Fatal("key generate printed the private key")
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o", st.Mode().Perm())
	}
	again, err := runCLI(t, "key", "public", "--in", key)
	if err != nil || again != pub {
		t.Fatalf("key public = %q, %v; want %q", again, err, pub)
	}
	// wireguard-tools agrees on the public key, if installed.
	if _, err := exec.LookPath("wg"); err == nil {
		cmd := exec.Command("wg", "pubkey")
		cmd.Stdin = bytes.NewReader(raw)
		if out, err := cmd.Output(); err != nil || string(out) != pub {
			t.Errorf("wg pubkey = %q, %v; dcmesh says %q", out, err, pub)
		}
	}
	if _, err := runCLI(t, "key", "generate", "--out", key); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwriting a key: %v", err)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(after, raw) {
		t.Error("refused generate changed the key file")
	}
	if _, err := runCLI(t, "key", "generate", "--out", key, "--force"); err != nil {
		t.Errorf("--force: %v", err)
	}
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(out, "dcmesh ") {
		t.Fatalf("version: %q %v", out, err)
	}
}

// A corrupt key file stops the agent before it touches anything, with an
// error that names the file and the way out, and the file is left as it was.
func TestAgentRefusesCorruptKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "wg.key")
	if err := os.WriteFile(key, []byte("this is not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "dcmesh.yaml")
	if err := os.WriteFile(cfg, []byte("site: a\nprivate_key_file: wg.key\noverlay_address: 10.255.0.1/32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "agent", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), "corrupt key file") || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "will not replace it") {
		t.Fatalf("agent with a corrupt key: %v", err)
	}
	if raw, _ := os.ReadFile(key); string(raw) != "this is not a key\n" {
		t.Error("the corrupt key file was modified")
	}
}

func TestAgentReportsConfigFields(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dcmesh.yaml")
	if err := os.WriteFile(cfg, []byte("site: a\nprivate_key_file: k\noverlay_address: 10.255.0.1/32\nlisten_port: 99999\nmtu: 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "agent", "--config", cfg)
	for _, want := range []string{cfg, "listen_port: 99999 is out of range", "mtu: 100 is out of range"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, err := runCLI(t, "agent", "--config", cfg, "--log-format", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("bad --log-format: %v", err)
	}
}

func TestCompletion(t *testing.T) {
	out, err := runCLI(t, "completion", "bash")
	if err != nil || !strings.Contains(out, "complete -o bashdefault") {
		t.Fatalf("bash: %v %q", err, out)
	}
	if _, err := runCLI(t, "completion", "fish"); err == nil {
		t.Error("fish accepted")
	}
	// The script asks the program: the program must answer with commands
	// and flags.
	raw, err := exec.Command(dcmeshBinary(t), "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(raw), "rotate") || !strings.Contains(string(raw), "status") {
		t.Errorf("command candidates: %v %q", err, raw)
	}
	raw, err = exec.Command(dcmeshBinary(t), "rotate", "-", "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(raw), "--emergency") {
		t.Errorf("flag candidates: %v %q", err, raw)
	}
}

// Every command and subcommand explains itself.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Usage == "" {
				t.Errorf("%s%s has no usage line", prefix, c.Name)
			}
			for _, f := range c.Flags {
				if df, ok := f.(cli.DocGenerationFlag); ok && df.GetUsage() == "" {
					t.Errorf("%s%s --%s has no usage", prefix, c.Name, f.Names()[0])
				}
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("dcmesh ", newApp().Commands)
}

// Issue 15.9, through the binary: a FIFO as key file or configuration hung
// `dcmesh agent` at start, deaf to SIGTERM. Now it exits at once, non-zero,
// naming the file; a symlinked key file is refused the same way (15.8).
func TestCLIAgentRefusesSpecialFiles(t *testing.T) {
	bin := dcmeshBinary(t)
	cases := []struct {
		name string
		make func(t *testing.T, dir string) (config, culprit string)
		want []string
	}{
		{"key file is a FIFO", func(t *testing.T, dir string) (string, string) {
			key := filepath.Join(dir, "wg.key")
			mkfifo(t, key)
			return writeAgentConfig(t, dir), key
		}, []string{"private_key_file", "FIFO", "not a regular file"}},
		{"config is a FIFO", func(t *testing.T, dir string) (string, string) {
			cfg := filepath.Join(dir, "dcmesh.yaml")
			mkfifo(t, cfg)
			return cfg, cfg
		}, []string{"config", "FIFO", "not a regular file"}},
		{"key file is a symlink", func(t *testing.T, dir string) (string, string) {
			real := filepath.Join(dir, "real.key")
			if _, err := runCLI(t, "key", "generate", "--out", real); err != nil {
				t.Fatal(err)
			}
			key := filepath.Join(dir, "wg.key")
			if err := os.Symlink(real, key); err != nil {
				t.Fatal(err)
			}
			return writeAgentConfig(t, dir), key
		}, []string{"private_key_file", "symbolic link to", "retired private key", "point the configuration at the real file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, culprit := c.make(t, dir)
			stderr, err := runAgentBriefly(t, bin, cfg)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("dcmesh agent: %v, want a non-zero exit (stderr: %s)", err, stderr)
			}
			for _, w := range append([]string{culprit}, c.want...) {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q: %s", w, stderr)
				}
			}
		})
	}
}

// runAgentBriefly runs `dcmesh agent --config cfg`, which is expected to
// refuse at once, and fails the test if it still runs after 30 s. As root it
// runs in a namespace of its own, so that an agent that wrongly starts
// programs nothing on this machine.
func runAgentBriefly(t *testing.T, bin, cfg string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, "agent", "--config", cfg)
	if os.Geteuid() == 0 {
		ns := netconfigtest.NewNS(t, "dcmt-"+netconfigtest.UniqueSuffix()+"-cli")
		cmd = ns.Command(bin, "agent", "--config", cfg)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return stderr.String(), err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("dcmesh agent still running after 30 s: it hangs (stderr: %s)", stderr.String())
		return "", nil
	}
}

// writeAgentConfig writes a minimal static configuration whose key file is
// dir/wg.key.
func writeAgentConfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(dir, "dcmesh.yaml")
	iface := "dcm" + netconfigtest.UniqueSuffix() + "c"
	t.Cleanup(func() { _ = os.Remove("/var/run/wireguard/" + iface + ".sock") }) // left if an agent wrongly started and was killed
	if err := os.WriteFile(cfg, []byte("site: a\ninterface: "+iface+"\nprivate_key_file: wg.key\noverlay_address: 10.255.0.1/32\nstate_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// mkfifo makes a FIFO and, at cleanup, unblocks any reader stuck opening it.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
}

// TestBashCompletionNeverRunsACommand: a TAB after "--" must not make the
// script hand dcmesh a "--": urfave/cli then turns completion off and runs
// the command (a TAB after `dcmesh rotate --` started a rotation). The
// script is run by bash against a stand-in dcmesh that records how it is
// called.
func TestBashCompletionNeverRunsACommand(t *testing.T) {
	requireTool(t, "bash")
	script, err := runCLI(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	for _, words := range [][]string{{"dcmesh", "rotate", "--"}, {"dcmesh", "rotate", "--em"}, {"dcmesh", "leave", "-"}, {"dcmesh", "down", "--", "x"}, {"dcmesh", "rot"}} {
		sh := script + fmt.Sprintf("\ndcmesh() { printf '%%s\\n' \"$*\" >> %q; }\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_dcmesh_complete\n",
			calls, strings.Join(words, " "), len(words)-1)
		if out, err := exec.Command("bash", "-c", sh).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", words, err, out)
		}
	}
	raw, _ := os.ReadFile(calls)
	for _, call := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if !strings.HasSuffix(call, "--generate-bash-completion") || slices.Contains(strings.Fields(call), "--") {
			t.Errorf("the completion script called dcmesh %q: that runs the command", call)
		}
	}
	if n := strings.Count(string(raw), "\n"); n != 4 {
		t.Errorf("%d calls, want 4 (none after a \"--\" on the line):\n%s", n, raw)
	}
}
