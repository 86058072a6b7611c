package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// metrics_addr in the configuration serves /metrics, as the runbook and
// examples/dcmesh.yaml say; --metrics-addr overrides it. One site with
// static peers, in a namespace of its own.
func TestMetricsAddrConfigField(t *testing.T) {
	requireTool(t, "curl")
	m := newMesh(t, 1)
	s := m.sites[0]
	m.writeConfigs()
	f, err := os.OpenFile(s.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("metrics_addr: 127.0.0.1:9469\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if stdout, stderr, code := runBinary(t, "config", "check", "--config", s.cfgPath); code != 0 {
		t.Fatalf("config check: %d %s %s", code, stdout, stderr)
	}
	scrape := func(port string) (string, error) {
		return s.ns.Try("curl", "-sf", "--max-time", "5", "http://127.0.0.1:"+port+"/metrics")
	}
	s.start()
	if out, err := scrape("9469"); err != nil || !strings.Contains(out, "dcmesh_info{") {
		t.Fatalf("metrics_addr 127.0.0.1:9469: %v\n%.300s", err, out)
	}
	s.agent.Interrupt(15 * time.Second)

	s.agentArgs = []string{"--metrics-addr", "127.0.0.1:9470"}
	s.start()
	if out, err := scrape("9470"); err != nil || !strings.Contains(out, "dcmesh_info{") {
		t.Errorf("--metrics-addr 127.0.0.1:9470: %v\n%.300s", err, out)
	}
	if _, err := scrape("9469"); err == nil {
		t.Error("--metrics-addr did not override metrics_addr: 9469 still serves")
	}
}
