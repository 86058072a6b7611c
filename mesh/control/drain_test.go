package control

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The drain endpoints round-trip through Serve and the Client methods,
// and a request out of range is refused (400) naming the field before the
// agent sees it.
func TestDrainEndpoints(t *testing.T) {
	mux := http.NewServeMux()
	var got DrainRequest
	Serve(mux, EndpointDrain, func(_ context.Context, in DrainRequest) (DrainReply, error) {
		got = in
		return DrainReply{Result: DrainBusy, Drained: true, Busy: []DrainPeer{{Site: "ams1", RxPerSec: 1e4}}}, nil
	})
	Serve(mux, EndpointUndrain, func(context.Context, Empty) (DrainReply, error) {
		return DrainReply{Result: DrainUndrained, Changed: true}, nil
	})
	_, sock := serve(t, mux)
	c := NewClient(sock)
	ctx := context.Background()
	r, err := c.Drain(ctx, DrainRequest{Wait: true, Timeout: 3 * time.Second, Settle: time.Second})
	if err != nil || r.Result != DrainBusy || len(r.Busy) != 1 || r.Busy[0].Site != "ams1" {
		t.Fatalf("drain: %+v %v", r, err)
	}
	if !got.Wait || got.Timeout != 3*time.Second || got.Settle != time.Second {
		t.Errorf("the agent got %+v", got)
	}
	if r, err := c.Undrain(ctx); err != nil || r.Result != DrainUndrained || !r.Changed {
		t.Errorf("undrain: %+v %v", r, err)
	}
	for _, tc := range []struct{ body, field string }{
		{`{"wait":true,"timeout":-1}`, "timeout"},
		{`{"wait":true,"timeout":1000}`, "timeout"},
		{`{"settle":7200000000000}`, "settle"},
		{`{"wait":true,"timeout":2000000000,"settle":3000000000}`, "settle"},
	} {
		status, msg := rawPost(t, sock, EndpointDrain.Path, "application/json", tc.body)
		if status != http.StatusBadRequest || !strings.HasPrefix(msg, "bad request: "+tc.field+":") {
			t.Errorf("%s: %d %q, want 400 naming %s", tc.body, status, msg, tc.field)
		}
	}
}

// `drain --wait` may take its whole wait to answer (LongPoll), and only
// with --wait.
func TestDrainRequestResponseWithin(t *testing.T) {
	if d := (DrainRequest{}).ResponseWithin(); d != 0 {
		t.Errorf("without wait: %s", d)
	}
	if d := (DrainRequest{Wait: true}).ResponseWithin(); d != DefaultDrainWait {
		t.Errorf("wait, no timeout: %s", d)
	}
	if d := (DrainRequest{Wait: true, Timeout: time.Minute}).ResponseWithin(); d != time.Minute {
		t.Errorf("wait 1m: %s", d)
	}
}

// A drained gateway is degraded, never critical, with a reason that says
// since when and how to end it; undrained it is healthy again.
func TestHealthDegradedWhileDrained(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	since := now.Add(-90 * time.Minute)
	st := Status{Site: "fra1", Peers: []PeerStatus{{Site: "ams1", State: PeerUp, Role: RoleCurrent}},
		Drain: DrainStatus{Drained: true, Since: &since}}
	h := EvaluateHealth(st, 0, 0, now)
	if h.Status != Degraded || h.ExitCode != 1 || len(h.Reasons) != 1 ||
		!strings.Contains(h.Reasons[0], "drained for maintenance for 1h30m0s") || !strings.Contains(h.Reasons[0], "dcmesh undrain") {
		t.Errorf("drained: %s %d %q", h.Status, h.ExitCode, h.Reasons)
	}
	st.Drain = DrainStatus{}
	if h := EvaluateHealth(st, 0, 0, now); h.Status != Healthy {
		t.Errorf("undrained: %s %q", h.Status, h.Reasons)
	}
}

// force goes on the wire only when set, so that a drain without it still
// reaches an agent older than the field (which refuses unknown fields),
// and only with wait: without it there is nothing to force.
func TestDrainRequestForce(t *testing.T) {
	raw, err := json.Marshal(DrainRequest{Wait: true})
	if err != nil || strings.Contains(string(raw), "force") {
		t.Errorf("without force: %s %v", raw, err)
	}
	if raw, _ := json.Marshal(DrainRequest{Wait: true, Force: true}); !strings.Contains(string(raw), `"force":true`) {
		t.Errorf("with force: %s", raw)
	}
	if err := (DrainRequest{Force: true}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "force: applies to --wait only") {
		t.Errorf("force without wait: %v", err)
	}
	if err := (DrainRequest{Wait: true, Force: true}).Validate(); err != nil {
		t.Errorf("force with wait: %v", err)
	}
	s := Sibling{Node: "fra1.1", Gateway: 1, State: SiblingDown, Reason: "gossip: dead"}
	if s.String() != "fra1.1 down (gossip: dead)" || s.InService() {
		t.Errorf("%q in service %v", s, s.InService())
	}
	if s := (Sibling{Node: "fra1.2", State: SiblingInService}); s.String() != "fra1.2 in service" || !s.InService() {
		t.Errorf("%q in service %v", s, s.InService())
	}
}
