package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// fakeDrainAgent serves the drain endpoints as an agent would answer them:
// a --wait finds ams1 still busy. It counts the requests it got.
func fakeDrainAgent(t *testing.T) (sock string, calls *atomic.Int32) {
	t.Helper()
	calls = &atomic.Int32{}
	since := time.Date(2026, 12, 1, 16, 20, 5, 0, time.UTC)
	mux := http.NewServeMux()
	control.Serve(mux, control.EndpointDrain, func(_ context.Context, in control.DrainRequest) (control.DrainReply, error) {
		calls.Add(1)
		r := control.DrainReply{Result: control.DrainDraining, Drained: true, Since: &since, Changed: true, Busy: []control.DrainPeer{}}
		if in.Wait {
			r.Result, r.Busy = control.DrainBusy, []control.DrainPeer{{Site: "ams1", RxPerSec: 10240, TxPerSec: 10176, IdleSeconds: 0.25}}
		}
		return r, nil
	})
	control.Serve(mux, control.EndpointUndrain, func(context.Context, control.Empty) (control.DrainReply, error) {
		calls.Add(1)
		return control.DrainReply{Result: control.DrainUndrained, Changed: true, Busy: []control.DrainPeer{}}, nil
	})
	sock = filepath.Join(shortTempDir(t), "control.sock")
	srv, err := control.Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return sock, calls
}

// drain and undrain through the binary: the documented JSON, exit 1 with
// the busy peers named at a --wait's timeout, range errors refused before
// the agent is asked, usage errors exit 2, no agent exit 3.
func TestDrainCLI(t *testing.T) {
	sock, calls := fakeDrainAgent(t)
	out, errOut, code := runBinary(t, "drain", "--socket", sock, "--json")
	var j drainJSON
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil || code != 0 || j.Schema != 1 || j.Result != control.DrainDraining || !j.Drained || j.Since == nil || j.Busy == nil {
		t.Errorf("drain --json: exit %d, %+v (%v)\n%s%s", code, j, err, out, errOut)
	}
	out, errOut, code = runBinary(t, "drain", "--socket", sock)
	if code != 0 || !strings.Contains(out, "gateway drained: peers move their traffic away, tunnel routes at routes.metric-1") {
		t.Errorf("drain: exit %d, %q %q", code, out, errOut)
	}
	out, _, code = runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--socket", sock)
	if code != 1 || !strings.Contains(out, "still carrying traffic after 3s: ams1 (rx 10240 B/s, tx 10176 B/s, idle 0.2s of 1s)") {
		t.Errorf("drain --wait, busy: exit %d, %q; want exit 1 naming ams1", code, out)
	}
	out, _, code = runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--json", "--socket", sock)
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 1 || j.Result != control.DrainBusy || len(j.Busy) != 1 || j.Busy[0].Site != "ams1" {
		t.Errorf("drain --wait --json, busy: exit %d, %+v (%v)", code, j, err)
	}
	out, _, code = runBinary(t, "undrain", "--socket", sock, "--json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || j.Result != control.DrainUndrained || j.Drained || j.Since != nil {
		t.Errorf("undrain --json: exit %d, %+v (%v)", code, j, err)
	}
	before := calls.Load()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"drain", "--wait", "--timeout", "2s", "--settle", "5s"}, 1, "--settle: 5s is longer than the timeout 2s"},
		{[]string{"drain", "--wait", "--timeout", "3d"}, 1, "--timeout: 72h0m0s is out of range"},
		{[]string{"drain", "--settle", "500ms"}, 1, "--settle: 500ms is out of range"},
		{[]string{"drain", "--timeout", "soon"}, 2, "--timeout"},
		{[]string{"drain", "now"}, 2, "drain takes no arguments"},
		{[]string{"undrain", "--wait"}, 2, "unknown flag --wait"},
	} {
		out, errOut, code := runBinary(t, append(tc.args, "--socket", sock)...)
		if code != tc.code || out != "" || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, out, errOut, tc.code, tc.msg)
		}
	}
	if n := calls.Load(); n != before {
		t.Errorf("refused command lines reached the agent %d times", n-before)
	}
	nowhere := filepath.Join(shortTempDir(t), "control.sock")
	for _, cmd := range []string{"drain", "undrain"} {
		if _, errOut, code := runBinary(t, cmd, "--socket", nowhere); code != 3 || !strings.Contains(errOut, "not running") {
			t.Errorf("%s without an agent: exit %d, %q; want 3", cmd, code, errOut)
		}
	}
}

// The last gateway of a site in service: drain warns on stderr naming the
// other gateways and their states, --json carries last_in_service and
// siblings; the refusal of a --wait is an error (exit 1, stderr only);
// --force reaches the agent only with --wait; an agent that says nothing
// of siblings (older) gets no warning.
func TestDrainCLILastInService(t *testing.T) {
	var reply atomic.Pointer[control.DrainReply]
	var forced atomic.Bool
	mux := http.NewServeMux()
	control.Serve(mux, control.EndpointDrain, func(_ context.Context, in control.DrainRequest) (control.DrainReply, error) {
		forced.Store(in.Force)
		if in.Wait && !in.Force {
			return control.DrainReply{}, errors.New("this is the last gateway of its site in service; the other gateways of fra1: fra1.1 drained")
		}
		return *reply.Load(), nil
	})
	sock := filepath.Join(shortTempDir(t), "control.sock")
	srv, err := control.Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	since := time.Date(2026, 12, 1, 16, 20, 5, 0, time.UTC)
	base := control.DrainReply{Result: control.DrainDraining, Drained: true, Since: &since, Changed: true, Busy: []control.DrainPeer{}}
	last := base
	last.LastInService = true
	last.Siblings = []control.Sibling{{Node: "fra1.1", Gateway: 1, State: control.SiblingDrained}, {Node: "fra1.2", Gateway: 2, State: control.SiblingDown, Reason: "gossip: dead"}}
	reply.Store(&last)
	out, errOut, code := runBinary(t, "drain", "--socket", sock)
	if code != 0 || !strings.Contains(out, "gateway drained") ||
		!strings.Contains(errOut, "warning: this is the last gateway of its site in service: fra1.1 drained, fra1.2 down (gossip: dead). Peers keep sending to this gateway") {
		t.Errorf("drain, last in service: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runBinary(t, "drain", "--socket", sock, "--json")
	var j drainJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || !j.LastInService || len(j.Siblings) != 2 || j.Siblings[1].State != control.SiblingDown ||
		!strings.Contains(errOut, "warning: ") {
		t.Errorf("drain --json, last in service: exit %d, %+v (%v), stderr %q", code, j, err, errOut)
	}
	alone := base
	alone.LastInService, alone.Siblings = true, []control.Sibling{}
	reply.Store(&alone)
	if _, errOut, code := runBinary(t, "drain", "--socket", sock); code != 0 || !strings.Contains(errOut, "warning: no other gateway of this site is known to this agent.") {
		t.Errorf("drain, one-gateway site: exit %d, stderr %q", code, errOut)
	}
	older := base // an agent that knows nothing of siblings
	reply.Store(&older)
	out, errOut, code = runBinary(t, "drain", "--socket", sock, "--json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || errOut != "" || j.LastInService || j.Siblings == nil || len(j.Siblings) != 0 {
		t.Errorf("drain --json from an older agent: exit %d, %+v (%v), stderr %q; want no warning and siblings []", code, j, err, errOut)
	}
	out, errOut, code = runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--socket", sock, "--json")
	if code != 1 || out != "" || !strings.Contains(errOut, "the last gateway of its site in service") {
		t.Errorf("drain --wait refused: exit %d, stdout %q, stderr %q; want exit 1 and the reason on stderr only", code, out, errOut)
	}
	reply.Store(&last)
	if _, _, code := runBinary(t, "drain", "--wait", "--force", "--timeout", "3s", "--settle", "1s", "--socket", sock); code != 0 || !forced.Load() {
		t.Errorf("drain --wait --force: exit %d, force sent %v", code, forced.Load())
	}
	forced.Store(false)
	if out, errOut, code := runBinary(t, "drain", "--force", "--socket", sock); code != 1 || out != "" || !strings.Contains(errOut, "--force: applies to --wait only") {
		t.Errorf("drain --force without --wait: exit %d, %q %q", code, out, errOut)
	}
}
