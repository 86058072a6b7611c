package main

// Dead peers must not stall live ones: the embedded device's packet pools
// (userspace.buffers_per_pool) are shared by every peer, and wireguard-go
// stages the outbound packets of a peer without a session (up to
// QueueStagedSize batches of them, each packet holding a 64 KiB message
// buffer) until its handshake attempts give up. When a partition makes
// several sites unreachable while traffic still flows toward them, their
// staged packets must not take every buffer: the TUN reader would block and
// the tunnels to the reachable sites would stop too.
//
// The test runs site A (a real agent) with one live peer B (a real agent)
// and K dead peers (valid keys, endpoints on the underlay that nobody
// answers), pings A→B every 10 ms, and blasts UDP from A's site prefix into
// every dead peer's prefix (plain datagrams, fragmented large datagrams and
// UDP GSO sends, as QUIC stacks do). A→B must keep flowing during and after
// the blast.
//
// DCMESH_DEADPEER_POOLS lists the buffers_per_pool settings to run
// ("default" for the agent's default; e.g. "default,0,4096"),
// DCMESH_DEADPEER_K the number of dead peers (default 8),
// DCMESH_DEADPEER_FLOWS the flows toward each (see dpeerFlows),
// DCMESH_DEADPEER_MBPS their total rate (default 200 Mbit/s).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcmesh/dcmesh/cmd/dcmesh/internal/sitetest"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

const (
	dpeerPingInterval = 10 * time.Millisecond
	dpeerBaseline     = 3 * time.Second
	dpeerBlast        = 12 * time.Second
	dpeerAfter        = 6 * time.Second
	// dpeerMaxLoss and dpeerMaxGap are what A→B may lose while the dead
	// peers take traffic: a healthy tunnel under this load on a busy
	// 2-core machine loses a few pings, a stalled one loses all of them.
	dpeerMaxLoss = 0.10
	dpeerMaxGap  = 1 * time.Second
)

func TestDeadPeersDoNotStallLivePeers(t *testing.T) {
	netconfigtest.RequireRoot(t)
	requireTool(t, "ip", "nsenter", "wg", "ping")
	pools := []string{"default"}
	if v := os.Getenv("DCMESH_DEADPEER_POOLS"); v != "" {
		pools = strings.Split(v, ",")
	}
	k := sitetest.EnvInt("DCMESH_DEADPEER_K", 8)
	for _, pool := range pools {
		pool = strings.TrimSpace(pool)
		t.Run("buffers_per_pool="+pool, func(t *testing.T) { runDeadPeers(t, pool, k) })
	}
}

// dpeerResult is one ping phase: pings sent, lost, and the longest run of
// consecutive lost pings as time.
type dpeerResult struct {
	sent, lost int
	gap        time.Duration
}

func (r dpeerResult) loss() float64 {
	if r.sent == 0 {
		return 1
	}
	return float64(r.lost) / float64(r.sent)
}

func (r dpeerResult) String() string {
	return fmt.Sprintf("sent %d, lost %d (%.1f%%), longest gap %s", r.sent, r.lost, 100*r.loss(), r.gap)
}

func runDeadPeers(t *testing.T, pool string, k int) {
	m := newMesh(t, 2)
	a, b := m.sites[0], m.sites[1]
	b.writeConfig(nil)

	// The dead peers: valid public keys, endpoints on the underlay where no
	// host answers, a prefix each.
	var dead []peerSpec
	for i := 1; i <= k; i++ {
		keyPath := filepath.Join(m.dir, fmt.Sprintf("dead%d.key", i))
		out, err := dpeerCommand(dcmeshBinary(t), "key", "generate", "--out", keyPath)
		if err != nil {
			t.Fatalf("key generate: %v\n%s", err, out)
		}
		dead = append(dead, peerSpec{
			name:     fmt.Sprintf("dead%d", i),
			pub:      strings.TrimSpace(out),
			endpoint: fmt.Sprintf("192.168.%d.%d:51820", m.subnet, 100+i),
			prefixes: []string{fmt.Sprintf("10.%d.0.0/24", 100+i)},
		})
	}
	userspace := ""
	if pool != "default" {
		if _, err := strconv.Atoi(pool); err != nil {
			t.Fatalf("DCMESH_DEADPEER_POOLS: %q is not a number or \"default\"", pool)
		}
		userspace = "userspace: {buffers_per_pool: " + pool + "}\n"
	}
	dpeerWriteConfig(t, a, userspace, dead)
	a.start()
	b.start()
	a.waitHandshakesWith(false, b)
	b.waitHandshakes(a)
	if err := a.ping(b, 3); err != nil {
		t.Fatal(err)
	}
	pid := a.agentPID(t)

	base := dpeerPing(t, a, b, dpeerBaseline)
	t.Logf("before the blast: A→B %v", base)

	// Blast the dead peers while pinging B.
	var sent atomic.Int64
	// Paced: the point is staged packets, not a CPU-bound flood that
	// would congest the TUN queue for every peer alike.
	rate := int64(sitetest.EnvInt("DCMESH_DEADPEER_MBPS", 200)) * 1e6 / 8
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range dead {
		dst := netip4(fmt.Sprintf("10.%d.0.1", 101+i))
		flows := dpeerFlows(t)
		for _, f := range flows {
			c := dpeerSocket(t, a, f.gso)
			wg.Add(1)
			go func() {
				defer wg.Done()
				dpeerSend(c, dst, f.size, rate/int64(len(dead)*len(flows)), stop, &sent)
			}()
		}
	}
	during := dpeerPing(t, a, b, dpeerBlast)
	close(stop)
	wg.Wait()
	t.Logf("during the blast: A→B %v; %d MB written toward %d dead peers", during, sent.Load()>>20, k)
	// DCMESH_DEADPEER_AFTER (seconds) watches longer for the recovery.
	after := dpeerPing(t, a, b, time.Duration(sitetest.EnvInt("DCMESH_DEADPEER_AFTER", int(dpeerAfter/time.Second)))*time.Second)
	hwm := peakKB(t, pid)
	t.Logf("after the blast: A→B %v", after)
	t.Logf("RESULT buffers_per_pool=%s dead=%d: before %v | during %v | after %v | agent VmHWM %d kB",
		pool, k, base, during, after, hwm)

	for _, p := range []struct {
		what string
		r    dpeerResult
	}{{"during", during}, {"after", after}} {
		if p.r.loss() > dpeerMaxLoss || p.r.gap > dpeerMaxGap {
			t.Errorf("A→B stalled %s the blast toward %d dead peers (buffers_per_pool %s): %v; want loss ≤ %.0f%% and no gap over %s",
				p.what, k, pool, p.r, 100*dpeerMaxLoss, dpeerMaxGap)
		}
	}
}

type dpeerFlow struct{ size, gso int }

// dpeerFlows are the flows toward each dead peer: by default 1200-byte
// datagrams, 8000-byte datagrams (IP fragments through the TUN) and
// 64000-byte UDP GSO writes in 1392-byte segments.
// DCMESH_DEADPEER_FLOWS overrides them: "1200,8000,64000g" (g: GSO).
func dpeerFlows(t *testing.T) []dpeerFlow {
	v := os.Getenv("DCMESH_DEADPEER_FLOWS")
	if v == "" {
		return []dpeerFlow{{1200, 0}, {8000, 0}, {64000, 1392}}
	}
	var fs []dpeerFlow
	for _, f := range strings.Split(v, ",") {
		n, gso := strings.CutSuffix(strings.TrimSpace(f), "g")
		size, err := strconv.Atoi(n)
		if err != nil || size <= 0 || size > 65000 {
			t.Fatalf("DCMESH_DEADPEER_FLOWS: bad flow %q", f)
		}
		fl := dpeerFlow{size: size}
		if gso {
			fl.gso = 1392
		}
		fs = append(fs, fl)
	}
	return fs
}

func netip4(s string) *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP(s).To4(), Port: 9} }

func dpeerCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// dpeerWriteConfig writes s's config like writeConfig, with the userspace
// section and the dead peers added.
func dpeerWriteConfig(t *testing.T, s *site, userspace string, dead []peerSpec) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "site: %s\ninterface: %s\nprivate_key_file: %s\noverlay_address: %s/32\nlocal_prefixes: [%s]\nwireguard: %s\nresync_interval: 2s\nstate_dir: %s\n%speers:\n",
		s.name, s.iface, s.keyPath, s.overlay(), s.prefix(), s.m.backend, filepath.Join(s.m.dir, s.name+"-state"), userspace)
	for _, o := range s.m.sites {
		if o != s {
			fmt.Fprintf(&b, "  - name: %s\n    public_key: %s\n    endpoint: %s:51820\n    allowed_prefixes: [%s, %s/32]\n",
				o.name, o.pub, o.underlay(), o.prefix(), o.overlay())
		}
	}
	for _, p := range dead {
		fmt.Fprintf(&b, "  - name: %s\n    public_key: %s\n    endpoint: %s\n    allowed_prefixes: [%s]\n",
			p.name, p.pub, p.endpoint, strings.Join(p.prefixes, ", "))
	}
	if err := os.WriteFile(s.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

var dpeerReplyRE = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
var dpeerSentRE = regexp.MustCompile(`(\d+) packets transmitted`)

// dpeerPing pings o from s every 10 ms for d and reports the losses.
func dpeerPing(t *testing.T, s, o *site, d time.Duration) dpeerResult {
	t.Helper()
	secs := strconv.Itoa(int(d / time.Second))
	out, _ := s.ns.Try("ping", "-n", "-i", "0.01", "-W", "1", "-w", secs, "-I", s.host(), o.host())
	m := dpeerSentRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s → %s: no statistics:\n%s", s.name, o.name, out)
	}
	var r dpeerResult
	r.sent, _ = strconv.Atoi(m[1])
	got := map[int]bool{}
	for _, mm := range dpeerReplyRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(mm[1])
		got[n] = true
	}
	run := 0
	for seq := 1; seq <= r.sent; seq++ {
		if got[seq] {
			run = 0
			continue
		}
		r.lost++
		run++
		if g := time.Duration(run) * dpeerPingInterval; g > r.gap {
			r.gap = g
		}
	}
	return r
}

// dpeerSocket opens a UDP socket inside s's namespace, bound to s's site
// address; with gso > 0 every write leaves as UDP segments of gso bytes
// (UDP_SEGMENT), one superpacket through the TUN where the kernel allows.
func dpeerSocket(t *testing.T, s *site, gso int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := s.ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(s.host()).To4()})
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		t.Fatalf("UDP socket in %s: %v", s.ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	if gso > 0 {
		rc, err := c.SyscallConn()
		if err == nil {
			cerr := rc.Control(func(fd uintptr) {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, gso)
			})
			err = errors.Join(err, cerr)
		}
		if err != nil {
			t.Fatalf("UDP_SEGMENT: %v", err)
		}
	}
	return c
}

// dpeerSend writes size-byte datagrams to dst at rate bytes per second
// until stop closes.
func dpeerSend(c *net.UDPConn, dst *net.UDPAddr, size int, rate int64, stop <-chan struct{}, sent *atomic.Int64) {
	buf := make([]byte, size)
	start := time.Now()
	var written int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * float64(rate))
		// A write never blocks past the stop by much.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		for n := 0; written < due && n < 64; n++ {
			// Errors (ENOBUFS, a deadline) count as written: the
			// pacing is of attempts.
			_, _ = c.WriteToUDP(buf, dst)
			written += int64(size)
			sent.Add(int64(size))
		}
	}
}
