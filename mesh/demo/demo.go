// Package demo runs a whole dcmesh mesh on one machine, for `dcmesh demo`:
// N sites in network namespaces on a bridged underlay, bootstrapped with the
// real CLI (ca init, ca issue, init), one agent per site with the embedded
// WireGuard backend, then handshakes, traffic between the sites' prefixes, a
// forced key rotation and the status table. Everything it creates is
// removed at the end, also when it fails or is interrupted.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/vishvananda/netlink"
)

// Limits and defaults.
const (
	DefaultSites = 3
	MinSites     = 2
	MaxSites     = 9 // site i owns 10.i.0.0/24; one digit keeps every name short

	wgPort     = 51820
	gossipPort = 7946
	echoPort   = 7777

	agentStartTimeout = 20 * time.Second
	meshTimeout       = 60 * time.Second
	echoTimeout       = 5 * time.Second
	stopGrace         = 5 * time.Second
)

// ErrInterrupted is returned when the context was cancelled (Ctrl-C); the
// cleanup has run by then.
var ErrInterrupted = errors.New("interrupted")

// Options configures Run.
type Options struct {
	// Sites is the number of sites, 2 to 9 (0 means 3).
	Sites int
	// Binary is the dcmesh executable every step runs (ca, init, agent,
	// rotate, status); os.Executable() by default.
	Binary string
	// Out receives the narration; os.Stdout by default.
	Out io.Writer
	// Logf receives diagnostics outside the narration (problems while
	// cleaning up); by default they go to Out.
	Logf func(format string, args ...any)
	// KeepLogs keeps the agents' logs (only the logs: keys and state are
	// removed) and prints where they are.
	KeepLogs bool
}

type site struct {
	idx      int
	name     string // site1
	ns       string // dcmdemo-<id>-s1
	iface    string // dcmd<id>1
	underlay netip.Addr
	host     netip.Addr // the site's prefix, represented by an address on lo
	prefix   netip.Prefix
	overlay  netip.Addr
	pub      string // WireGuard public key from dcmesh init
	cfg      string // relative to the work directory
	log      string // absolute

	agent   *exec.Cmd
	done    chan struct{}
	waitErr error
}

type demo struct {
	o       Options
	out     io.Writer
	bin     string
	nsenter string
	id      string
	subnet  netip.Prefix
	dir     string
	ulNS    string
	sites   []*site
	begin   time.Time

	namespaces []string // ours, deleted by exact name
	listeners  []net.Listener
	connsMu    sync.Mutex
	conns      map[net.Conn]struct{}
}

// Run runs the demo. It needs root. The context ends it early (Ctrl-C);
// the cleanup runs in every case.
func Run(ctx context.Context, o Options) (err error) {
	if o.Sites == 0 {
		o.Sites = DefaultSites
	}
	if o.Sites < MinSites || o.Sites > MaxSites {
		return fmt.Errorf("--sites %d: use %d to %d (site i gets the prefix 10.i.0.0/24)", o.Sites, MinSites, MaxSites)
	}
	if os.Geteuid() != 0 {
		return errors.New("dcmesh demo needs root: it creates network namespaces; run it with sudo")
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	d := &demo{o: o, out: o.Out, bin: o.Binary, conns: map[net.Conn]struct{}{}, begin: time.Now()}
	if d.bin == "" {
		if d.bin, err = os.Executable(); err != nil {
			return fmt.Errorf("find the dcmesh executable: %w", err)
		}
	}
	if d.nsenter, err = exec.LookPath("nsenter"); err != nil {
		return errors.New("dcmesh demo runs each site's agent inside its namespace with nsenter, which is missing: install util-linux (apt-get install util-linux)")
	}
	if err := d.pickNames(); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "dcmdemo-"); err != nil {
		return err
	}
	defer func() {
		cerr := d.cleanup(ctx)
		if ctx.Err() != nil {
			if cerr == nil {
				err = fmt.Errorf("%w; everything the demo created was removed", ErrInterrupted)
			} else {
				err = errors.Join(ErrInterrupted, cerr)
			}
			return
		}
		err = errors.Join(err, cerr)
	}()
	return d.run(ctx)
}

func (d *demo) run(ctx context.Context) error {
	n := len(d.sites)
	d.printf("dcmesh demo: %d sites on this machine, each in its own network namespace, with the embedded WireGuard backend (no kernel module needed)\n", n)
	d.printf("work directory %s (CA, bundles, site state, agent logs); everything named dcmdemo-%s-* is removed at the end\n", d.dir, d.id)

	d.step(1, "topology: namespace %s with bridge br0 on %s stands in for the network between the datacenters", d.ulNS, d.subnet)
	if err := d.buildTopology(); err != nil {
		return err
	}
	for _, s := range d.sites {
		d.say("%s: namespace %s, underlay %s, site prefix %s (%s on lo), overlay %s", s.name, s.ns, s.underlay, s.prefix, s.host, s.overlay)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	d.step(2, "enrollment, as an operator does it: a cluster CA certifies each site (name, prefix, overlay, underlay range); dcmesh init sets the site up")
	if err := d.bootstrap(ctx); err != nil {
		return err
	}

	d.step(3, "agents: one per site, inside its namespace; each creates its WireGuard interface as an in-process wireguard-go device")
	if err := d.startAgents(ctx); err != nil {
		return err
	}

	d.step(4, "mesh forming: the sites gossip (all join %s), check each other's signed records against the CA, add each other as WireGuard peers and route each other's prefixes into the tunnel", d.sites[0].name)
	if err := d.waitMesh(ctx); err != nil {
		return err
	}

	d.step(5, "traffic: a TCP echo from each site's prefix to every other site's; the kernel routes remote prefixes into the WireGuard interface (checked per pair), so the underlay sees only encrypted UDP")
	for _, s := range d.sites {
		if err := d.listen(s); err != nil {
			return err
		}
	}
	for _, from := range d.sites {
		for _, to := range d.sites {
			if from == to {
				continue
			}
			if err := d.echo(ctx, from, to); err != nil {
				return err
			}
		}
	}

	s1 := d.sites[0]
	d.step(6, "forced key rotation of %s, make-before-break: the new key is announced, every peer pre-installs it and acknowledges, then %s switches", s1.name, s1.name)
	start := time.Now()
	out, err := d.dcmesh(ctx, true, "rotate", "--wait", "--timeout", "1m", "--config", s1.cfg)
	d.block(out)
	if err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	d.say("rotation done in %s; traffic to and from %s on its new key:", seconds(time.Since(start)), s1.name)
	for _, o := range d.sites[1:] {
		if err := d.echo(ctx, s1, o); err != nil {
			return err
		}
		if err := d.echo(ctx, o, s1); err != nil {
			return err
		}
	}

	d.step(7, "status of %s, as an operator sees it", s1.name)
	out, err = d.dcmesh(ctx, true, "status", "--config", s1.cfg)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.say("(status not available: %s)", firstLine(err.Error()))
	} else {
		d.block(out)
	}
	return ctx.Err()
}

// pickNames chooses the random id in every name and the underlay subnet.
func (d *demo) pickNames() error {
	for try := 0; ; try++ {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		d.id = hex.EncodeToString(b[:])
		taken := exists(nsPath("dcmdemo-" + d.id + "-ul"))
		for i := 1; i <= d.o.Sites; i++ {
			taken = taken || exists(nsPath(fmt.Sprintf("dcmdemo-%s-s%d", d.id, i))) ||
				exists(fmt.Sprintf("/var/run/wireguard/dcmd%s%d.sock", d.id, i))
		}
		if !taken {
			break
		}
		if try == 20 {
			return errors.New("could not find unused namespace names dcmdemo-XXXX-*")
		}
	}
	// Everything lives in namespaces of its own, but an underlay that the
	// host also routes would confuse whoever reads the output: avoid it.
	used, err := hostPrefixes()
	if err != nil {
		return fmt.Errorf("read this machine's routes: %w", err)
	}
	seed := int(d.id[0])<<8 | int(d.id[1])
	for k := range 150 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(100 + (seed+k)%150), 0}), 24)
		if !overlapsAny(p, used) {
			d.subnet = p
			break
		}
	}
	if !d.subnet.IsValid() {
		return errors.New("every 192.168.100-249.0/24 is routed on this machine: no free underlay subnet")
	}
	d.ulNS = "dcmdemo-" + d.id + "-ul"
	base := d.subnet.Addr().As4()
	for i := 1; i <= d.o.Sites; i++ {
		ul := base
		ul[3] = byte(i)
		name := fmt.Sprintf("site%d", i)
		d.sites = append(d.sites, &site{
			idx: i, name: name,
			ns:       fmt.Sprintf("dcmdemo-%s-s%d", d.id, i),
			iface:    fmt.Sprintf("dcmd%s%d", d.id, i),
			underlay: netip.AddrFrom4(ul),
			host:     netip.AddrFrom4([4]byte{10, byte(i), 0, 1}),
			prefix:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24),
			overlay:  netip.AddrFrom4([4]byte{10, 255, 0, byte(i)}),
			cfg:      filepath.Join(name, config.ConfigFile),
		})
	}
	return nil
}

// buildTopology creates the underlay namespace with its bridge and one
// namespace per site attached to it by a veth pair.
func (d *demo) buildTopology() error {
	if err := d.newNS(d.ulNS); err != nil {
		return err
	}
	ul, err := handleAt(d.ulNS)
	if err != nil {
		return err
	}
	defer ul.Close()
	if err := linkUp(ul, "lo"); err != nil {
		return err
	}
	if err := ul.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		return fmt.Errorf("create bridge br0 in %s: %w", d.ulNS, err)
	}
	disableIPv6(d.ulNS, "br0")
	br, err := ul.LinkByName("br0")
	if err != nil {
		return err
	}
	if err := ul.LinkSetUp(br); err != nil {
		return err
	}
	for _, s := range d.sites {
		if err := d.buildSite(ul, br, s); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func (d *demo) buildSite(ul *netlink.Handle, br netlink.Link, s *site) error {
	if err := d.newNS(s.ns); err != nil {
		return err
	}
	h, err := handleAt(s.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	if err := addAddr(h, "lo", netip.PrefixFrom(s.host, 24)); err != nil {
		return err
	}
	fd, err := os.Open(nsPath(s.ns))
	if err != nil {
		return err
	}
	// A veth pair: "siteN" on the underlay bridge, "eth0" in the site.
	port := s.name
	err = ul.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd.Fd()))})
	fd.Close()
	if err != nil {
		return fmt.Errorf("create veth %s/eth0: %w", port, err)
	}
	disableIPv6(d.ulNS, port)
	disableIPv6(s.ns, "eth0")
	p, err := ul.LinkByName(port)
	if err != nil {
		return err
	}
	if err := ul.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("attach %s to br0: %w", port, err)
	}
	if err := ul.LinkSetUp(p); err != nil {
		return err
	}
	if err := addAddr(h, "eth0", netip.PrefixFrom(s.underlay, d.subnet.Bits())); err != nil {
		return err
	}
	return linkUp(h, "eth0")
}

// newNS creates a namespace and records it for the cleanup, unless the name
// was someone else's.
func (d *demo) newNS(name string) error {
	err := newNamedNS(name)
	if errors.Is(err, errNSExists) {
		return fmt.Errorf("network namespace %s already exists; not touching it", name)
	}
	d.namespaces = append(d.namespaces, name)
	return err
}

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

// listen starts an echo server on the site's prefix address, inside its
// namespace.
func (d *demo) listen(s *site) error {
	var ln net.Listener
	err := inNS(s.ns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(s.host, echoPort).String())
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: echo server: %w", s.name, err)
	}
	d.listeners = append(d.listeners, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !d.track(c) {
				c.Close()
				return
			}
			go func() {
				defer d.untrack(c)
				_ = c.SetDeadline(time.Now().Add(echoTimeout))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return nil
}

func (d *demo) track(c net.Conn) bool {
	d.connsMu.Lock()
	defer d.connsMu.Unlock()
	if d.conns == nil {
		return false // cleaning up
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *demo) untrack(c net.Conn) {
	c.Close()
	d.connsMu.Lock()
	defer d.connsMu.Unlock()
	delete(d.conns, c)
}

// echo connects from from's prefix address to to's echo server through the
// tunnel, sends a line and checks it comes back.
func (d *demo) echo(ctx context.Context, from, to *site) error {
	fail := func(err error) error {
		return fmt.Errorf("%s → %s (%s → %s): %w", from.name, to.name, from.host, to.host, err)
	}
	dev, err := routeDev(from.ns, to.host)
	if err != nil {
		return fail(err)
	}
	if dev != from.iface {
		return fail(fmt.Errorf("the route to %s leads to %s, not to the WireGuard interface %s", to.host, dev, from.iface))
	}
	msg := []byte(fmt.Sprintf("hello %s, this is %s\n", to.name, from.name))
	start := time.Now()
	var c net.Conn
	err = inNS(from.ns, func() (err error) {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.host.AsSlice()}, Timeout: echoTimeout}
		c, err = dl.DialContext(ctx, "tcp4", netip.AddrPortFrom(to.host, echoPort).String())
		return err
	})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(echoTimeout))
	if _, err := c.Write(msg); err != nil {
		return fail(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		return fail(err)
	}
	if !bytes.Equal(back, msg) {
		return fail(fmt.Errorf("echo came back as %q", back))
	}
	el := time.Since(start)
	d.say("%s → %s: %s → %s over WireGuard, echo ok in %.1f ms", from.name, to.name, from.host, to.host, float64(el.Microseconds())/1000)
	return nil
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

// cleanup removes everything the demo created: agents, namespaces (their
// links, addresses and routes go with them), WireGuard sockets, the work
// directory.
func (d *demo) cleanup(ctx context.Context) error {
	if ctx.Err() != nil {
		d.printf("\ninterrupted: cleaning up\n")
	}
	d.printf("\ncleanup: stop the agents, delete the namespaces (their links, addresses and routes go with them), remove the work directory\n")
	var errs []error
	for _, ln := range d.listeners {
		ln.Close()
	}
	d.connsMu.Lock()
	for c := range d.conns {
		c.Close()
	}
	d.conns = nil
	d.connsMu.Unlock()

	var running []*site
	for _, s := range d.sites {
		if s.agent == nil {
			continue
		}
		select {
		case <-s.done:
		default:
			_ = s.agent.Process.Signal(syscall.SIGTERM)
			running = append(running, s)
		}
	}
	deadline := time.After(stopGrace)
wait:
	for _, s := range running {
		select {
		case <-s.done:
		case <-deadline:
			for _, r := range running {
				select {
				case <-r.done:
				default:
					d.logf("%s agent did not stop within %s of SIGTERM: killing it", r.name, stopGrace)
					_ = r.agent.Process.Kill()
				}
			}
			break wait
		}
	}
	for _, s := range running {
		<-s.done
	}
	stopped := len(running)

	for i := len(d.namespaces) - 1; i >= 0; i-- {
		if err := deleteNamedNS(d.namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range d.sites {
		// An embedded device's UAPI socket; its agent normally removes it.
		if err := os.Remove("/var/run/wireguard/" + s.iface + ".sock"); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	kept := false
	if d.o.KeepLogs {
		kept = true
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			errs = append(errs, err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".log") {
				if err := os.RemoveAll(filepath.Join(d.dir, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	} else if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, err)
	}
	for _, e := range errs {
		d.logf("cleanup: %v", e)
	}
	d.say("stopped %d agents, deleted %d namespaces (%s), removed the WireGuard sockets", stopped, len(d.namespaces), "dcmdemo-"+d.id+"-*")
	if kept {
		d.say("agent logs kept in %s (keys and state removed); delete it when done", d.dir)
	} else {
		d.say("removed %s", d.dir)
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %w", errors.Join(errs...))
	}
	if ctx.Err() == nil {
		d.printf("done in %s\n", seconds(time.Since(d.begin)))
	}
	return nil
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func (d *demo) step(n int, format string, args ...any) {
	d.printf("\n[%d/7] %s\n", n, fmt.Sprintf(format, args...))
}

func (d *demo) say(format string, args ...any) { d.printf("  %s\n", fmt.Sprintf(format, args...)) }

// block prints command output indented.
func (d *demo) block(s string) {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return
	}
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " "); l == "" {
			d.printf("\n")
		} else {
			d.printf("    %s\n", l)
		}
	}
}

func (d *demo) logf(format string, args ...any) {
	if d.o.Logf != nil {
		d.o.Logf(format, args...)
		return
	}
	d.say("warning: %s", fmt.Sprintf(format, args...))
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
