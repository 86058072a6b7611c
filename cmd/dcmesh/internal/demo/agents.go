package demo

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
)

var pubKeyLine = regexp.MustCompile(`WireGuard public key: (\S+)`)

// bootstrap runs the real enrollment: ca init, ca issue and init per site.
func (d *demo) bootstrap(ctx context.Context) error {
	if _, err := d.dcmesh(ctx, true, "ca", "init", "--dir", "ca", "--cluster", "demo"); err != nil {
		return err
	}
	for _, s := range d.sites {
		if _, err := d.dcmesh(ctx, true, "ca", "issue", "--dir", "ca", "--site", s.name, "--prefix", s.prefix.String(),
			"--overlay", s.overlay.String(), "--underlay", d.subnet.String(), "--out", s.name+"-bundle"); err != nil {
			return err
		}
	}
	seed := netip.AddrPortFrom(d.sites[0].underlay, gossipPort).String()
	for _, s := range d.sites {
		args := []string{"init", "--bundle", s.name + "-bundle", "--state-dir", s.name,
			"--endpoint", netip.AddrPortFrom(s.underlay, wgPort).String(), "--interface", s.iface}
		if s.idx > 1 {
			args = append(args, "--join", seed)
		}
		out, err := d.dcmesh(ctx, true, args...)
		if err != nil {
			return err
		}
		m := pubKeyLine.FindStringSubmatch(out)
		if m == nil {
			return fmt.Errorf("dcmesh init for %s printed no public key", s.name)
		}
		s.pub = m[1]
		// The generated file ends inside its gossip: mapping; then top level.
		f, err := os.OpenFile(filepath.Join(d.dir, s.cfg), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString("  profile: lan\n  rejoin_interval: 1s\nwireguard: userspace\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.cfg, err)
		}
	}
	d.say("each state directory holds the site's certificate, identity and gossip keys and a new WireGuard key (files 0600, never printed)")
	d.say("appended to each dcmesh.yaml: gossip profile lan, rejoin_interval 1s, wireguard userspace (the embedded backend)")
	return nil
}

func (d *demo) startAgents(ctx context.Context) error {
	for _, s := range d.sites {
		if err := d.startAgent(s); err != nil {
			return err
		}
		d.say("$ nsenter --net=%s -- dcmesh agent --config %s   (log: %s.log)", nsPath(s.ns), s.cfg, s.name)
	}
	for _, s := range d.sites {
		if err := d.waitRunning(ctx, s); err != nil {
			return err
		}
		d.say("%s: agent running (pid %d), WireGuard interface %s", s.name, s.agent.Process.Pid, s.iface)
	}
	d.say("all %d agents running", len(d.sites))
	return nil
}

func (d *demo) startAgent(s *site) error {
	s.log = filepath.Join(d.dir, s.name+".log")
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(d.nsenter, "--net="+nsPath(s.ns), "--", d.bin, "agent", "--config", s.cfg)
	cmd.Dir = d.dir
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: Ctrl-C reaches the demo only, which then stops the
	// agents itself. Pdeathsig: should the demo be killed outright, the
	// agents go too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s agent: %w", s.name, err)
	}
	s.agent = cmd
	s.done = make(chan struct{})
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	return nil
}

func (d *demo) waitRunning(ctx context.Context, s *site) error {
	deadline := time.Now().Add(agentStartTimeout)
	for {
		if b, _ := os.ReadFile(s.log); bytes.Contains(b, []byte("agent running")) {
			return nil
		}
		select {
		case <-s.done:
			return d.agentFailed(s, fmt.Errorf("exited during start: %v", s.waitErr))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return d.agentFailed(s, fmt.Errorf("did not report running within %s", agentStartTimeout))
		}
	}
}

// agentFailed prints the end of the agent's log (the work directory goes
// away with the cleanup) and returns err about it.
func (d *demo) agentFailed(s *site, err error) error {
	d.say("last lines of %s's agent log:", s.name)
	d.block(tail(s.log, 20))
	return fmt.Errorf("%s agent: %w", s.name, err)
}

// handshakes returns the public keys of the peers s has a handshake with.
func (d *demo) handshakes(ctx context.Context, s *site) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := control.NewClient(config.StateDir(filepath.Join(d.dir, s.name)).ControlSocket()).Status(ctx)
	if err != nil {
		return nil, err
	}
	got := map[string]bool{}
	for _, p := range st.Peers {
		if p.LastHandshake != nil && !p.LastHandshake.IsZero() {
			got[p.PublicKey] = true
		}
	}
	return got, nil
}

// waitMesh waits until every site has a handshake with every other.
func (d *demo) waitMesh(ctx context.Context) error {
	start := time.Now()
	pending := map[*site][]string{}
	for _, s := range d.sites {
		pending[s] = nil
	}
	for {
		for _, s := range d.sites {
			if _, ok := pending[s]; !ok {
				continue
			}
			select {
			case <-s.done:
				return d.agentFailed(s, fmt.Errorf("exited: %v", s.waitErr))
			default:
			}
			hs, err := d.handshakes(ctx, s)
			if err != nil {
				pending[s] = []string{"(status: " + firstLine(err.Error()) + ")"}
				continue
			}
			var missing, have []string
			for _, o := range d.sites {
				switch {
				case o == s:
				case hs[o.pub]:
					have = append(have, o.name)
				default:
					missing = append(missing, o.name)
				}
			}
			if len(missing) == 0 {
				delete(pending, s)
				d.say("%s: handshake with %s after %s", s.name, strings.Join(have, ", "), seconds(time.Since(start)))
			} else {
				pending[s] = missing
			}
		}
		if len(pending) == 0 {
			n := len(d.sites)
			d.say("full mesh: %d sites, %d tunnels, every site has a handshake with every other, %s after the agents started", n, n*(n-1)/2, seconds(time.Since(start)))
			return nil
		}
		if time.Since(start) > meshTimeout {
			var last *site
			for _, s := range d.sites {
				if missing, ok := pending[s]; ok {
					d.say("%s: still no handshake with %s", s.name, strings.Join(missing, ", "))
					last = s
				}
			}
			return d.agentFailed(last, fmt.Errorf("no full mesh within %s", meshTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dcmesh runs the dcmesh binary in the work directory (paths in arguments
// are relative to it), optionally showing the command first.
func (d *demo) dcmesh(ctx context.Context, show bool, args ...string) (string, error) {
	if show {
		d.say("$ dcmesh %s", strings.Join(args, " "))
	}
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Dir = d.dir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return string(out), ctx.Err()
		}
		return string(out), fmt.Errorf("dcmesh %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cleanEnv is the environment without DCMESH_* variables, which would point
// the commands at another agent or configuration.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DCMESH_") {
			env = append(env, kv)
		}
	}
	return env
}
