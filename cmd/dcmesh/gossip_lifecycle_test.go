package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// A site goes away everywhere on a signed leave, on a revocation handed to
// any one agent, and when its certificate expires; a replayed older record is
// ignored.
func TestGossipLeaveRevokeExpiryReplay(t *testing.T) {
	m, caDir := newGossipMesh(t, 4)
	s1, s2, s3, s4 := m.sites[0], m.sites[1], m.sites[2], m.sites[3]
	s5 := m.addSite(5)
	const lifetime = 25 * time.Second
	s5.enroll(caDir, []string{s1.seed()}, "--valid", lifetime.String())
	expires := time.Now().Add(lifetime)
	m.startAll()
	m.waitFullMesh(m.sites...)

	// --- replay: keep site2's current record, then give site2 a new key.
	recs, err := s2.client().Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old, err := trust.DecodeRecord(recs.Records[0])
	if err != nil || old.Site != s2.name {
		t.Fatalf("site2's own record: %v %v", old, err)
	}
	oldPub := s2.pub
	if err := s2.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	s2.pub = strings.TrimSpace(m.cli("key", "generate", "--force", "--out", s2.keyPath))
	s2.start()
	waitFor(t, 20*time.Second, "site1 follows site2's new key", func() error {
		ips := s1.allowedIPs()
		if _, ok := ips[oldPub]; ok {
			return fmt.Errorf("old key still a peer")
		}
		if !strings.Contains(ips[s2.pub], s2.prefix()) {
			return fmt.Errorf("new key not a peer: %v", ips)
		}
		return nil
	})
	injector := m.addSite(9) // a namespace on the underlay for the injector
	gossipKey := filepath.Join(caDir, "gossip.key")
	self, _ := os.Executable()
	inj := injector.ns.StartEnv(t, "injector", []string{
		"DCMESH_INJECT_KEY=" + gossipKey, "DCMESH_INJECT_SEED=" + s1.seed(),
		"DCMESH_INJECT_BIND=" + injector.underlay() + ":7946",
		"DCMESH_INJECT_RECORD=" + base64.StdEncoding.EncodeToString(old.Raw),
	}, self, "-test.run", "^TestHelperGossipInjector$")
	waitFor(t, 20*time.Second, "site1 refuses the replayed record", func() error {
		if n := s1.status().RecordsRejected["replay"]; n == 0 {
			return fmt.Errorf("no replay rejection yet: %v", s1.status().RecordsRejected)
		}
		return nil
	})
	_ = inj.Stop(5 * time.Second)
	if ips := s1.allowedIPs(); ips[oldPub] != "" || ips[s2.pub] == "" {
		t.Errorf("after the replay site1's peers are %v", ips)
	}
	if err := s1.ping(s2, 1); err != nil {
		t.Error(err)
	}

	// --- leave: site4 says goodbye; everyone drops it.
	m.cli("leave", "--config", s4.cfgPath)
	waitFor(t, 10*time.Second, "site4's agent stops", func() error {
		if !s4.agent.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	assertGone(t, s4, s1, s2, s3)
	// ...lists it as left, and forgets its address: no re-joining it forever.
	for _, o := range []*site{s1, s2, s3} {
		waitFor(t, 10*time.Second, o.name+" forgets "+s4.name, func() error {
			if st := o.memberStates()[s4.name]; st != "left" {
				return fmt.Errorf("member state %q, want left", st)
			}
			raw, err := os.ReadFile(filepath.Join(o.stateDir, "known-peers.json"))
			if err != nil {
				return err
			}
			if strings.Contains(string(raw), `"`+s4.name+`"`) {
				return fmt.Errorf("still a known peer: %s", raw)
			}
			return nil
		})
	}

	// --- revocation handed to site1 only: everyone drops site3.
	crl := filepath.Join(m.dir, "crl.pem")
	m.cli("ca", "revoke", "--dir", caDir, "--site", s3.name, "--out", crl)
	m.cli("revoke", "--in", crl, "--config", s1.cfgPath)
	assertGone(t, s3, s1, s2, s5)
	if err := s1.ping(s2, 1); err != nil {
		t.Error(err)
	}

	// --- expiry: site5's certificate runs out; everyone drops it.
	time.Sleep(time.Until(expires))
	assertGone(t, s5, s1, s2)
	out, err := exec.Command(dcmeshBinary(t), "agent", "--config", s5.cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cert_expired") {
		t.Errorf("an agent with an expired certificate started, or said something else: %v\n%s", err, out)
	}
}

// assertGone waits until no observer has gone's peer or routes.
func assertGone(t *testing.T, gone *site, observers ...*site) {
	t.Helper()
	for _, o := range observers {
		waitFor(t, 20*time.Second, fmt.Sprintf("%s drops %s", o.name, gone.name), func() error {
			if ips, ok := o.allowedIPs()[gone.pub]; ok {
				return fmt.Errorf("peer still there (%s)", ips)
			}
			if r := o.ns.Run(t, "ip", "route", "show", gone.prefix(), "proto", "220"); strings.TrimSpace(r) != "" {
				return fmt.Errorf("routes still there: %s", r)
			}
			return nil
		})
	}
}

// TestHelperGossipInjector is not a test: it is a gossip node holding the real
// gossip key that pushes one given record into the cluster, run by the test
// above inside a namespace.
func TestHelperGossipInjector(t *testing.T) {
	keyFile := os.Getenv("DCMESH_INJECT_KEY")
	if keyFile == "" {
		t.Skip("helper process")
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := base64.StdEncoding.DecodeString(os.Getenv("DCMESH_INJECT_RECORD"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := gossip.New(gossip.Config{
		NodeName: "injector", Bind: netip.MustParseAddrPort(os.Getenv("DCMESH_INJECT_BIND")), SecretKey: key,
		Label: "dcmesh/test", Profile: gossip.ProfileLAN, Seeds: []string{os.Getenv("DCMESH_INJECT_SEED")}, RejoinInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	st, err := trust.EncodeState(trust.State{Records: [][]byte{rec}})
	if err != nil {
		t.Fatal(err)
	}
	g.SetLocalState(st)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go g.Run(ctx)
	msg := append([]byte{'r'}, rec...)
	for ctx.Err() == nil {
		g.Broadcast("record/replay", msg)
		_ = g.SendToAll(msg)
		fmt.Println("injected")
		time.Sleep(time.Second)
	}
}
