// Package demo runs a whole dcmesh mesh on one machine, for `dcmesh demo`:
// N sites in network namespaces on a bridged underlay, bootstrapped with the
// real CLI (ca init, ca issue, init), one agent per site with the embedded
// WireGuard backend, then handshakes, traffic between the sites' prefixes, a
// forced key rotation and the status table. Everything it creates is
// removed at the end, also when it fails or is interrupted.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
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
