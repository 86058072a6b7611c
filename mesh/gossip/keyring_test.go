package gossip

import (
	"bytes"
	"compress/lzw"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestKeyID(t *testing.T) {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	// The same vector is in mesh/trust's tests (GossipKeyID).
	if got := keyID(k); got != "630dcd2966c43366" {
		t.Errorf("keyID = %s", got)
	}
}

func TestKeyringAPI(t *testing.T) {
	k1, k2, k3 := key(t), key(t), key(t)
	a := startNode(t, Config{NodeName: "a", SecretKey: k1})
	ids := func() string {
		p, all := a.KeyIDs()
		return p + " " + strings.Join(all, ",")
	}
	if got, want := ids(), keyID(k1)+" "+keyID(k1); got != want {
		t.Fatalf("KeyIDs %q, want %q", got, want)
	}
	for _, err := range []error{a.InstallKey(k1[:16]), a.UseKey(nil), a.RemoveKey(make([]byte, 33))} {
		if err == nil || !strings.Contains(err.Error(), "must be 32 bytes") {
			t.Errorf("bad key length: %v", err)
		}
	}
	if err := a.UseKey(k2); err == nil || !strings.Contains(err.Error(), keyID(k2)+" is not installed") {
		t.Errorf("UseKey before InstallKey: %v", err)
	}
	if err := a.RemoveKey(k1); err == nil || !strings.Contains(err.Error(), "is the primary key") {
		t.Errorf("RemoveKey(primary): %v", err)
	}
	for range 2 { // idempotent
		if err := a.InstallKey(k2); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ids(), keyID(k1)+" "+keyID(k1)+","+keyID(k2); got != want {
		t.Errorf("after InstallKey: %q, want %q", got, want)
	}
	if err := a.InstallKey(k3); err == nil || !strings.Contains(err.Error(), "remove "+keyID(k2)+" first") {
		t.Errorf("third key: %v", err)
	}
	if err := a.UseKey(k2); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(), keyID(k2)+" "+keyID(k2)+","+keyID(k1); got != want {
		t.Errorf("after UseKey: %q, want %q", got, want)
	}
	if p := a.mlKeyring.GetPrimaryKey(); keyID(p) != keyID(k2) {
		t.Errorf("memberlist sends with %s", keyID(p))
	}
	for range 2 { // idempotent
		if err := a.RemoveKey(k1); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ids(), keyID(k2)+" "+keyID(k2); got != want {
		t.Errorf("after RemoveKey: %q, want %q", got, want)
	}
	if n := len(a.mlKeyring.GetKeys()); n != 1 {
		t.Errorf("memberlist still holds %d keys", n)
	}
}

// The screening transport accepts exactly the keys of the keyring, on
// streams and on datagrams.
func TestScreeningFollowsKeyring(t *testing.T) {
	k1, k2 := key(t), key(t)
	a := startNode(t, Config{NodeName: "a", SecretKey: k1})
	p := &streamProbe{t: t, g: a}
	user := func(s string) []byte {
		return append(append([]byte{mlUser}, msgpackEncode(t, map[string]any{"UserMsgLen": len(s)})...), s...)
	}
	unauth := func() uint64 { return a.Refused().Unauthenticated }

	p.send("127.0.0.5", sealStream(t, k2, testLabel, user("k2 before install")))
	p.wait("k2 before install", func(s StreamStats) bool { return s.Unauthenticated == 1 })
	before := a.inputs.packets.Load()
	sendPacket(t, a, k2, "k2 datagram before install")
	waitCounter(t, "datagram refused", func() bool { return a.inputs.packets.Load() == before+1 })

	if err := a.InstallKey(k2); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{k1, k2} { // two keys: the out-of-place trial path
		msg := "stream with " + keyID(k)
		p.send("127.0.0.5", sealStream(t, k, testLabel, user(msg)))
		waitMessage(t, a, MsgUser, []byte(msg))
		msg = "datagram with " + keyID(k)
		sendPacket(t, a, k, msg)
		waitMessage(t, a, MsgUser, []byte(msg))
	}
	p.wait("trial buffers released", func(s StreamStats) bool { return s.Active == 0 && s.InflightBytes == 0 })

	if err := a.UseKey(k2); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveKey(k1); err != nil {
		t.Fatal(err)
	}
	p.send("127.0.0.5", sealStream(t, k1, testLabel, user("k1 after removal")))
	p.wait("k1 after removal", func(s StreamStats) bool { return s.Unauthenticated == 2 })
	before = a.inputs.packets.Load()
	sendPacket(t, a, k1, "k1 datagram after removal")
	waitCounter(t, "datagram refused after removal", func() bool { return a.inputs.packets.Load() == before+1 })
	p.send("127.0.0.5", sealStream(t, k2, testLabel, user("k2 after removal of k1")))
	waitMessage(t, a, MsgUser, []byte("k2 after removal of k1"))
	if got := unauth(); got != 2 {
		t.Errorf("%d streams refused, want 2", got)
	}
	if a.inputs.reported.Load() != 0 {
		t.Errorf("memberlist failed to read %d messages the screener passed", a.inputs.reported.Load())
	}
}

// With two keys a stream is decrypted into a reserved copy; the copy is
// given back before what the stream decompresses to is reserved, so a
// stream that fits the budget with one key still fits with two.
func TestTrialBufferReleasedBeforeDecompression(t *testing.T) {
	k1, k2 := key(t), key(t)
	// Strangers get half: 512 KiB.
	a := startNode(t, Config{NodeName: "a", SecretKey: k1, Limits: StreamLimits{MaxInflightBytes: 1 << 20}})
	if err := a.InstallKey(k2); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 150<<10) // random: LZW makes it ~37% larger
	_, _ = rand.Read(payload)
	plain := append(append([]byte{mlUser}, msgpackEncode(t, map[string]any{"UserMsgLen": len(payload)})...), payload...)
	var buf bytes.Buffer
	w := lzw.NewWriter(&buf, lzw.LSB, 8)
	_, _ = w.Write(plain)
	_ = w.Close()
	stream := sealStream(t, k2, testLabel, append([]byte{mlCompress}, msgpackEncode(t, mlCompressed{Algo: 0, Buf: buf.Bytes()})...))
	wire := len(stream)
	if 2*wire > 512<<10 || 2*wire+len(plain) <= 512<<10 {
		t.Fatalf("a stream of %d bytes expanding to %d does not test the order", wire, len(plain))
	}
	p := &streamProbe{t: t, g: a}
	p.send("127.0.0.5", stream)
	waitMessage(t, a, MsgUser, payload)
	if r := a.Refused(); r.Budget != 0 {
		t.Errorf("refused for budget: %+v", r)
	}
}

// sendPacket sends g a labelled datagram sealed with k carrying a user
// message, as memberlist would.
func sendPacket(t *testing.T, g *Gossip, k []byte, msg string) {
	t.Helper()
	block, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	body := aead.Seal(append([]byte{encVersion}, nonce...), nonce, append([]byte{mlUser}, msg...), []byte(testLabel))
	c, err := net.Dial("udp", g.cfg.Advertise.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(append(labelHeader(testLabel), body...)); err != nil {
		t.Fatal(err)
	}
}

func waitCounter(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter
	}
}

// A full rotation on three real nodes: install the new key everywhere, use
// it on one node, then on all, remove the old one. Members stay alive and
// messages flow (datagrams and streams, both ways) at every step, and no
// message is refused. A fourth node, down during the rotation, holds only
// the old key: it cannot rejoin until it is handed the new one.
func TestKeyRotationWithoutPartition(t *testing.T) {
	oldKey, newKey := key(t), key(t)
	logs := &captureLog{} // memberlist's: suspicions and refutations
	mk := func(name string, seeds ...string) *Gossip {
		return startNode(t, Config{NodeName: name, SecretKey: oldKey, Seeds: seeds, Logger: slog.New(logs)})
	}
	a := mk("a")
	b := mk("b", a.cfg.Advertise.String())
	c := mk("c", a.cfg.Advertise.String())
	dPort := freePort(t)
	dCfg := func(k []byte) Config {
		return Config{NodeName: "d", SecretKey: k, Seeds: []string{a.cfg.Advertise.String()},
			Bind: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dPort)}
	}
	d := startNode(t, dCfg(oldKey))
	nodes := []*Gossip{a, b, c}
	roster := certify(a, b, c, d)
	for _, g := range append(nodes, d) {
		waitMembers(t, g, 4)
	}
	_ = d.Shutdown() // down for the whole rotation (to the others: failed)
	for _, g := range nodes {
		waitCounter(t, g.cfg.NodeName+" declares d dead", func() bool {
			return !slices.ContainsFunc(g.ml.Members(), func(m *memberlist.Node) bool { return m.Name == "d" })
		})
	}

	// A member that anyone suspected, even for a moment, is logged (and
	// refutes it); d, down, is expected to be.
	suspicions := func() (out []string) {
		for _, l := range logs.snapshot() {
			if strings.Contains(l, "Refuting a suspect") || strings.Contains(l, "Suspect") && !strings.Contains(l, "Suspect d ") {
				out = append(out, l)
			}
		}
		return out
	}
	malformed := func() (n uint64) {
		for _, g := range nodes {
			n += g.Malformed()
		}
		return n
	}
	garbage := malformed()
	step := 0
	check := func(what string) {
		t.Helper()
		step++
		for _, g := range nodes {
			for _, m := range g.ml.Members() {
				if m.Name != "d" && m.State != memberlist.StateAlive {
					t.Fatalf("%s: %s sees %s %v", what, g.cfg.NodeName, m.Name, m.State)
				}
			}
		}
		flow(t, fmt.Sprintf("%d %s", step, what), nodes)
	}

	check("before the rotation")
	for _, g := range nodes {
		if err := g.InstallKey(newKey); err != nil {
			t.Fatal(err)
		}
	}
	check("new key installed everywhere")
	if err := a.UseKey(newKey); err != nil {
		t.Fatal(err)
	}
	check("a sends with the new key, b and c with the old")
	for _, g := range nodes[1:] {
		if err := g.UseKey(newKey); err != nil {
			t.Fatal(err)
		}
	}
	check("everyone sends with the new key")
	for _, g := range nodes {
		if err := g.RemoveKey(oldKey); err != nil {
			t.Fatal(err)
		}
	}
	check("old key removed everywhere")
	for _, g := range nodes {
		if p, all := g.KeyIDs(); p != keyID(newKey) || !slices.Equal(all, []string{keyID(newKey)}) {
			t.Errorf("%s holds keys %v, primary %s", g.cfg.NodeName, all, p)
		}
	}
	if s := suspicions(); len(s) > 0 {
		t.Errorf("members were suspected: %q", s)
	}
	if logs.count("Suspect d has failed") == 0 { // what the check above looks for is logged
		t.Error("d's failure was not logged")
	}
	if n := malformed() - garbage; n != 0 {
		t.Errorf("%d messages refused during the rotation", n)
	}

	// d comes back with the old key only: it is refused, and stays alone.
	refusedBefore := a.Malformed() + b.Malformed() + c.Malformed()
	d2 := startNode(t, dCfg(oldKey))
	d2.SetRoster(roster)
	waitCounter(t, "d's join attempts refused", func() bool {
		return a.Malformed()+b.Malformed()+c.Malformed() > refusedBefore
	})
	if n := aliveMembers(d2); n != 1 {
		t.Fatalf("d with the old key sees %d alive members", n)
	}
	for _, m := range a.ml.Members() {
		if m.Name == "d" && m.State == memberlist.StateAlive {
			t.Fatal("a has d alive again, though d holds only the removed key")
		}
	}
	// Handed the new key (the agent: the sealed bundle, over the control
	// socket), it rejoins by itself.
	for _, step := range []func([]byte) error{d2.InstallKey, d2.UseKey} {
		if err := step(newKey); err != nil {
			t.Fatal(err)
		}
	}
	if err := d2.RemoveKey(oldKey); err != nil {
		t.Fatal(err)
	}
	all := append(nodes, d2)
	for _, g := range all {
		waitMembers(t, g, 4)
	}
	flow(t, "d rejoined", all)
}

// flow checks that messages get from every node to every other: a
// broadcast (datagrams) and a direct send (a stream) from each in turn.
// Broadcasts are best effort (a few retransmissions, then dropped), so an
// unanswered one is sent again, a few times.
func flow(t *testing.T, tag string, nodes []*Gossip) {
	t.Helper()
	for _, from := range nodes {
		for _, to := range nodes {
			if to == from {
				continue
			}
			deliver(t, to, func(try int) []byte {
				msg := []byte(fmt.Sprintf("%s: broadcast %s->%s, try %d", tag, from.cfg.NodeName, to.cfg.NodeName, try))
				from.Broadcast("flow/"+from.cfg.NodeName, msg)
				return msg
			}, nodes)
			deliver(t, to, func(try int) []byte {
				msg := []byte(fmt.Sprintf("%s: stream %s->%s, try %d", tag, from.cfg.NodeName, to.cfg.NodeName, try))
				if err := from.SendTo(to.cfg.NodeName, msg); err != nil {
					t.Logf("%s: %v", tag, err)
				}
				return msg
			}, nodes)
		}
	}
}

// deliver sends with send until to receives what it sent, up to five
// tries of two seconds.
func deliver(t *testing.T, to *Gossip, send func(try int) []byte, nodes []*Gossip) {
	t.Helper()
	var want [][]byte
	for try := range 5 {
		if try > 0 {
			t.Logf("%s has not received %q: sending again", to.cfg.NodeName, want[len(want)-1])
		}
		want = append(want, send(try))
		timeout := time.After(2 * time.Second)
		for waiting := true; waiting; {
			select {
			case m := <-to.Inbox():
				if m.Kind == MsgUser && slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, m.Data) }) {
					return
				}
			case <-timeout:
				waiting = false
			}
		}
	}
	var state []string
	for _, g := range nodes {
		state = append(state, fmt.Sprintf("%s: members %v malformed %d refused %+v", g.cfg.NodeName, g.Members(), g.Malformed(), g.Refused()))
	}
	t.Fatalf("%s never received %q\n%s", to.cfg.NodeName, want[0], strings.Join(state, "\n"))
}

// Keyring changes and readers race freely.
func TestKeyringConcurrentUse(t *testing.T) {
	k1, k2 := key(t), key(t)
	a := startNode(t, Config{NodeName: "a", SecretKey: k1})
	b := newNode(t, "b", k1, a.cfg.Advertise.String())
	certify(a, b)
	waitMembers(t, a, 2)
	if err := b.InstallKey(k2); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				switch (i + j) % 4 {
				case 0:
					_ = a.InstallKey(k2)
				case 1:
					_ = a.UseKey(k2)
				case 2:
					_ = a.UseKey(k1)
				case 3:
					_ = a.RemoveKey(k2)
				}
				_, _ = a.KeyIDs()
				a.Broadcast("x", []byte("x"))
			}
		})
	}
	wg.Wait()
	// Whatever state that left, a consistent one: both keyrings agree.
	p, all := a.KeyIDs()
	ml := a.mlKeyring.GetKeys()
	if len(ml) != len(all) || keyID(ml[0]) != p {
		t.Errorf("keyrings disagree: ours %v (primary %s), memberlist's %d keys, primary %s", all, p, len(ml), keyID(ml[0]))
	}
	for i, k := range ml {
		if keyID(k) != all[i] {
			t.Errorf("key %d: memberlist %s, ours %s", i, keyID(k), all[i])
		}
	}
}
