package main

// Traffic probes for the rotation tests, run as helper processes inside the
// sites' namespaces: a sequence-numbered UDP stream (loss and the longest
// silence, in milliseconds) and a TCP stream (any reset is an error).

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// ProbeResult is what a receiving probe reports.
type ProbeResult struct {
	Received   int     `json:"received"`
	MaxSeq     int     `json:"max_seq"`
	Lost       int     `json:"lost"` // missing sequence numbers up to MaxSeq
	LongestGap float64 `json:"longest_gap_ms"`
	Bytes      int64   `json:"bytes"` // TCP
	Err        string  `json:"err,omitempty"`
}

// TestHelperProbe is not a test: it is the probe process.
//
//	DCMESH_PROBE=udp-send  SRC=ip DST=ip:port RATE=pps FOR=duration
//	DCMESH_PROBE=udp-recv  LISTEN=ip:port FOR=duration
//	DCMESH_PROBE=tcp-send  SRC=ip DST=ip:port RATE=bytes/s FOR=duration
//	DCMESH_PROBE=tcp-recv  LISTEN=ip:port FOR=duration
func TestHelperProbe(t *testing.T) {
	mode := os.Getenv("DCMESH_PROBE")
	if mode == "" {
		t.Skip("helper process for the traffic probes")
	}
	dur, _ := time.ParseDuration(os.Getenv("FOR"))
	var res ProbeResult
	var err error
	switch mode {
	case "udp-send":
		err = udpSend(os.Getenv("SRC"), os.Getenv("DST"), os.Getenv("RATE"), dur)
	case "udp-recv":
		res, err = udpRecv(os.Getenv("LISTEN"), dur)
	case "tcp-send":
		res, err = tcpSend(os.Getenv("SRC"), os.Getenv("DST"), os.Getenv("RATE"), dur)
	case "tcp-recv":
		res, err = tcpRecv(os.Getenv("LISTEN"), dur)
	}
	if err != nil {
		res.Err = err.Error()
	}
	j, _ := json.Marshal(res)
	fmt.Printf("PROBE-RESULT %s\n", j)
}

func udpSend(src, dst, rate string, dur time.Duration) error {
	pps, _ := strconv.Atoi(rate)
	laddr := &net.UDPAddr{IP: net.ParseIP(src)}
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	end := time.Now().Add(dur)
	buf := make([]byte, 64)
	for seq := uint64(1); time.Now().Before(end); seq++ {
		<-tick.C
		binary.BigEndian.PutUint64(buf, seq)
		// Sends fail while a route is briefly missing; that is loss, not a
		// probe failure.
		_, _ = c.Write(buf)
	}
	return nil
}

func udpRecv(listen string, dur time.Duration) (ProbeResult, error) {
	var res ProbeResult
	addr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return res, err
	}
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	fmt.Println("probe listening")
	seen := map[uint64]bool{}
	var last time.Time
	end := time.Now().Add(dur)
	buf := make([]byte, 2048)
	for time.Now().Before(end) {
		_ = c.SetReadDeadline(end)
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		if n < 8 {
			continue
		}
		now := time.Now()
		if !last.IsZero() {
			if gap := float64(now.Sub(last).Microseconds()) / 1000; gap > res.LongestGap {
				res.LongestGap = gap
			}
		}
		last = now
		seq := binary.BigEndian.Uint64(buf)
		seen[seq] = true
		if int(seq) > res.MaxSeq {
			res.MaxSeq = int(seq)
		}
	}
	res.Received = len(seen)
	res.Lost = res.MaxSeq - res.Received
	return res, nil
}

func tcpSend(src, dst, rate string, dur time.Duration) (ProbeResult, error) {
	var res ProbeResult
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", dst)
	if err != nil {
		return res, err
	}
	buf := make([]byte, 16<<10)
	bps, _ := strconv.Atoi(rate)
	start := time.Now()
	end := start.Add(dur)
	for time.Now().Before(end) {
		if bps > 0 { // paced: sleep until the bytes sent so far are due
			if due := start.Add(time.Duration(float64(res.Bytes) / float64(bps) * float64(time.Second))); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
		}
		n, err := c.Write(buf)
		res.Bytes += int64(n)
		if err != nil {
			return res, err
		}
	}
	return res, c.Close()
}

func tcpRecv(listen string, dur time.Duration) (ProbeResult, error) {
	var res ProbeResult
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return res, err
	}
	defer l.Close()
	fmt.Println("probe listening")
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(dur))
	c, err := l.Accept()
	if err != nil {
		return res, err
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c) // until the sender closes: EOF is clean, a reset is an error
	res.Bytes = n
	return res, err
}

// probe is a running probe process.
type probe struct{ p *netconfigtest.Proc }

func startProbe(t *testing.T, s *site, label string, env ...string) *probe {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := s.ns.StartEnv(t, label, env, self, "-test.run", "^TestHelperProbe$")
	if strings.HasPrefix(env[0], "DCMESH_PROBE=") && strings.HasSuffix(env[0], "-recv") {
		p.WaitOutput(t, "probe listening", 10*time.Second)
	}
	return &probe{p}
}

// result waits for the probe to finish and returns its report.
func (pr *probe) result(t *testing.T, timeout time.Duration) ProbeResult {
	t.Helper()
	pr.p.WaitOutput(t, "PROBE-RESULT ", timeout)
	out := pr.p.Output()
	line := out[strings.Index(out, "PROBE-RESULT ")+len("PROBE-RESULT "):]
	line = line[:strings.IndexByte(line, '\n')]
	var r ProbeResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("probe output %q: %v", line, err)
	}
	return r
}

// udpProbe runs a UDP stream from a to b for dur at rate pps and returns the
// receiver (call result after the traffic).
func udpProbe(t *testing.T, from, to *site, port int, rate int, dur time.Duration) *probe {
	t.Helper()
	recv := startProbe(t, to, fmt.Sprintf("udp recv %s←%s", to.name, from.name),
		"DCMESH_PROBE=udp-recv", fmt.Sprintf("LISTEN=%s:%d", to.host(), port), "FOR="+(dur+2*time.Second).String())
	startProbe(t, from, fmt.Sprintf("udp send %s→%s", from.name, to.name),
		"DCMESH_PROBE=udp-send", "SRC="+from.host(), fmt.Sprintf("DST=%s:%d", to.host(), port), fmt.Sprintf("RATE=%d", rate), "FOR="+dur.String())
	return recv
}

// tcpStream runs a TCP stream from a to b for dur, paced at 4 MB/s (a
// long-lived flow, not a saturation test: at full speed the userspace
// WireGuard of four sites on two cores starves everything else, the agents
// included); both ends' reports come back from the returned probes.
func tcpStream(t *testing.T, from, to *site, port int, dur time.Duration) (sender, receiver *probe) {
	t.Helper()
	receiver = startProbe(t, to, fmt.Sprintf("tcp recv %s←%s", to.name, from.name),
		"DCMESH_PROBE=tcp-recv", fmt.Sprintf("LISTEN=%s:%d", to.host(), port), "FOR="+(dur+10*time.Second).String())
	sender = startProbe(t, from, fmt.Sprintf("tcp send %s→%s", from.name, to.name),
		"DCMESH_PROBE=tcp-send", "SRC="+from.host(), fmt.Sprintf("DST=%s:%d", to.host(), port), "RATE=4000000", "FOR="+dur.String())
	return sender, receiver
}
