package main

// Flows for the multi-gateway test: many UDP flows at a fixed rate, sent
// from one site to an address that several gateways of another site hold,
// received wherever the nexthop group puts each flow. Each receiver reports
// the runs of consecutive sequence numbers it got, with their times, so
// that the test can join the receivers of all gateways and measure, per
// flow, what was lost and for how long nothing arrived.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// TestHelperGatewayFlows is not a test: it is the flows' process. It runs
// until SIGINT or SIGTERM.
//
//	DCMESH_GWFLOWS=send SRC=ip DST=ip PORT=first FLOWS=n RATE=pps
//	DCMESH_GWFLOWS=recv LISTEN=ip PORT=first FLOWS=n
func TestHelperGatewayFlows(t *testing.T) {
	mode := os.Getenv("DCMESH_GWFLOWS")
	if mode == "" {
		t.Skip("helper process for the multi-gateway flows")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	port, _ := strconv.Atoi(os.Getenv("PORT"))
	flows, _ := strconv.Atoi(os.Getenv("FLOWS"))
	var err error
	switch mode {
	case "send":
		rate, _ := strconv.Atoi(os.Getenv("RATE"))
		err = sendFlows(ctx, os.Getenv("SRC"), os.Getenv("DST"), port, flows, rate)
	case "recv":
		err = recvFlows(ctx, os.Getenv("LISTEN"), port, flows)
	}
	if err != nil {
		fmt.Println("GWFLOWS-ERROR", err)
	}
	fmt.Println("GWFLOWS-DONE")
}

// sendFlows sends one 8-byte sequence number per flow and tick: flow i from
// its own socket (its own source port) to dst:port+i.
func sendFlows(ctx context.Context, src, dst string, port, flows, rate int) error {
	var conns []*net.UDPConn
	for i := range flows {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(dst), Port: port + i})
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, c)
	}
	fmt.Println("flows sending")
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	buf := make([]byte, 8)
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		binary.BigEndian.PutUint64(buf, seq)
		for _, c := range conns {
			_, _ = c.Write(buf) // fails while no route: that is loss
		}
	}
}

// flowRun is a run of consecutive sequence numbers one receiver got on one
// flow, with the times (unix µs) of its first and last packet.
type flowRun struct {
	port                int
	first, last         uint64
	firstTime, lastTime int64
	receiver            string // set by parseFlowRuns
}

// recvFlows listens on listen:port.. and, when ctx ends, prints the runs
// it received: "GWFLOW port first firstTime last lastTime".
func recvFlows(ctx context.Context, listen string, port, flows int) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var runs []flowRun
	for i := range flows {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(listen), Port: port + i})
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cur *flowRun
			buf := make([]byte, 64)
			for ctx.Err() == nil {
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := c.Read(buf)
				if err != nil || n < 8 {
					continue
				}
				seq, now := binary.BigEndian.Uint64(buf), time.Now().UnixMicro()
				if cur != nil && seq == cur.last+1 {
					cur.last, cur.lastTime = seq, now
					continue
				}
				if cur != nil {
					mu.Lock()
					runs = append(runs, *cur)
					mu.Unlock()
				}
				cur = &flowRun{port: port + i, first: seq, last: seq, firstTime: now, lastTime: now}
			}
			if cur != nil {
				mu.Lock()
				runs = append(runs, *cur)
				mu.Unlock()
			}
		}()
	}
	fmt.Println("flows listening")
	<-ctx.Done()
	wg.Wait()
	for _, r := range runs {
		fmt.Printf("GWFLOW %d %d %d %d %d\n", r.port, r.first, r.firstTime, r.last, r.lastTime)
	}
	return nil
}

// parseFlowRuns reads a receiver's report.
func parseFlowRuns(receiver, out string) []flowRun {
	var runs []flowRun
	for _, l := range strings.Split(out, "\n") {
		var r flowRun
		if _, err := fmt.Sscanf(l, "GWFLOW %d %d %d %d %d", &r.port, &r.first, &r.firstTime, &r.last, &r.lastTime); err == nil {
			r.receiver = receiver
			runs = append(runs, r)
		}
	}
	return runs
}

// flowStats is what all receivers together saw of one flow in a window.
type flowStats struct {
	lost    int     // sequence numbers nobody received
	silence float64 // longest time without a packet, seconds
	moves   int     // times the flow changed receivers
}

// joinFlow joins the runs of one flow from every receiver and measures the
// gaps between runs that start in [from, to] (unix seconds).
func joinFlow(runs []flowRun, from, to float64) flowStats {
	slices.SortFunc(runs, func(a, b flowRun) int { return int(int64(a.first) - int64(b.first)) })
	var st flowStats
	for i := 1; i < len(runs); i++ {
		prev, r := runs[i-1], runs[i]
		at := float64(r.firstTime) / 1e6
		if at < from || at > to || r.first <= prev.last {
			continue
		}
		st.lost += int(r.first - prev.last - 1)
		st.silence = max(st.silence, float64(r.firstTime-prev.lastTime)/1e6)
		if r.receiver != prev.receiver {
			st.moves++
		}
	}
	return st
}

// flowsOn lists the ports a receiver got packets on between from and to
// (unix seconds).
func flowsOn(runs []flowRun, receiver string, from, to float64) []int {
	var ports []int
	for _, r := range runs {
		if r.receiver == receiver && float64(r.lastTime)/1e6 >= from && float64(r.firstTime)/1e6 <= to && !slices.Contains(ports, r.port) {
			ports = append(ports, r.port)
		}
	}
	slices.Sort(ports)
	return ports
}

// windowStats sums joinFlow over every flow for [from, to] (unix seconds):
// lost and moves added, silence the longest of any flow.
func windowStats(runs []flowRun, from, to float64) flowStats {
	var st flowStats
	for p := gatewayFlowPort; p < gatewayFlowPort+gatewayFlows; p++ {
		var fr []flowRun
		for _, r := range runs {
			if r.port == p {
				fr = append(fr, r)
			}
		}
		f := joinFlow(fr, from, to)
		st.lost, st.moves, st.silence = st.lost+f.lost, st.moves+f.moves, max(st.silence, f.silence)
	}
	return st
}

// waitProbesUp waits until s's probes are up with every node named.
func (s *site) waitProbesUp(t *testing.T, nodes ...string) {
	t.Helper()
	waitFor(t, 30*time.Second, s.name+"'s probes up with "+strings.Join(nodes, ", "), func() error {
		up := map[string]bool{}
		for _, p := range s.status().Peers {
			if p.Probe != nil && p.Probe.State == control.ProbeUp {
				up[p.Node] = true
			}
		}
		for _, n := range nodes {
			if !up[n] {
				return fmt.Errorf("probes up: %v", up)
			}
		}
		return nil
	})
}
