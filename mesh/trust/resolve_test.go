package trust_test

import (
	"cmp"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

// resolveSite issues a certificate for name with the given age (hours
// before now) and returns a signer for its records. Resolve does not look at
// the certificate's prefixes, so records may announce anything.
type resolveSite struct {
	cert *trust.Certificate
	key  ed25519.PrivateKey
}

func newResolveSite(t *testing.T, ca *trust.CA, base time.Time, name string, ageHours int) resolveSite {
	c, k := trusttest.IssueWith(t, ca, name, trusttest.CertOptions{NotBefore: base.Add(-time.Duration(ageHours) * time.Hour)}, "10.250.0.0/16")
	return resolveSite{c, k}
}

func (s resolveSite) rec(t *testing.T, o trusttest.RecordOptions) *trust.SignedRecord {
	return trusttest.SignedRecord(t, s.cert, s.key, o)
}

func TestResolve(t *testing.T) {
	ca := trusttest.NewCA(t)
	base := time.Now().Truncate(time.Second)
	a := newResolveSite(t, ca, base, "a", 20) // oldest
	b := newResolveSite(t, ca, base, "b", 15)
	c := newResolveSite(t, ca, base, "c", 10)
	d := newResolveSite(t, ca, base, "d", 5) // youngest

	t.Run("older certificate keeps an overlapping prefix", func(t *testing.T) {
		got, cs := trust.Resolve([]*trust.SignedRecord{
			b.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.1.0/24", "10.5.0.0/16")}),
			a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/16")}),
		})
		want := map[string][]netip.Prefix{"a": pfxs("10.0.0.0/16"), "b": pfxs("10.5.0.0/16")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("prefixes %v, want %v", got, want)
		}
		wantC := []trust.Conflict{{Site: "b", Prefix: pfx("10.0.1.0/24"), Winner: "a", Reason: trust.ReasonOverlapSite}}
		if !reflect.DeepEqual(cs, wantC) {
			t.Errorf("conflicts %+v, want %+v", cs, wantC)
		}
	})
	t.Run("pairwise: a prefix lost to a site that itself lost it", func(t *testing.T) {
		got, cs := trust.Resolve([]*trust.SignedRecord{
			a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/24")}),
			b.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/16")}),
			c.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.1.0/24", "10.9.0.0/16")}),
		})
		want := map[string][]netip.Prefix{"a": pfxs("10.0.0.0/24"), "b": {}, "c": pfxs("10.9.0.0/16")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("prefixes %v, want %v", got, want)
		}
		if len(cs) != 2 || cs[0].Site != "b" || cs[0].Winner != "a" || cs[1].Site != "c" || cs[1].Winner != "b" {
			t.Errorf("conflicts %+v", cs)
		}
	})
	t.Run("winner is the oldest overlapping site", func(t *testing.T) {
		_, cs := trust.Resolve([]*trust.SignedRecord{
			d.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/8")}),
			c.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.3.0.0/16")}),
			a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.7.0.0/16")}),
		})
		if len(cs) != 1 || cs[0].Site != "d" || cs[0].Winner != "a" {
			t.Errorf("conflicts %+v", cs)
		}
	})
	t.Run("duplicate WireGuard key drops the younger site", func(t *testing.T) {
		k := trusttest.WGKey("shared")
		got, cs := trust.Resolve([]*trust.SignedRecord{
			c.rec(t, trusttest.RecordOptions{WGCurrent: k, Prefixes: pfxs("10.3.0.0/16")}),
			b.rec(t, trusttest.RecordOptions{WGNext: k, Prefixes: pfxs("10.3.0.0/16")}),
			a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
		})
		// c is gone entirely, so b keeps 10.3.0.0/16.
		want := map[string][]netip.Prefix{"a": pfxs("10.1.0.0/16"), "b": pfxs("10.3.0.0/16")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("prefixes %v, want %v", got, want)
		}
		wantC := []trust.Conflict{{Site: "c", Winner: "b", Reason: trust.ReasonDuplicateKey}}
		if !reflect.DeepEqual(cs, wantC) {
			t.Errorf("conflicts %+v, want %+v", cs, wantC)
		}
	})
	t.Run("default routes only meet default routes", func(t *testing.T) {
		got, cs := trust.Resolve([]*trust.SignedRecord{
			a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("0.0.0.0/0", "10.1.0.0/16")}),
			b.rec(t, trusttest.RecordOptions{Prefixes: pfxs("0.0.0.0/0", "::/0", "10.2.0.0/16")}),
		})
		want := map[string][]netip.Prefix{"a": pfxs("0.0.0.0/0", "10.1.0.0/16"), "b": pfxs("::/0", "10.2.0.0/16")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("prefixes %v, want %v", got, want)
		}
		if len(cs) != 1 || cs[0].Prefix != pfx("0.0.0.0/0") || cs[0].Site != "b" {
			t.Errorf("conflicts %+v", cs)
		}
	})
	t.Run("leaving records and stale records", func(t *testing.T) {
		got, cs := trust.Resolve([]*trust.SignedRecord{
			a.rec(t, trusttest.RecordOptions{Leaving: true, Prefixes: pfxs("10.0.0.0/8")}),
			b.rec(t, trusttest.RecordOptions{Seq: 1, Prefixes: pfxs("10.1.0.0/16")}),
			b.rec(t, trusttest.RecordOptions{Seq: 2, Prefixes: pfxs("10.2.0.0/16")}),
			nil,
		})
		want := map[string][]netip.Prefix{"b": pfxs("10.2.0.0/16")}
		if !reflect.DeepEqual(got, want) || len(cs) != 0 {
			t.Errorf("prefixes %v conflicts %+v, want %v", got, cs, want)
		}
	})
	t.Run("empty", func(t *testing.T) {
		got, cs := trust.Resolve(nil)
		if len(got) != 0 || len(cs) != 0 {
			t.Errorf("%v %v", got, cs)
		}
	})
}

// permutations calls f with every ordering of in (Heap's algorithm).
func permutations[T any](in []T, f func([]T)) {
	a := slices.Clone(in)
	c := make([]int, len(a))
	f(slices.Clone(a))
	for i := 0; i < len(a); {
		if c[i] < i {
			if i%2 == 0 {
				a[0], a[i] = a[i], a[0]
			} else {
				a[c[i]], a[i] = a[i], a[c[i]]
			}
			f(slices.Clone(a))
			c[i]++
			i = 0
		} else {
			c[i] = 0
			i++
		}
	}
}

func TestResolvePermutations(t *testing.T) {
	ca := trusttest.NewCA(t)
	base := time.Now().Truncate(time.Second)
	a := newResolveSite(t, ca, base, "a", 10)
	b := newResolveSite(t, ca, base, "b", 10) // same age as a: serial decides
	c := newResolveSite(t, ca, base, "c", 5)
	d := newResolveSite(t, ca, base, "d", 1)
	records := []*trust.SignedRecord{
		a.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.0.0/16", "fd00::/32")}),
		b.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.0.5.0/24", "10.1.0.0/16")}),
		c.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.2.0/24", "fd00:0:1::/48", "0.0.0.0/0"), WGNext: trusttest.WGKey("d")}),
		d.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.9.0.0/16")}),
		c.rec(t, trusttest.RecordOptions{Seq: 2, Prefixes: pfxs("10.1.2.0/24", "fd00:0:1::/48")}), // supersedes c's first
	}
	wantP, wantC := trust.Resolve(records)
	n := 0
	permutations(records, func(p []*trust.SignedRecord) {
		n++
		gotP, gotC := trust.Resolve(p)
		if !reflect.DeepEqual(gotP, wantP) || !reflect.DeepEqual(gotC, wantC) {
			t.Fatalf("order %d: got %v %+v, want %v %+v", n, gotP, gotC, wantP, wantC)
		}
	})
	if n != 120 {
		t.Errorf("%d permutations", n)
	}
	t.Logf("prefixes %v conflicts %+v", wantP, wantC)
}

// TestResolveProperties builds random clusters from a small pool of nested
// prefixes and keys, and checks Resolve against its definition and against
// shuffled input.
func TestResolveProperties(t *testing.T) {
	ca := trusttest.NewCA(t)
	base := time.Now().Truncate(time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	pool := pfxs("10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "10.0.1.0/24", "10.1.0.0/16", "10.1.128.0/17",
		"10.2.0.0/16", "0.0.0.0/0", "::/0", "fd00::/16", "fd00:1::/32", "fd00:2::/32", "10.0.1.128/25")
	keys := []wg.PublicKey{trusttest.WGKey("k0"), trusttest.WGKey("k1"), trusttest.WGKey("k2"), trusttest.WGKey("k3"),
		trusttest.WGKey("k4"), trusttest.WGKey("k5"), trusttest.WGKey("k6"), trusttest.WGKey("k7")}
	conflict := func(a, b netip.Prefix) bool {
		if a.Bits() == 0 || b.Bits() == 0 {
			return a.Bits() == 0 && b.Bits() == 0 && a.Addr().Is4() == b.Addr().Is4()
		}
		return a.Overlaps(b)
	}
	var nConflicts, nDup int
	for scenario := range 40 {
		nSites := 3 + rng.IntN(5)
		var records []*trust.SignedRecord
		for i := range nSites {
			s := newResolveSite(t, ca, base, fmt.Sprintf("s%d", i), rng.IntN(3))
			var o trusttest.RecordOptions
			o.Prefixes = []netip.Prefix{}
			for range rng.IntN(4) {
				o.Prefixes = append(o.Prefixes, pool[rng.IntN(len(pool))])
			}
			o.WGCurrent = keys[rng.IntN(len(keys))]
			if rng.IntN(3) == 0 {
				if o.WGNext = keys[rng.IntN(len(keys))]; o.WGNext == o.WGCurrent {
					o.WGNext = wg.PublicKey{}
				}
			}
			records = append(records, s.rec(t, o))
		}
		gotP, gotC := trust.Resolve(records)

		for range 20 {
			shuffled := slices.Clone(records)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			p, c := trust.Resolve(shuffled)
			if !reflect.DeepEqual(p, gotP) || !reflect.DeepEqual(c, gotC) {
				t.Fatalf("scenario %d: order changes the result", scenario)
			}
		}

		// Reference: rank sites, drop key duplicates, then apply the pairwise rule.
		ranked := slices.Clone(records)
		slices.SortFunc(ranked, func(a, b *trust.SignedRecord) int {
			if a.Cert.OlderThan(b.Cert) {
				return -1
			}
			return 1
		})
		var alive []*trust.SignedRecord
		used := map[wg.PublicKey]bool{}
		for _, r := range ranked {
			ks := []wg.PublicKey{r.WGCurrent}
			if !r.WGNext.IsZero() {
				ks = append(ks, r.WGNext)
			}
			dup := false
			for _, k := range ks {
				dup = dup || used[k]
			}
			_, present := gotP[r.Site]
			if dup == present {
				t.Fatalf("scenario %d: site %s duplicate key %v but present %v", scenario, r.Site, dup, present)
			}
			if dup {
				continue
			}
			for _, k := range ks {
				used[k] = true
			}
			alive = append(alive, r)
		}
		if len(gotP) != len(alive) {
			t.Fatalf("scenario %d: %d sites, want %d", scenario, len(gotP), len(alive))
		}
		for i, r := range alive {
			var want []netip.Prefix
			for _, p := range r.Prefixes {
				lost := false
				for _, older := range alive[:i] {
					for _, q := range older.Prefixes {
						lost = lost || conflict(p, q)
					}
				}
				if !lost {
					want = append(want, p)
				}
			}
			if !slices.Equal(gotP[r.Site], want) {
				t.Fatalf("scenario %d: site %s keeps %v, want %v (announced %v)", scenario, r.Site, gotP[r.Site], want, r.Prefixes)
			}
		}
		// Kept prefixes of different sites never conflict; winners are older.
		for s1, ps1 := range gotP {
			for s2, ps2 := range gotP {
				if s1 == s2 {
					continue
				}
				for _, p := range ps1 {
					for _, q := range ps2 {
						if conflict(p, q) {
							t.Fatalf("scenario %d: %s keeps %v and %s keeps %v", scenario, s1, p, s2, q)
						}
					}
				}
			}
		}
		bySite := map[string]*trust.SignedRecord{}
		for _, r := range records {
			bySite[r.Site] = r
		}
		for _, c := range gotC {
			nConflicts++
			if c.Reason == trust.ReasonDuplicateKey {
				nDup++
			}
			if !bySite[c.Winner].Cert.OlderThan(bySite[c.Site].Cert) {
				t.Fatalf("scenario %d: conflict %+v: winner is not older", scenario, c)
			}
		}
	}
	t.Logf("%d conflicts, %d of them duplicate keys", nConflicts, nDup)
	if nConflicts == 0 || nDup == 0 {
		t.Error("the random clusters exercise nothing")
	}
}

func newGatewaySite(t *testing.T, ca *trust.CA, base time.Time, name string, gateway uint8, ageHours int) resolveSite {
	c, k := trusttest.IssueWith(t, ca, name, trusttest.CertOptions{Gateway: gateway, NotBefore: base.Add(-time.Duration(ageHours) * time.Hour)}, "10.250.0.0/16")
	return resolveSite{c, k}
}

func gid(site string, gateway uint8) trust.GatewayID {
	return trust.GatewayID{Site: site, Gateway: gateway}
}

// kept returns the prefixes of each gateway ResolveGateways kept.
func kept(won map[trust.GatewayID]trust.Resolved) map[trust.GatewayID][]netip.Prefix {
	out := make(map[trust.GatewayID][]netip.Prefix, len(won))
	for id, r := range won {
		out[id] = r.Prefixes
	}
	return out
}

func TestResolveGateways(t *testing.T) {
	ca, other := trusttest.NewCA(t), trusttest.NewCA(t)
	base := time.Now().Truncate(time.Second)
	fra0 := newGatewaySite(t, ca, base, "fra1", 0, 20) // oldest
	ams0 := newGatewaySite(t, ca, base, "ams2", 0, 10)
	fra1 := newGatewaySite(t, ca, base, "fra1", 1, 5)
	ams1 := newGatewaySite(t, ca, base, "ams2", 1, 2) // youngest

	// each checks one scenario in every arrival order, and returns the
	// result.
	each := func(t *testing.T, records []*trust.SignedRecord, wantP map[trust.GatewayID][]netip.Prefix, wantC []trust.Conflict) map[trust.GatewayID]trust.Resolved {
		t.Helper()
		var first map[trust.GatewayID]trust.Resolved
		permutations(records, func(p []*trust.SignedRecord) {
			won, gotC := trust.ResolveGateways(p)
			if gotP := kept(won); !reflect.DeepEqual(gotP, wantP) || !reflect.DeepEqual(gotC, wantC) {
				t.Fatalf("got %v %+v\nwant %v %+v", gotP, gotC, wantP, wantC)
			}
			for id, r := range won {
				if r.Record.ID() != id || !slices.Contains(records, r.Record) {
					t.Fatalf("%v: record of %v, not one of the input", id, r.Record.ID())
				}
			}
			if first == nil {
				first = won
			} else if !reflect.DeepEqual(won, first) {
				t.Fatal("another order picks other records")
			}
		})
		return first
	}
	t.Run("gateways of one site share its prefixes, default routes included", func(t *testing.T) {
		each(t, []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "0.0.0.0/0")}),
			fra1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "10.1.7.0/24", "0.0.0.0/0")}),
			ams0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16", "0.0.0.0/0")}),
			ams1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16", "0.0.0.0/0")}),
		}, map[trust.GatewayID][]netip.Prefix{
			gid("fra1", 0): pfxs("10.1.0.0/16", "0.0.0.0/0"),
			gid("fra1", 1): pfxs("10.1.0.0/16", "10.1.7.0/24", "0.0.0.0/0"),
			gid("ams2", 0): pfxs("10.2.0.0/16"),
			gid("ams2", 1): pfxs("10.2.0.0/16"),
		}, []trust.Conflict{
			{Site: "ams2", Prefix: pfx("0.0.0.0/0"), Winner: "fra1", Reason: trust.ReasonOverlapSite},
			{Site: "ams2", Gateway: 1, Prefix: pfx("0.0.0.0/0"), Winner: "fra1", Reason: trust.ReasonOverlapSite},
		})
	})
	t.Run("a gateway cannot announce another site's prefix", func(t *testing.T) {
		// ams2's gateway 1 (younger than fra1's certificates) announces
		// fra1's prefixes; fra1's gateway 1 (younger than ams2's gateway 0)
		// announces one of ams2's.
		each(t, []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
			fra1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "10.2.9.0/24")}),
			ams0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16")}),
			ams1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16", "10.1.0.0/24")}),
		}, map[trust.GatewayID][]netip.Prefix{
			gid("fra1", 0): pfxs("10.1.0.0/16"),
			gid("fra1", 1): pfxs("10.1.0.0/16"),
			gid("ams2", 0): pfxs("10.2.0.0/16"),
			gid("ams2", 1): pfxs("10.2.0.0/16"),
		}, []trust.Conflict{
			{Site: "ams2", Gateway: 1, Prefix: pfx("10.1.0.0/24"), Winner: "fra1", Reason: trust.ReasonOverlapSite},
			{Site: "fra1", Gateway: 1, Prefix: pfx("10.2.9.0/24"), Winner: "ams2", Reason: trust.ReasonOverlapSite},
		})
	})
	t.Run("a gateway added later claims its site's space as early as the site, but nothing new", func(t *testing.T) {
		// ams2 (issued after fra1's gateway 0, before its gateway 1) was
		// given part of fra1's range by mistake: it loses it to fra1, on
		// both gateways. fra1's gateway 1 also announces a range no older
		// gateway of fra1 announces: that claim is as young as gateway 1.
		each(t, []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
			ams0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.5.0/24", "10.2.0.0/16")}),
			fra1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "10.1.0.0/17", "10.3.0.0/16", "10.2.128.0/17")}),
			ams1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16", "10.3.5.0/24")}),
		}, map[trust.GatewayID][]netip.Prefix{
			gid("fra1", 0): pfxs("10.1.0.0/16"),
			gid("fra1", 1): pfxs("10.1.0.0/16", "10.1.0.0/17", "10.3.0.0/16"),
			gid("ams2", 0): pfxs("10.2.0.0/16"),
			gid("ams2", 1): pfxs("10.2.0.0/16"),
		}, []trust.Conflict{
			{Site: "ams2", Prefix: pfx("10.1.5.0/24"), Winner: "fra1", Reason: trust.ReasonOverlapSite},
			{Site: "ams2", Gateway: 1, Prefix: pfx("10.3.5.0/24"), Winner: "fra1", WinnerGateway: 1, Reason: trust.ReasonOverlapSite},
			{Site: "fra1", Gateway: 1, Prefix: pfx("10.2.128.0/17"), Winner: "ams2", Reason: trust.ReasonOverlapSite},
		})
	})
	t.Run("the same site name from another CA is another site", func(t *testing.T) {
		foreign := newGatewaySite(t, other, base, "fra1", 1, 1)
		each(t, []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
			foreign.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "10.9.0.0/16")}),
		}, map[trust.GatewayID][]netip.Prefix{
			gid("fra1", 0): pfxs("10.1.0.0/16"),
			gid("fra1", 1): pfxs("10.9.0.0/16"),
		}, []trust.Conflict{
			{Site: "fra1", Gateway: 1, Prefix: pfx("10.1.0.0/16"), Winner: "fra1", Reason: trust.ReasonOverlapSite},
		})
	})
	t.Run("two certificates for one gateway: the older wins, whatever the order and sequence", func(t *testing.T) {
		usurper := newGatewaySite(t, ca, base, "fra1", 1, 1) // younger than fra1, another identity key
		for _, key := range []wg.PublicKey{trusttest.WGKey("usurper"), trusttest.WGKey("fra1.1")} {
			won := each(t, []*trust.SignedRecord{
				fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
				fra1.rec(t, trusttest.RecordOptions{Seq: 5, Prefixes: pfxs("10.1.0.0/16")}),
				usurper.rec(t, trusttest.RecordOptions{Seq: 500, WGCurrent: key, Prefixes: pfxs("10.1.0.0/16", "10.1.9.0/24")}),
				usurper.rec(t, trusttest.RecordOptions{Seq: 400, WGCurrent: key, Prefixes: pfxs("10.1.0.0/16")}),
			}, map[trust.GatewayID][]netip.Prefix{
				gid("fra1", 0): pfxs("10.1.0.0/16"),
				gid("fra1", 1): pfxs("10.1.0.0/16"),
			}, []trust.Conflict{
				{Site: "fra1", Gateway: 1, Winner: "fra1", WinnerGateway: 1, Reason: trust.ReasonDuplicateGateway, Serial: usurper.cert.Serial.Text(16)},
			})
			if got := won[gid("fra1", 1)].Record; got.Cert.Serial.Cmp(fra1.cert.Serial) != 0 || got.Seq != 5 {
				t.Errorf("gateway fra1.1 is the record of serial %x seq %d, want the older certificate's", got.Cert.Serial, got.Seq)
			}
		}
	})
	t.Run("a certificate renewed for the same identity key: the latest record counts", func(t *testing.T) {
		c, _ := trusttest.IssueWith(t, ca, "fra1", trusttest.CertOptions{Gateway: 1, Identity: fra1.key, NotBefore: base.Add(-time.Hour)}, "10.250.0.0/16")
		renewed := resolveSite{c, fra1.key}
		for _, tc := range []struct {
			oldSeq, newSeq uint64
			want           []netip.Prefix
		}{{5, 6, pfxs("10.1.0.0/16", "10.1.9.0/24")}, {7, 6, pfxs("10.1.0.0/16")}} {
			won := each(t, []*trust.SignedRecord{
				fra1.rec(t, trusttest.RecordOptions{Seq: tc.oldSeq, Prefixes: pfxs("10.1.0.0/16")}),
				renewed.rec(t, trusttest.RecordOptions{Seq: tc.newSeq, Prefixes: pfxs("10.1.0.0/16", "10.1.9.0/24")}),
			}, map[trust.GatewayID][]netip.Prefix{gid("fra1", 1): tc.want}, nil)
			if got := won[gid("fra1", 1)].Record.Seq; got != max(tc.oldSeq, tc.newSeq) {
				t.Errorf("the record of seq %d counts, want the latest", got)
			}
		}
	})
	t.Run("WireGuard keys are unique across gateways", func(t *testing.T) {
		k := trusttest.WGKey("one key")
		each(t, []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{WGCurrent: k, Prefixes: pfxs("10.1.0.0/16")}),
			fra1.rec(t, trusttest.RecordOptions{WGNext: k, Prefixes: pfxs("10.1.0.0/16")}),
			ams1.rec(t, trusttest.RecordOptions{WGCurrent: trusttest.WGKey("fra1.1"), Prefixes: pfxs("10.2.0.0/16")}),
		}, map[trust.GatewayID][]netip.Prefix{
			gid("fra1", 0): pfxs("10.1.0.0/16"),
			gid("ams2", 1): pfxs("10.2.0.0/16"),
		}, []trust.Conflict{
			{Site: "fra1", Gateway: 1, Winner: "fra1", Reason: trust.ReasonDuplicateKey},
		})
	})
	t.Run("Resolve keeps gateway 0 of each site, by site name", func(t *testing.T) {
		records := []*trust.SignedRecord{
			fra0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16")}),
			fra1.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.1.0.0/16", "10.2.0.0/24")}),
			ams0.rec(t, trusttest.RecordOptions{Prefixes: pfxs("10.2.0.0/16")}),
		}
		got, cs := trust.Resolve(records)
		_, wantC := trust.ResolveGateways(records)
		want := map[string][]netip.Prefix{"fra1": pfxs("10.1.0.0/16"), "ams2": pfxs("10.2.0.0/16")}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(cs, wantC) || len(cs) != 1 {
			t.Errorf("Resolve = %v %+v, want %v %+v", got, cs, want, wantC)
		}
	})
}

// TestResolveGatewayProperties builds random clusters of sites with one to
// three gateways — some gateways certified twice (another identity key),
// some renewed (the same identity key), some with the site name certified
// by a second CA, some records superseded — and checks ResolveGateways
// against a direct transcription of its definition and against shuffled
// input.
func TestResolveGatewayProperties(t *testing.T) {
	cas := []*trust.CA{trusttest.NewCA(t), trusttest.NewCA(t)}
	base := time.Now().Truncate(time.Second)
	rng := rand.New(rand.NewPCG(3, 4))
	pool := pfxs("10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "10.0.1.0/24", "10.1.0.0/16", "10.1.128.0/17",
		"10.2.0.0/16", "0.0.0.0/0", "::/0", "fd00::/16", "fd00:1::/32", "fd00:2::/32", "10.0.1.128/25")
	var keys []wg.PublicKey
	for i := range 10 {
		keys = append(keys, trusttest.WGKey(fmt.Sprintf("k%d", i)))
	}
	counts := map[trust.Reason]int{}
	var shared int
	for scenario := range 60 {
		var records []*trust.SignedRecord
		caOf := map[string]int{} // by certificate DER: records carry their own parsed copy
		seq := uint64(0)
		record := func(c *trust.Certificate, k ed25519.PrivateKey) *trust.SignedRecord {
			seq++
			o := trusttest.RecordOptions{Seq: seq, Prefixes: []netip.Prefix{}, WGCurrent: keys[rng.IntN(len(keys))]}
			for range rng.IntN(4) {
				o.Prefixes = append(o.Prefixes, pool[rng.IntN(len(pool))])
			}
			if rng.IntN(4) == 0 {
				if o.WGNext = keys[rng.IntN(len(keys))]; o.WGNext == o.WGCurrent {
					o.WGNext = wg.PublicKey{}
				}
			}
			return trusttest.SignedRecord(t, c, k, o)
		}
		for s := range 2 + rng.IntN(4) {
			site := fmt.Sprintf("s%d", s)
			for gw := range uint8(trust.MaxGateways) {
				if gw > 0 && rng.IntN(2) == 0 {
					continue
				}
				for range 1 + rng.IntN(4)/3 { // a second holder one time in four
					ca := 0
					if rng.IntN(6) == 0 {
						ca = 1
					}
					c, k := trusttest.IssueWith(t, cas[ca], site, trusttest.CertOptions{Gateway: gw,
						NotBefore: base.Add(-time.Duration(rng.IntN(4)) * time.Hour)}, "10.250.0.0/16")
					caOf[string(c.Raw)] = ca
					if rng.IntN(5) == 0 { // superseded by a later record of the same holder
						records = append(records, record(c, k))
					}
					if rng.IntN(6) == 0 { // renewed for the same identity key
						rc, _ := trusttest.IssueWith(t, cas[ca], site, trusttest.CertOptions{Gateway: gw, Identity: k,
							NotBefore: base.Add(-time.Duration(rng.IntN(4)) * time.Hour)}, "10.250.0.0/16")
						caOf[string(rc.Raw)] = ca
						records = append(records, record(rc, k))
					}
					records = append(records, record(c, k))
				}
			}
		}
		gotW, gotC := trust.ResolveGateways(records)
		gotP := kept(gotW)
		for range 10 {
			shuffled := slices.Clone(records)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if w, c := trust.ResolveGateways(shuffled); !reflect.DeepEqual(w, gotW) || !reflect.DeepEqual(c, gotC) {
				t.Fatalf("scenario %d: order changes the result", scenario)
			}
		}
		wantW, wantC := resolveReference(records, func(c *trust.Certificate) int { return caOf[string(c.Raw)] })
		if wantP := kept(wantW); !reflect.DeepEqual(gotP, wantP) {
			for _, r := range records {
				t.Logf("%v ca %d nb %v serial %x key %x seq %d prefixes %v wg %v", r.ID(), caOf[string(r.Cert.Raw)], r.Cert.NotBefore, r.Cert.Serial, r.Cert.IdentityKey[:4], r.Seq, r.Prefixes, r.WGCurrent.Short())
			}
			t.Logf("got conflicts %+v\nwant %+v", gotC, wantC)
			t.Fatalf("scenario %d: prefixes\n got %v\nwant %v", scenario, gotP, wantP)
		}
		if !reflect.DeepEqual(gotW, wantW) {
			t.Fatalf("scenario %d: other records count", scenario)
		}
		if !reflect.DeepEqual(gotC, wantC) {
			t.Fatalf("scenario %d: conflicts\n got %+v\nwant %+v", scenario, gotC, wantC)
		}
		for _, c := range gotC {
			counts[c.Reason]++
		}
		// Kept prefixes of different sites (or CAs) never conflict.
		for a, pa := range gotP {
			for b, pb := range gotP {
				for _, p := range pa {
					for _, q := range pb {
						if a.Site == b.Site && p.Overlaps(q) && a != b {
							shared++
						}
						if a.Site != b.Site && resolveConflict(p, q) {
							t.Fatalf("scenario %d: %v keeps %v and %v keeps %v", scenario, a, p, b, q)
						}
					}
				}
			}
		}
	}
	t.Logf("conflicts by reason %v; %d prefixes shared by gateways of one site", counts, shared)
	for _, r := range []trust.Reason{trust.ReasonDuplicateGateway, trust.ReasonDuplicateKey, trust.ReasonOverlapSite} {
		if counts[r] == 0 {
			t.Errorf("the random clusters never produce %s", r)
		}
	}
	if shared == 0 {
		t.Error("the random clusters never share a prefix between gateways")
	}
}

func resolveConflict(a, b netip.Prefix) bool {
	if a.Bits() == 0 || b.Bits() == 0 {
		return a.Bits() == 0 && b.Bits() == 0 && a.Addr().Is4() == b.Addr().Is4()
	}
	return a.Overlaps(b)
}

// resolveReference is ResolveGateways's definition, written out with
// loops over everything; caOf says which CA issued a certificate.
func resolveReference(records []*trust.SignedRecord, caOf func(*trust.Certificate) int) (map[trust.GatewayID]trust.Resolved, []trust.Conflict) {
	// The latest record per gateway and identity key.
	type holderKey struct {
		id  trust.GatewayID
		key string
	}
	latest := map[holderKey]*trust.SignedRecord{}
	for _, r := range records {
		k := holderKey{r.ID(), string(r.Cert.IdentityKey)}
		if cur, ok := latest[k]; !ok || r.Seq > cur.Seq {
			latest[k] = r
		}
	}
	var ranked []*trust.SignedRecord
	for _, r := range latest {
		ranked = append(ranked, r)
	}
	slices.SortFunc(ranked, func(a, b *trust.SignedRecord) int {
		if a.Cert.OlderThan(b.Cert) {
			return -1
		}
		return 1
	})
	var conflicts []trust.Conflict
	// One holder per gateway, then unique WireGuard keys.
	var alive []*trust.SignedRecord
	held := map[trust.GatewayID]bool{}
	used := map[wg.PublicKey]*trust.SignedRecord{}
	for _, r := range ranked {
		id := r.ID()
		if held[id] {
			conflicts = append(conflicts, trust.Conflict{Site: id.Site, Gateway: id.Gateway, Winner: id.Site, WinnerGateway: id.Gateway,
				Reason: trust.ReasonDuplicateGateway, Serial: r.Cert.Serial.Text(16)})
			continue
		}
		held[id] = true
		ks := []wg.PublicKey{r.WGCurrent}
		if !r.WGNext.IsZero() {
			ks = append(ks, r.WGNext)
		}
		var winner *trust.SignedRecord
		for _, k := range ks {
			if o := used[k]; o != nil && (winner == nil || o.Cert.OlderThan(winner.Cert)) {
				winner = o
			}
		}
		if winner != nil {
			conflicts = append(conflicts, trust.Conflict{Site: id.Site, Gateway: id.Gateway, Winner: winner.Site, WinnerGateway: winner.ID().Gateway, Reason: trust.ReasonDuplicateKey})
			continue
		}
		for _, k := range ks {
			used[k] = r
		}
		alive = append(alive, r)
	}
	// A site's claim on p is as old as its oldest gateway announcing p or a
	// specific prefix containing it (a default route only contains itself).
	sameFamily := func(a, b *trust.SignedRecord) bool { return a.Site == b.Site && caOf(a.Cert) == caOf(b.Cert) }
	contains := func(q, p netip.Prefix) bool {
		if p.Bits() == 0 || q.Bits() == 0 {
			return p == q
		}
		return q.Bits() <= p.Bits() && q.Contains(p.Addr())
	}
	claimAge := func(i int, p netip.Prefix) int {
		for j, h := range alive {
			if sameFamily(h, alive[i]) {
				for _, q := range h.Prefixes {
					if contains(q, p) {
						return j
					}
				}
			}
		}
		panic("no claim")
	}
	won := map[trust.GatewayID]trust.Resolved{}
	for i, r := range alive {
		keep := []netip.Prefix{}
		reported := map[netip.Prefix]bool{}
		for _, p := range r.Prefixes {
			mine, winner := claimAge(i, p), -1
			for j, o := range alive {
				if sameFamily(o, r) {
					continue
				}
				for _, q := range o.Prefixes {
					if theirs := claimAge(j, q); resolveConflict(p, q) && theirs < mine && (winner < 0 || theirs < winner) {
						winner = theirs
					}
				}
			}
			if winner < 0 {
				keep = append(keep, p)
			} else if !reported[p] {
				reported[p] = true
				w := alive[winner].ID()
				conflicts = append(conflicts, trust.Conflict{Site: r.Site, Gateway: r.ID().Gateway, Prefix: p, Winner: w.Site, WinnerGateway: w.Gateway, Reason: trust.ReasonOverlapSite})
			}
		}
		won[r.ID()] = trust.Resolved{Record: r, Prefixes: keep}
	}
	slices.SortFunc(conflicts, func(a, b trust.Conflict) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Reason, b.Reason),
			a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			cmp.Compare(a.Winner, b.Winner), cmp.Compare(a.WinnerGateway, b.WinnerGateway), cmp.Compare(a.Serial, b.Serial))
	})
	return won, conflicts
}
