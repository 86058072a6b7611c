package trust_test

import (
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
