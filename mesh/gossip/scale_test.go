package gossip_test

// Gossip at scale: N sites in one process, each a real gossip.Gossip (real
// memberlist on its own loopback UDP/TCP port, AES-GCM with a gossip key, the
// agent's default profile) with the agent's real store and ingest of
// received gossip (mesh/records), exchanging real signed records. The
// benchmark reports how long until every node holds every record, the bytes
// each node sends and receives once nothing changes, and memory per node:
//
//	go test -run '^$' -bench 'GossipScale' -benchtime 1x ./mesh/gossip
//
// TestGossipScaleSmoke runs the same experiment with a few nodes in CI.
//
// What each node does, as the agent does it (mesh/gossip.go, mesh/runtime.go):
//   - publish: sign a record, set the push/pull state to every record held
//     (records.Store.State), Broadcast it, and SendToAll it directly (at
//     start the agent publishes before gossip.Run joins anyone, so that
//     SendToAll reaches nobody);
//   - hand its own record directly to every member that joins (Joins);
//   - take each received payload only when the last one is done, and work
//     through it in bounded turns (records.Ingest.Take and Turn: recognise
//     records held or refused before by hash, check the rest, keep the
//     newer ones), broadcasting what a turn accepted, and committing (the
//     push/pull state, and the roster of certified sites: every site whose
//     record it holds, at the gossip address the experiment gave it — the
//     agent takes that from the record) when the ingest says so.
//
// Differences, on purpose:
//   - Decoding is shared. DecodeRecordPinned (the record's and its
//     certificate's Ed25519 signatures) of one record gives the same answer
//     at every node, and N nodes checking N records is N² signature checks
//     on two cores that really are spread over N machines. So the decoded
//     record is cached by its bytes across nodes (records.Ingest.SetDecoder;
//     sharing it also shares the certificate's cached CA check); each node
//     still decodes every push/pull state, hashes every record it is
//     offered, and runs the policy checks on those it does not hold. The
//     per-node cost of verifying is measured separately (verify metrics)
//     and the records that reach the decoder are counted (decoded), so the
//     CPU a site would spend is decoded/s × cost per record.
//   - Committing only re-encodes the push/pull state and sets the roster:
//     no store file, no reconcile.
//   - Direct sends to newcomers go through two workers per node instead of a
//     goroutine each: a thousand nodes learning a thousand members at once
//     would otherwise start a million goroutines in this one process.
//   - No known-peers file, no disk, no WireGuard.
//
// Knobs for long runs (Go durations): DCMESH_GOSSIP_CONVERGE (the wait for
// convergence, default 5m), DCMESH_GOSSIP_DRAIN, DCMESH_GOSSIP_STEADY
// (default 60s; memberlist's push/pull interval is 60s·(⌈log2 N − 5⌉+1) in
// the WAN profile, 180s at 100 sites), DCMESH_GOSSIP_REFRESH (the refresh
// window, default 60s), DCMESH_GOSSIP_SIZES (a comma-separated list of
// extra site counts, each run as wan/direct and wan/nodirect), and
// DCMESH_GOSSIP_CPUPROFILE (a file name prefix: a CPU profile of each
// run's convergence phase alone, written even if the run is cut short
// afterwards, to PREFIX.SITES-PROFILE-DIRECT).
// With -v the convergence is logged every 5s: records held (least, mean),
// nodes holding all, members seen, CPU.
//
// Bytes are what memberlist hands to and reads from its sockets (labels,
// encryption, compression included; IP/UDP/TCP headers not), counted by a
// wrapper around memberlist's own NetTransport (gossip.Config.Transport).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/hashicorp/memberlist"
)

// scaleParams describes one experiment.
type scaleParams struct {
	Sites   int
	Profile gossip.Profile
	// Direct enables the agent's direct sends: our record to each newcomer
	// (Joins) and SendToAll on publish.
	Direct bool
	// Seeds is how many of the first nodes every node joins.
	Seeds int
	// ConvergeTimeout bounds the wait for every node to hold every record.
	ConvergeTimeout time.Duration
	// DrainTimeout bounds the wait, after convergence, for every node's
	// broadcast queue to empty (each accepted record is re-broadcast
	// RetransmitMult·log10(N+1) times).
	DrainTimeout time.Duration
	// Steady is the measurement window with nothing changing.
	Steady time.Duration
	// Refresh sites re-publish their record (as the agent's RecordRefresh
	// does) after the steady window; RefreshWindow bounds the wait for the
	// new records to reach everyone and the queues to drain again, which is
	// the byte-counting window.
	Refresh       int
	RefreshWindow time.Duration
}

// scaleResult is what an experiment measured.
type scaleResult struct {
	Sites int

	Converged     bool
	Progress      []progressSample // during convergence, every 5s
	Convergence   time.Duration    // start of Run on all nodes → every node holds every record
	Membership    time.Duration    // → every node sees every other alive (0: not seen)
	ConvergeBytes float64          // sent+received per node until convergence
	ConvergeCPU   time.Duration    // process CPU (user+sys) until convergence
	Dropped       uint64           // inbox and joins overflows, all nodes

	Drained    bool
	DrainTime  time.Duration // convergence → every broadcast queue empty
	DrainQueue int           // broadcasts queued, all nodes, at convergence
	DrainRate  float64       // sent+received bytes/s per node meanwhile
	Leftover   int           // broadcasts still queued when the steady window began

	SteadyWindow    time.Duration
	SteadyRate      float64 // sent+received bytes/s per node, raw
	SteadyUDPRate   float64
	SteadyTCPRate   float64
	SteadyMaxNode   float64 // the busiest node's sent+received bytes/s
	SteadyPushPulls int     // push/pull exchanges in the window
	PushPullBytes   float64 // bytes (both ends, both ways) per push/pull
	PushPullEvery   time.Duration
	SteadyModelRate float64 // UDP rate + push/pulls at memberlist's steady rate
	SteadyOffered   float64 // records offered per node per second (each a DecodeRecord in the agent)
	SteadyCPU       float64 // process CPU seconds per second in the window

	HeapPerNode       float64 // HeapInuse after GC, minus the baseline, / Sites
	SysPerNode        float64 // runtime Sys growth / Sites
	GoroutinesPerNode float64

	RecordBytes   int           // one signed record
	StateBytes    int           // the push/pull state of all records
	VerifyRecord  time.Duration // DecodeRecord + CheckRecord of one record
	VerifyAll     time.Duration // ... of all Sites records, once: per node
	EncodeState   time.Duration // EncodeState of all records
	DecodedPerRec float64       // heap bytes of one decoded SignedRecord

	RefreshDone    bool
	RefreshTime    time.Duration // re-published records → at every node
	RefreshDrained time.Duration // → every queue empty again (0: not within the window)
	RefreshUDPPer  float64       // UDP bytes per node per re-published record, net of the steady rate
	RefreshTCPPer  float64       // TCP bytes per node per re-published record, net of push/pulls
	DirectSends    int64         // direct sends attempted (SendTo on join, SendToAll members)
	DirectFailures int64
	SteadyDecoded  float64 // records per node per second that reached the verifier
	Shutdown       time.Duration
}

// progressSample is the state of the cluster at one moment of convergence.
type progressSample struct {
	At       time.Duration
	MinHeld  int64   // records (own included) of the least-informed node
	MeanHeld float64 // fraction of all records held, mean over nodes
	Complete float64 // fraction of nodes holding every record
	Members  float64 // alive members seen, mean over 16 nodes, fraction of N
	CPU      float64 // process CPU cores since the previous sample
	Bytes    float64 // sent+received per node so far
}

// ---- byte counting ----

type counters struct {
	udpTx, udpRx, tcpTx, tcpRx atomic.Int64
}

func (c *counters) total() int64 {
	return c.udpTx.Load() + c.udpRx.Load() + c.tcpTx.Load() + c.tcpRx.Load()
}
func (c *counters) udp() int64 { return c.udpTx.Load() + c.udpRx.Load() }
func (c *counters) tcp() int64 { return c.tcpTx.Load() + c.tcpRx.Load() }

// countingTransport is memberlist's NetTransport with every byte counted.
type countingTransport struct {
	*memberlist.NetTransport
	c       *counters
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{} // closed when Shutdown begins: stop forwarding
	drained chan struct{} // closed when the NetTransport stopped: stop draining
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(nt *memberlist.NetTransport, c *counters) *countingTransport {
	t := &countingTransport{NetTransport: nt, c: c, packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn), done: make(chan struct{}), drained: make(chan struct{})}
	// The NetTransport's listeners block handing over a packet or a
	// connection, and its Shutdown waits for them: keep taking (and
	// dropping) until it has returned.
	go func() {
		for {
			select {
			case p := <-nt.PacketCh():
				c.udpRx.Add(int64(len(p.Buf)))
				select {
				case t.packets <- p:
				case <-t.done:
				}
			case <-t.drained:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case conn := <-nt.StreamCh():
				select {
				case t.streams <- &countingConn{Conn: conn, c: c}:
				case <-t.done:
					conn.Close()
				}
			case <-t.drained:
				return
			}
		}
	}()
	return t
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.NetTransport.WriteTo(b, addr)
	if err == nil {
		t.c.udpTx.Add(int64(len(b)))
	}
	return ts, err
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ts, err := t.NetTransport.WriteToAddress(b, a)
	if err == nil {
		t.c.udpTx.Add(int64(len(b)))
	}
	return ts, err
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: t.c}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: t.c}, nil
}

func (t *countingTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.done)
		err = t.NetTransport.Shutdown()
		close(t.drained)
	})
	return err
}

type countingConn struct {
	net.Conn
	c *counters
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.tcpRx.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.tcpTx.Add(int64(n))
	return n, err
}

// ---- shared verification ----

// verifier shares the decoding of records (trust.DecodeRecordPinned, the
// record's signature and its CA's) across the nodes of one process: the
// same bytes give the same record everywhere. Sharing the decoded record
// also shares its certificate's cached CA check (trust.Certificate.Verify),
// so CheckRecord's signature work is shared too.
type verifier struct {
	policy *trust.Policy // for verifyCost
	mu     sync.RWMutex
	m      map[string]verdict
}

type verdict struct {
	sr  *trust.SignedRecord
	err error
}

func (v *verifier) decode(raw []byte, cas []*x509.Certificate) (*trust.SignedRecord, error) {
	v.mu.RLock()
	r, ok := v.m[string(raw)]
	v.mu.RUnlock()
	if ok {
		return r.sr, r.err
	}
	r.sr, r.err = trust.DecodeRecordPinned(raw, cas)
	v.mu.Lock()
	v.m[string(raw)] = r
	v.mu.Unlock()
	return r.sr, r.err
}

// ---- one simulated site ----

// simNode is one site: a real gossip node, and the agent's real store and
// ingest of received gossip (mesh/records), driven as the agent's loop
// drives them. Committing only re-encodes the push/pull state and sets the
// roster: no store file, no reconcile.
type simNode struct {
	exp   *experiment
	name  string
	idx   int
	cert  *trust.Certificate
	key   ed25519.PrivateKey
	g     *gossip.Gossip
	c     *counters
	store *records.Store
	in    *records.Ingest

	seq    uint64              // loop goroutine only (and publish before the loop starts)
	roster int                 // loop goroutine only: sites in the roster last set
	ownRec *trust.SignedRecord // loop goroutine only
	own    atomic.Pointer[[]byte]
	more   chan struct{} // another ingest turn, as the agent's ingestMore
	pub    chan struct{}
	sendq  chan string
	failed atomic.Value // error from the loop

	accepted atomic.Int64 // records accepted (each relayed once: Result.Relay)
	offered  atomic.Int64 // records offered (received in any form)
	decoded  atomic.Int64 // records not held that reached the decoder
	states   atomic.Int64 // push/pull states received
}

type experiment struct {
	p       scaleParams
	addrs   map[string]netip.AddrPort // site → gossip address, written before any node starts
	ver     *verifier
	nodes   []*simNode
	sends   atomic.Int64
	sendErr atomic.Int64
}

// newSimNode gives a node the agent's store and ingest, with the policy the
// agent would check records against and the shared decoder.
func newSimNode(exp *experiment, name string, idx int, cert *trust.Certificate, key ed25519.PrivateKey, g *gossip.Gossip, c *counters, dir string) *simNode {
	n := &simNode{exp: exp, name: name, idx: idx, cert: cert, key: key, g: g, c: c,
		more: make(chan struct{}, 1), pub: make(chan struct{}, 1), sendq: make(chan string, exp.p.Sites)}
	cas := exp.ver.policy.CAs
	local := append(slices.Clone(cert.Prefixes), netip.PrefixFrom(cert.Overlay, 32))
	policy := func() *trust.Policy {
		return &trust.Policy{CAs: cas, LocalSite: name, LocalPrefixes: local, Now: time.Now(), Skew: time.Minute}
	}
	quiet := slog.New(slog.DiscardHandler)
	n.store = records.NewStore(filepath.Join(dir, name+".json"), quiet)
	n.in = records.NewIngest(n.store, cas, policy, quiet)
	n.in.SetDecoder(func(raw []byte, cas []*x509.Certificate) (*trust.SignedRecord, error) {
		n.decoded.Add(1)
		return exp.ver.decode(raw, cas)
	})
	return n
}

// publish is the agent's publish(): a new record, the push/pull state, a
// broadcast and a direct send to every member.
func (n *simNode) publish() error {
	n.seq = trust.NextSeq(n.seq, time.Now())
	i := n.idx
	rec := trusttest.Record(n.cert, trusttest.RecordOptions{Seq: n.seq,
		Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(2 + i/250), byte(1 + i%250)}), 51820)}})
	sr, err := trust.SignRecord(rec, n.key)
	if err != nil {
		return err
	}
	n.ownRec = sr
	n.in.SetOwn(n.name, n.seq, n.cert.Serial, sr.Raw)
	msg := records.Encode(records.KindRecord, sr.Raw)
	n.own.Store(&msg)
	if err := n.setState(); err != nil {
		return err
	}
	if len(msg) <= gossip.MaxBroadcastSize {
		n.g.Broadcast("record/"+n.name, msg)
	}
	if n.exp.p.Direct {
		go func() {
			others := 0
			for _, m := range n.g.Members() {
				if m.State == "alive" && m.Name != n.name {
					others++
				}
			}
			n.exp.sends.Add(int64(others))
			if err := n.g.SendToAll(msg); err != nil {
				n.exp.sendErr.Add(1)
			}
		}()
	}
	return nil
}

// setState is the agent's updateLocalState (the store's push/pull state),
// and the roster: every site whose record the node holds, at the gossip
// address the experiment gave it (the agent takes that from the record).
func (n *simNode) setState() error {
	b, err := n.store.State(n.ownRec)
	if err != nil {
		return err
	}
	n.g.SetLocalState(b)
	if names := n.store.Names(); len(names) != n.roster {
		r := map[string]netip.AddrPort{n.name: n.exp.addrs[n.name]}
		for _, s := range names {
			r[s] = n.exp.addrs[s]
		}
		n.g.SetRoster(r)
		n.roster = len(names)
	}
	return nil
}

// take is the agent's onGossip: the payload goes to the ingest.
func (n *simNode) take(m gossip.Message) {
	if m.Kind == gossip.MsgState {
		n.states.Add(1)
	}
	before := n.in.Pending()
	n.in.Take(m)
	n.offered.Add(int64(n.in.Pending() - before))
}

// turn is the agent's ingestTurn: relay what was accepted, ask for another
// turn, commit.
func (n *simNode) turn(inboxLen int) error {
	res := n.in.Turn(inboxLen)
	for _, r := range res.Relay {
		n.g.Broadcast(r.Key, r.Msg)
	}
	n.accepted.Add(int64(len(res.Relay)))
	if res.More {
		select {
		case n.more <- struct{}{}:
		default:
		}
	}
	if res.Commit {
		return n.setState()
	}
	return nil
}

// loop is the agent's loop, reduced to gossip.
func (n *simNode) loop(ctx context.Context) {
	fail := func(err error) { n.failed.CompareAndSwap(nil, err) }
	inbox := n.g.Inbox()
	for {
		idle := inbox // the agent's inboxWhenIdle
		if n.in.Busy() {
			idle = nil
		}
		select {
		case <-ctx.Done():
			return
		case m := <-idle:
			n.take(m)
			if err := n.turn(len(inbox)); err != nil {
				fail(err)
			}
		case <-n.more:
			if err := n.turn(len(inbox)); err != nil {
				fail(err)
			}
		case name := <-n.g.Joins():
			if n.exp.p.Direct {
				select {
				case n.sendq <- name:
				default:
					n.exp.sendErr.Add(1)
				}
			}
		case <-n.pub:
			if err := n.publish(); err != nil {
				fail(err)
			}
		}
	}
}

// sender hands our record to newcomers (the agent's `joins` case).
func (n *simNode) sender(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-n.sendq:
			n.exp.sends.Add(1)
			if err := n.g.SendTo(name, *n.own.Load()); err != nil {
				n.exp.sendErr.Add(1)
			}
		}
	}
}

// ---- the experiment ----

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func raiseFileLimit(tb testing.TB, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Logf("getrlimit: %v", err)
		return
	}
	if lim.Cur >= want {
		return
	}
	old := lim.Cur
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Logf("setrlimit: %v", err)
		return
	}
	tb.Cleanup(func() {
		lim.Cur = old
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}

func heapNow() (inuse, sys uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.Sys
}

// runScale runs one experiment. It stops every node before returning.
func runScale(tb testing.TB, p scaleParams) (res scaleResult) {
	tb.Helper()
	res.Sites = p.Sites
	raiseFileLimit(tb, uint64(8*p.Sites+4096))
	goroutines0 := runtime.NumGoroutine()
	heap0, sys0 := heapNow()

	ca := trusttest.NewCA(tb)
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		tb.Fatal(err)
	}
	exp := &experiment{p: p, addrs: map[string]netip.AddrPort{}, ver: &verifier{m: map[string]verdict{}, policy: &trust.Policy{
		CAs: []*x509.Certificate{ca.Cert}, Now: time.Now(), Skew: time.Minute}}}
	mlog := log.New(io.Discard, "", 0)
	storeDir := tb.TempDir()
	quiet := slog.New(slog.DiscardHandler)

	// Certificates, and a transport per node on a free loopback port.
	type slot struct {
		t    *countingTransport
		c    *counters
		port int
	}
	slots := make([]slot, p.Sites)
	var nodesMu sync.Mutex
	stopped := false
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		if stopped {
			return
		}
		stopped = true
		cancel()
		// Shut down before waiting: gossip.Run may be inside a rejoin, whose
		// memberlist Join push/pulls with each target in turn; against
		// stopped nodes those fail at once. All nodes at once: one after
		// another, a thousand CPU-starved nodes took minutes to stop.
		var down sync.WaitGroup
		for _, n := range exp.nodes {
			down.Go(func() { _ = n.g.Shutdown() })
		}
		for _, s := range slots[len(exp.nodes):] {
			if s.t != nil {
				down.Go(func() { _ = s.t.Shutdown() })
			}
		}
		done := make(chan struct{})
		go func() { down.Wait(); wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			tb.Errorf("nodes still running 2m after shutdown began: %d goroutines", runtime.NumGoroutine())
		}
	}
	tb.Cleanup(stop)
	defer stop()
	for i := range slots {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0, Logger: mlog})
		if err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
		c := &counters{}
		slots[i] = slot{t: newCountingTransport(nt, c), c: c, port: nt.GetAutoBindPort()}
	}
	var seeds []string
	for i := range min(p.Seeds, p.Sites) {
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", slots[i].port))
	}
	for i, s := range slots {
		name := fmt.Sprintf("site-%04d", i)
		cert, idKey := trusttest.IssueWith(tb, ca, name, trusttest.CertOptions{
			Overlay: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}),
		}, fmt.Sprintf("10.%d.%d.0/24", i>>8, i&0xff))
		bind := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.port))
		exp.addrs[name] = bind
		var mySeeds []string
		for _, a := range seeds {
			if a != bind.String() {
				mySeeds = append(mySeeds, a)
			}
		}
		g, err := gossip.New(gossip.Config{NodeName: name, Bind: bind, SecretKey: gossipKey, Label: "dcmesh/" + trusttest.Cluster,
			Profile: p.Profile, Seeds: mySeeds, Transport: s.t, Logger: quiet})
		if err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
		n := newSimNode(exp, name, i, cert, idKey, g, s.c, storeDir)
		nodesMu.Lock()
		exp.nodes = append(exp.nodes, n)
		nodesMu.Unlock()
	}
	// The agent publishes before it joins (startGossip).
	for _, n := range exp.nodes {
		if err := n.publish(); err != nil {
			tb.Fatal(err)
		}
	}
	res.RecordBytes = len(*exp.nodes[0].own.Load()) - 1
	res.verifyCost(tb, exp)

	// Start: every node's loop, direct senders and gossip.Run (which joins
	// the seeds), all at once: a cold start of the whole cluster.
	stopProfile := profileConvergence(tb, p)
	start, cpu0 := time.Now(), cpuTime()
	for _, n := range exp.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.loop(ctx) }()
		if p.Direct {
			for range 2 {
				wg.Add(1)
				go func() { defer wg.Done(); n.sender(ctx) }()
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); n.g.Run(ctx) }()
	}

	// Convergence: every node holds the newest record of every other site.
	// The watch must stay cheap: with a thousand nodes on two cores it
	// competes with them for CPU (Members copies a node's whole view, so
	// membership is sampled on a few nodes and checked in full only when
	// those see everyone).
	deadline := start.Add(p.ConvergeTimeout)
	nextSample, lastCPU, lastAt := start.Add(5*time.Second), cpu0, start
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if now := time.Now(); now.After(nextSample) {
			for !nextSample.After(now) {
				nextSample = nextSample.Add(5 * time.Second)
			}
			c := cpuTime()
			s := sample(exp.nodes)
			s.At, s.CPU = now.Sub(start), (c-lastCPU).Seconds()/now.Sub(lastAt).Seconds()
			lastCPU, lastAt = c, now
			res.Progress = append(res.Progress, s)
			progress("sites=%d t=%3.0fs: held min %d, mean %.1f%%; %.1f%% of nodes complete; members seen %.1f%% (sampled); CPU %.2f cores; %.0f KB/node",
				p.Sites, s.At.Seconds(), s.MinHeld, 100*s.MeanHeld, 100*s.Complete, 100*s.Members, s.CPU, s.Bytes/1e3)
			if res.Membership == 0 && s.Members >= 1 && allMembers(exp.nodes) {
				res.Membership = time.Since(start)
			}
		}
		if minAccepted(exp.nodes) >= int64(p.Sites-1) {
			res.Converged = true
			res.Convergence = time.Since(start)
			break
		}
	}
	res.ConvergeCPU = cpuTime() - cpu0
	stopProfile()
	res.ConvergeBytes = float64(sumBytes(exp.nodes, (*counters).total)) / float64(p.Sites)
	if !res.Converged {
		tb.Logf("not converged after %v: least-informed node holds %d of %d records", p.ConvergeTimeout, minAccepted(exp.nodes)+1, p.Sites)
		// The heap live at the last collection, and the mapped memory,
		// without stopping the world: a full GC of a heap this size (or
		// ReadMemStats waiting for one), with every node still running,
		// takes minutes. Then stop the nodes first.
		ms := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"}}
		metrics.Read(ms)
		res.HeapPerNode = float64(int64(ms[0].Value.Uint64())-int64(heap0)) / float64(p.Sites)
		res.SysPerNode = float64(int64(ms[1].Value.Uint64())-int64(sys0)) / float64(p.Sites)
		res.GoroutinesPerNode = float64(runtime.NumGoroutine()-goroutines0) / float64(p.Sites)
		t := time.Now()
		stop()
		res.Shutdown = time.Since(t)
		res.fill(exp)
		return res
	}
	if res.Membership == 0 && allMembers(exp.nodes) {
		res.Membership = time.Since(start)
	}

	progress("sites=%d: converged in %v", p.Sites, res.Convergence)
	// Drain: the records every node accepted are re-broadcast for a while.
	res.DrainQueue = queued(exp.nodes)
	d0, t0 := snapshot(exp.nodes), time.Now()
	for time.Since(t0) < p.DrainTimeout {
		if queued(exp.nodes) == 0 {
			res.Drained = true
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	res.DrainTime = time.Since(t0)
	dd := snapshot(exp.nodes).minus(d0)
	res.DrainRate = float64(dd.udp+dd.tcp) / float64(p.Sites) / res.DrainTime.Seconds()
	res.Leftover = queued(exp.nodes)

	progress("sites=%d: drained=%v after %v", p.Sites, res.Drained, res.DrainTime)
	// Steady state: nothing changes for a window.
	before := snapshot(exp.nodes)
	cpu1, t1 := cpuTime(), time.Now()
	time.Sleep(p.Steady)
	after := snapshot(exp.nodes)
	res.SteadyWindow = time.Since(t1)
	res.SteadyCPU = (cpuTime() - cpu1).Seconds() / res.SteadyWindow.Seconds()
	win := res.SteadyWindow.Seconds()
	d := after.minus(before)
	N := float64(p.Sites)
	res.SteadyUDPRate = float64(d.udp) / N / win
	res.SteadyTCPRate = float64(d.tcp) / N / win
	res.SteadyRate = res.SteadyUDPRate + res.SteadyTCPRate
	res.SteadyMaxNode = float64(d.maxNode) / win
	res.SteadyPushPulls = int(d.states / 2) // both ends merge the other's state
	res.SteadyOffered = float64(d.offered) / N / win
	res.SteadyDecoded = float64(d.decoded) / N / win
	mc := memberlist.DefaultWANConfig()
	if p.Profile == gossip.ProfileLAN {
		mc = memberlist.DefaultLANConfig()
	}
	res.PushPullEvery = pushPullScale(mc.PushPullInterval, p.Sites)
	if res.SteadyPushPulls > 0 {
		res.PushPullBytes = float64(d.tcp) / float64(res.SteadyPushPulls)
		// Each node starts one push/pull per interval and is on average the
		// other end of one.
		res.SteadyModelRate = res.SteadyUDPRate + res.PushPullBytes/res.PushPullEvery.Seconds()
	}

	heap1, sys1 := heapNow()
	res.HeapPerNode = float64(int64(heap1)-int64(heap0)) / N
	res.SysPerNode = float64(int64(sys1)-int64(sys0)) / N
	res.GoroutinesPerNode = float64(runtime.NumGoroutine()-goroutines0) / N

	// Refresh: some sites re-publish, as every site does each RecordRefresh.
	if k := min(p.Refresh, p.Sites); k > 0 {
		base := snapshot(exp.nodes)
		want := make([]int64, len(exp.nodes))
		for i, n := range exp.nodes {
			want[i] = n.accepted.Load() + int64(k)
			if i < k {
				want[i]--
			}
		}
		t2 := time.Now()
		for _, n := range exp.nodes[:k] {
			n.pub <- struct{}{}
		}
		for time.Since(t2) < p.RefreshWindow {
			time.Sleep(50 * time.Millisecond)
			if !res.RefreshDone && reached(exp.nodes, want) {
				res.RefreshDone, res.RefreshTime = true, time.Since(t2)
			}
			if res.RefreshDone && queued(exp.nodes) == 0 {
				res.RefreshDrained = time.Since(t2)
				break
			}
		}
		d := snapshot(exp.nodes).minus(base)
		w := time.Since(t2).Seconds()
		res.RefreshUDPPer = (float64(d.udp)/N - res.SteadyUDPRate*w) / float64(k)
		tcp := float64(d.tcp) / N
		if res.PushPullBytes > 0 {
			tcp -= float64(d.states/2) * res.PushPullBytes / N
		}
		res.RefreshTCPPer = tcp / float64(k)
	}
	res.fill(exp)
	t3 := time.Now()
	stop()
	res.Shutdown = time.Since(t3)
	for _, n := range exp.nodes {
		if err, _ := n.failed.Load().(error); err != nil {
			tb.Errorf("%s: %v", n.name, err)
		}
	}
	return res
}

// profileConvergence writes a CPU profile of the convergence phase alone to
// DCMESH_GOSSIP_CPUPROFILE, if set (not with -cpuprofile): it is written
// even when the run then fails or is cut short.
func profileConvergence(tb testing.TB, p scaleParams) (stop func()) {
	path := os.Getenv("DCMESH_GOSSIP_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	direct := "direct"
	if !p.Direct {
		direct = "nodirect"
	}
	path = fmt.Sprintf("%s.%d-%s-%s", path, p.Sites, p.Profile, direct)
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				tb.Error(err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// progress tells a watcher of a long run (go test -v) where it is.
func progress(format string, args ...any) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

func (res *scaleResult) fill(exp *experiment) {
	for _, n := range exp.nodes {
		d := n.g.Dropped()
		res.Dropped += d.States + d.Messages + d.Joins
	}
	res.DirectSends, res.DirectFailures = exp.sends.Load(), exp.sendErr.Load()
}

// verifyCost measures what the shared cache saves each node: decoding and
// checking every site's record once, encoding them all as the push/pull
// state, and the heap the decoded records take.
func (res *scaleResult) verifyCost(tb testing.TB, exp *experiment) {
	raws := make([][]byte, len(exp.nodes))
	for i, n := range exp.nodes {
		raws[i] = (*n.own.Load())[1:]
	}
	pol := *exp.ver.policy
	h0, _ := heapNow()
	decoded := make([]*trust.SignedRecord, len(raws))
	t0 := time.Now()
	for i, raw := range raws {
		sr, err := trust.DecodeRecord(raw)
		if err != nil {
			tb.Fatal(err)
		}
		if err := pol.CheckRecord(sr, "", 0); err != nil {
			tb.Fatal(err)
		}
		decoded[i] = sr
	}
	res.VerifyAll = time.Since(t0)
	res.VerifyRecord = res.VerifyAll / time.Duration(len(raws))
	h1, _ := heapNow()
	res.DecodedPerRec = float64(int64(h1)-int64(h0)) / float64(len(raws))
	runtime.KeepAlive(decoded)
	t1 := time.Now()
	st, err := trust.EncodeState(trust.State{Records: raws})
	if err != nil {
		tb.Fatal(err)
	}
	res.EncodeState = time.Since(t1)
	res.StateBytes = len(st)
}

func queued(nodes []*simNode) int {
	q := 0
	for _, n := range nodes {
		q += n.g.QueuedBroadcasts()
	}
	return q
}

func minAccepted(nodes []*simNode) int64 {
	m := int64(-1)
	for _, n := range nodes {
		if a := n.accepted.Load(); m < 0 || a < m {
			m = a
		}
	}
	return m
}

func reached(nodes []*simNode, want []int64) bool {
	for i, n := range nodes {
		if n.accepted.Load() < want[i] {
			return false
		}
	}
	return true
}

func sample(nodes []*simNode) progressSample {
	s := progressSample{MinHeld: minAccepted(nodes) + 1}
	N := float64(len(nodes))
	for _, n := range nodes {
		a := n.accepted.Load() + 1
		s.MeanHeld += float64(a) / N / N
		if a >= int64(len(nodes)) {
			s.Complete += 1 / N
		}
		s.Bytes += float64(n.c.total()) / N
	}
	step := max(1, len(nodes)/16)
	k := 0
	for i := 0; i < len(nodes); i += step {
		alive := 0
		for _, m := range nodes[i].g.Members() {
			if m.State == "alive" {
				alive++
			}
		}
		s.Members += float64(alive) / N
		k++
	}
	s.Members /= float64(k)
	return s
}

func allMembers(nodes []*simNode) bool {
	for _, n := range nodes {
		alive := 0
		for _, m := range n.g.Members() {
			if m.State == "alive" {
				alive++
			}
		}
		if alive != len(nodes) {
			return false
		}
	}
	return true
}

func sumBytes(nodes []*simNode, f func(*counters) int64) int64 {
	var s int64
	for _, n := range nodes {
		s += f(n.c)
	}
	return s
}

type snap struct {
	udp, tcp, states, offered, decoded int64
	perNode                            []int64
	maxNode                            int64
}

func snapshot(nodes []*simNode) snap {
	s := snap{perNode: make([]int64, len(nodes))}
	for i, n := range nodes {
		s.udp += n.c.udp()
		s.tcp += n.c.tcp()
		s.states += n.states.Load()
		s.offered += n.offered.Load()
		s.decoded += n.decoded.Load()
		s.perNode[i] = n.c.total()
	}
	return s
}

func (a snap) minus(b snap) snap {
	d := snap{udp: a.udp - b.udp, tcp: a.tcp - b.tcp, states: a.states - b.states, offered: a.offered - b.offered, decoded: a.decoded - b.decoded}
	for i := range a.perNode {
		d.maxNode = max(d.maxNode, a.perNode[i]-b.perNode[i])
	}
	return d
}

// pushPullScale is memberlist's: the push/pull interval grows with the
// cluster beyond 32 nodes.
func pushPullScale(interval time.Duration, n int) time.Duration {
	if n <= 32 {
		return interval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(32))+1) * interval
}

func (res scaleResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sites=%d converged=%v in %.2fs (membership %.2fs), %.0f KB/node moved, %.1f CPU-s; dropped %d; direct sends %d (%d failed)\n",
		res.Sites, res.Converged, res.Convergence.Seconds(), res.Membership.Seconds(), res.ConvergeBytes/1e3, res.ConvergeCPU.Seconds(),
		res.Dropped, res.DirectSends, res.DirectFailures)
	fmt.Fprintf(&b, "  drain: %d broadcasts queued at convergence, drained=%v after %.1fs at %.0f B/s/node; %d left\n",
		res.DrainQueue, res.Drained, res.DrainTime.Seconds(), res.DrainRate, res.Leftover)
	fmt.Fprintf(&b, "  steady %.0fs: %.0f B/s/node raw (udp %.0f, tcp %.0f; busiest node %.0f), %d push/pulls of %.0f KB, steady-rate model %.0f B/s/node (push/pull every %v); %.2f records offered/s/node (%.3f not held); CPU %.2f cores\n",
		res.SteadyWindow.Seconds(), res.SteadyRate, res.SteadyUDPRate, res.SteadyTCPRate, res.SteadyMaxNode, res.SteadyPushPulls, res.PushPullBytes/1e3,
		res.SteadyModelRate, res.PushPullEvery, res.SteadyOffered, res.SteadyDecoded, res.SteadyCPU)
	fmt.Fprintf(&b, "  memory: heap %.0f KB/node, sys %.0f KB/node, %.1f goroutines/node; decoded record %.1f KB each\n",
		res.HeapPerNode/1e3, res.SysPerNode/1e3, res.GoroutinesPerNode, res.DecodedPerRec/1e3)
	fmt.Fprintf(&b, "  record %d B, state %d KB; verify %v/record, %v for all; EncodeState %v\n",
		res.RecordBytes, res.StateBytes/1000, res.VerifyRecord, res.VerifyAll, res.EncodeState)
	fmt.Fprintf(&b, "  refresh: done=%v in %.2fs, drained after %.1fs; per re-published record per node: udp %.0f B, tcp %.0f B",
		res.RefreshDone, res.RefreshTime.Seconds(), res.RefreshDrained.Seconds(), res.RefreshUDPPer, res.RefreshTCPPer)
	fmt.Fprintf(&b, "\n  shutdown of all nodes: %.1fs", res.Shutdown.Seconds())
	for _, s := range res.Progress {
		if sec := int(s.At.Round(time.Second).Seconds()); sec == 10 || sec == 30 || sec%60 == 0 {
			fmt.Fprintf(&b, "\n  t=%3ds: held min %d, mean %.1f%%, nodes complete %.1f%%, members seen %.1f%%, CPU %.2f, %.0f KB/node",
				sec, s.MinHeld, 100*s.MeanHeld, 100*s.Complete, 100*s.Members, s.CPU, s.Bytes/1e3)
		}
	}
	return b.String()
}

// ---- the benchmark and its smoke test ----

// BenchmarkGossipScale: each iteration is one whole experiment (cold start,
// convergence, steady window, refresh). Run by hand; it takes minutes.
func BenchmarkGossipScale(b *testing.B) {
	type scaleCase struct {
		sites   int
		profile gossip.Profile
		direct  bool
	}
	cases := []scaleCase{
		{100, gossip.ProfileWAN, true},
		{100, gossip.ProfileWAN, false},
		{1000, gossip.ProfileWAN, true},
		{1000, gossip.ProfileWAN, false},
		{1000, gossip.ProfileLAN, true},
	}
	for _, v := range strings.Split(os.Getenv("DCMESH_GOSSIP_SIZES"), ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			b.Fatalf("DCMESH_GOSSIP_SIZES: bad site count %q", v)
		}
		cases = append(cases, scaleCase{n, gossip.ProfileWAN, true}, scaleCase{n, gossip.ProfileWAN, false})
	}
	for _, c := range cases {
		direct := "direct"
		if !c.direct {
			direct = "nodirect"
		}
		b.Run(fmt.Sprintf("sites=%d/%s/%s", c.sites, c.profile, direct), func(b *testing.B) {
			p := scaleParams{Sites: c.sites, Profile: c.profile, Direct: c.direct, Seeds: 3,
				ConvergeTimeout: envDuration(b, "DCMESH_GOSSIP_CONVERGE", 5*time.Minute),
				DrainTimeout:    envDuration(b, "DCMESH_GOSSIP_DRAIN", 30*time.Minute),
				Steady:          envDuration(b, "DCMESH_GOSSIP_STEADY", 60*time.Second),
				Refresh:         10, RefreshWindow: envDuration(b, "DCMESH_GOSSIP_REFRESH", 60*time.Second)}
			for b.Loop() {
				res := runScale(b, p)
				b.Log(res)
				if !res.Converged {
					b.Fatalf("not converged within %v", p.ConvergeTimeout)
				}
				b.ReportMetric(res.Convergence.Seconds(), "converge-s")
				b.ReportMetric(res.Membership.Seconds(), "members-s")
				b.ReportMetric(res.ConvergeCPU.Seconds(), "converge-cpu-s")
				b.ReportMetric(res.ConvergeBytes/1e6, "converge-MB/node")
				b.ReportMetric(res.DrainTime.Seconds(), "drain-s")
				b.ReportMetric(res.DrainRate, "drain-B/s/node")
				b.ReportMetric(res.SteadyRate, "steady-B/s/node")
				b.ReportMetric(res.SteadyModelRate, "steady-model-B/s/node")
				b.ReportMetric(res.SteadyMaxNode, "steady-max-B/s")
				b.ReportMetric(res.HeapPerNode/1e6, "heap-MB/node")
				b.ReportMetric(float64(res.VerifyAll.Microseconds())/1e3, "verify-all-ms/node")
				b.ReportMetric(res.RefreshTime.Seconds(), "refresh-s")
				b.ReportMetric(res.RefreshUDPPer+res.RefreshTCPPer, "refresh-B/node/record")
				b.ReportMetric(float64(res.Dropped), "dropped")
			}
		})
	}
}

// envDuration is the Go duration in the environment variable name, or def.
func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

// TestGossipScaleSmoke runs the benchmark's experiment with a few nodes:
// every node must end up holding the newest record of every site, with the
// bytes counted. No timing is asserted.
func TestGossipScaleSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 16 gossip nodes, twice")
	}
	// The agent's default (WAN, direct sends), and gossip alone with the
	// faster LAN timing to keep the test short.
	for _, c := range []struct {
		profile gossip.Profile
		direct  bool
	}{{gossip.ProfileWAN, true}, {gossip.ProfileLAN, false}} {
		direct := c.direct
		t.Run(fmt.Sprintf("%s/direct=%v", c.profile, direct), func(t *testing.T) {
			// The steady window outlasts a probe interval (WAN 5 s, LAN 1
			// s): the nodes started together probe in step, so a shorter
			// window can fall between two rounds and see no UDP at all.
			steady := 2 * time.Second
			if c.profile == gossip.ProfileWAN {
				steady = 6 * time.Second
			}
			p := scaleParams{Sites: 16, Profile: c.profile, Direct: direct, Seeds: 2,
				ConvergeTimeout: 60 * time.Second, DrainTimeout: 60 * time.Second, Steady: steady,
				Refresh: 3, RefreshWindow: 20 * time.Second}
			res := runScale(t, p)
			t.Log(res)
			if !res.Converged {
				t.Fatalf("not every node holds every record after %v", p.ConvergeTimeout)
			}
			if !res.Drained || res.RefreshDrained == 0 {
				t.Errorf("broadcast queues never drained: %v", res)
			}
			if !res.RefreshDone {
				t.Errorf("re-published records did not reach every node in %v", p.RefreshWindow)
			}
			if res.ConvergeBytes <= 0 || res.SteadyRate <= 0 || res.SteadyUDPRate <= 0 {
				t.Errorf("bytes not counted: converge %.0f, steady %.0f (udp %.0f)", res.ConvergeBytes, res.SteadyRate, res.SteadyUDPRate)
			}
			if res.HeapPerNode <= 0 || res.VerifyAll <= 0 || res.StateBytes < res.RecordBytes*p.Sites {
				t.Errorf("bad measurements: %v", res)
			}
			if direct && res.DirectSends == 0 {
				t.Error("no direct sends to newcomers")
			}
			if !direct && res.DirectSends != 0 {
				t.Errorf("%d direct sends with direct sends off", res.DirectSends)
			}
		})
	}
}
