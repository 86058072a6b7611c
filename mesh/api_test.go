package mesh

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The control API refuses malformed and out-of-range requests before
// they reach the agent's loop: `{"timeout":-1}xyz` started a rotation.
func TestControlAPIRefusesBadRequests(t *testing.T) {
	a := NewAgent(Options{})
	var reached atomic.Int32
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the loop's side: count what gets through
		for {
			select {
			case c := <-a.api:
				reached.Add(1)
				c.reply <- errors.New("reached the loop")
			case <-stop:
				return
			}
		}
	}()
	h := a.handler()
	ask := func(method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e struct{ Error string }
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, e.Error
	}
	for _, tc := range []struct {
		method, path, body string
		msg                string
	}{
		{"POST", "/v1/rotate", `{"timeout":-1}xyz`, "data after the JSON value"},
		{"POST", "/v1/rotate", `{"timeout":-1}`, "timeout: -1ns is out of range: use a duration between 1s and 2h0m0s"},
		{"POST", "/v1/rotate", `{"wait":true,"timeout":500000000}`, "timeout: 500ms is out of range"},
		{"POST", "/v1/rotate", `{"wait":true,"timeout":10800000000000}`, "timeout: 3h0m0s is out of range"},
		{"POST", "/v1/rotate", `{"emergency":"yes"}`, "RotateRequest.emergency"},
		{"POST", "/v1/revoke", `{}`, "crl: empty"},
		{"POST", "/v1/revoke", `{"crl":""}`, "crl: empty"},
		{"POST", "/v1/down", `{"purge":true} {"purge":false}`, "data after the JSON value"},
		{"POST", "/v1/down", `{"purge":true,"force":true}`, `unknown field "force"`},
		{"GET", "/v1/status", `{"verbose":true}`, `unknown field "verbose"`},
	} {
		code, msg := ask(tc.method, tc.path, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %s %s: %d %q, want 400 and %q", tc.method, tc.path, tc.body, code, msg, tc.msg)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d refused requests reached the loop", n)
	}
	// Valid ones get through.
	for _, body := range []string{`{"timeout":0}`, `{"wait":true,"timeout":60000000000}`, ``} {
		if code, msg := ask("POST", "/v1/rotate", body); code != http.StatusUnprocessableEntity || msg != "reached the loop" {
			t.Errorf("rotate %s: %d %q", body, code, msg)
		}
	}
	if n := reached.Load(); n != 3 {
		t.Errorf("%d valid requests reached the loop, want 3", n)
	}
}
