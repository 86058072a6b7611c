package main

import (
	"context"
	"encoding/json"
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
