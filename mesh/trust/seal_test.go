package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

func newGossipKey(t testing.TB) []byte {
	k := make([]byte, trust.GossipKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

type sealSite struct {
	cert *trust.Certificate
	key  ed25519.PrivateKey
}

func sealSites(t testing.TB, ca *trust.CA, names ...string) ([]sealSite, []*trust.Certificate) {
	var sites []sealSite
	var certs []*trust.Certificate
	for i, n := range names {
		c, k := trusttest.Issue(t, ca, n, "10."+string(rune('1'+i))+".0.0/16")
		sites = append(sites, sealSite{c, k})
		certs = append(certs, c)
	}
	return sites, certs
}

func TestGossipKeyID(t *testing.T) {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	// The same vector is in mesh/gossip's tests: both must name keys alike.
	if got := trust.GossipKeyID(k); got != "630dcd2966c43366" {
		t.Errorf("GossipKeyID = %s", got)
	}
}

func TestSealGossipKeyRoundTrip(t *testing.T) {
	ca := trusttest.NewCA(t)
	now := time.Now()
	sites, certs := sealSites(t, ca, "fra1", "ams2", "lon3")
	key := newGossipKey(t)
	b, err := trust.SealGossipKey(key, 7, certs, ca, now)
	if err != nil {
		t.Fatal(err)
	}
	if b.Epoch != 7 || b.KeyID != trust.GossipKeyID(key) || b.SignerID != trust.CAID(ca.Cert) ||
		!slices.Equal(b.Recipients, []string{"fra1", "ams2", "lon3"}) || b.IssuedAt.Unix() != now.Unix() {
		t.Errorf("bundle: epoch %d key id %s signer %s recipients %v issued %v", b.Epoch, b.KeyID, b.SignerID, b.Recipients, b.IssuedAt)
	}
	if bytes.Contains(b.Raw, key) {
		t.Fatal("the bundle contains the key in clear")
	}
	// What a site receives: the DER, parsed against its pinned CAs.
	parsed, err := trust.ParseGossipKeyBundle(b.Raw, []*x509.Certificate{trusttest.NewCA(t).Cert, ca.Cert}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		got, err := trust.OpenGossipKey(parsed, s.key, 6)
		if err != nil {
			t.Fatalf("%s: %v", s.cert.Site, err)
		}
		if !bytes.Equal(got, key) {
			t.Errorf("%s opened another key", s.cert.Site)
		}
	}

	// A site that is not a recipient cannot open it.
	_, outsider := trusttest.Issue(t, ca, "par4", "10.9.0.0/16")
	if _, err := trust.OpenGossipKey(parsed, outsider, 0); err == nil || !strings.Contains(err.Error(), "not a recipient") {
		t.Errorf("outsider: %v", err)
	}
	// Replays: an epoch not above the installed one is refused.
	for _, last := range []uint64{7, 8} {
		if _, err := trust.OpenGossipKey(parsed, sites[0].key, last); !errors.Is(err, trust.ErrStaleGossipKey) {
			t.Errorf("epoch 7 with %d installed: %v, want ErrStaleGossipKey", last, err)
		}
	}
}

func TestSealGossipKeyRefusesBadInput(t *testing.T) {
	ca, other := trusttest.NewCA(t), trusttest.NewCA(t)
	now := time.Now()
	sites, certs := sealSites(t, ca, "fra1", "ams2")
	key := newGossipKey(t)
	twin, _ := trusttest.IssueWith(t, ca, "lon3", trusttest.CertOptions{}, "10.3.0.0/16")
	sameKey, _ := trusttest.IssueWith(t, ca, "par4", trusttest.CertOptions{Identity: sites[0].key}, "10.4.0.0/16")
	expired, _ := trusttest.IssueWith(t, ca, "old5", trusttest.CertOptions{NotBefore: now.Add(-2 * time.Hour).Truncate(time.Second), NotAfter: now.Add(-time.Hour)}, "10.5.0.0/16")
	cases := []struct {
		name  string
		key   []byte
		epoch uint64
		certs []*trust.Certificate
		ca    *trust.CA
		want  string
	}{
		{"short key", key[:16], 1, certs, ca, "key of 16 bytes"},
		{"epoch 0", key, 0, certs, ca, "epoch"},
		{"no recipients", key, 1, nil, ca, "0 recipients"},
		{"site twice", key, 1, []*trust.Certificate{certs[0], twin, certs[0]}, ca, `site "fra1" listed twice`},
		{"identity key twice", key, 1, []*trust.Certificate{certs[0], sameKey}, ca, "have the same identity key"},
		{"expired recipient", key, 1, []*trust.Certificate{certs[0], expired}, ca, `site "old5" expired`},
		{"no CA key", key, 1, certs, &trust.CA{Cert: ca.Cert, Key: other.Key}, "CA key does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := trust.SealGossipKey(tc.key, tc.epoch, tc.certs, tc.ca, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), key) {
				t.Error("the error contains the key")
			}
		})
	}
}

func TestGossipKeyBundleTampering(t *testing.T) {
	ca, stranger := trusttest.NewCA(t), trusttest.NewCA(t)
	now := time.Now()
	cas := []*x509.Certificate{ca.Cert}
	sites, certs := sealSites(t, ca, "fra1", "ams2", "lon3")
	key := newGossipKey(t)
	b, err := trust.SealGossipKey(key, 5, certs, ca, now)
	if err != nil {
		t.Fatal(err)
	}

	// Every single-bit change anywhere is refused (signature, or strict
	// decoding before it).
	for i := range b.Raw {
		for _, bit := range []byte{0x01, 0x80} {
			m := bytes.Clone(b.Raw)
			m[i] ^= bit
			if _, err := trust.ParseGossipKeyBundle(m, cas, now); err == nil {
				t.Fatalf("bundle with byte %d ^ %#x accepted", i, bit)
			}
		}
	}
	if _, err := trust.ParseGossipKeyBundle(append(bytes.Clone(b.Raw), 0), cas, now); err == nil {
		t.Error("trailing byte accepted")
	}
	if _, err := trust.ParseGossipKeyBundle(b.Raw[:len(b.Raw)-1], cas, now); err == nil {
		t.Error("truncated bundle accepted")
	}
	if _, err := trust.ParseGossipKeyBundle(make([]byte, trust.MaxGossipKeyBundleSize+1), cas, now); err == nil {
		t.Error("oversized bundle accepted")
	}

	// A bundle from a CA that is not pinned: a gossip-key holder's own.
	rogue, err := trust.SealGossipKey(newGossipKey(t), 6, certs, stranger, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ParseGossipKeyBundle(rogue.Raw, cas, now); err == nil || !strings.Contains(err.Error(), "which is not pinned") {
		t.Errorf("bundle of a CA not pinned: %v", err)
	}
	// Claiming the pinned CA as signer does not help without its key.
	forged := trust.ResignGossipKeyBundle(rogue.Raw, stranger.Key, func(body *trust.GossipKeyBody) {
		body.Signer, _ = hex.DecodeString(trust.CAID(ca.Cert))
	})
	if _, err := trust.ParseGossipKeyBundle(forged, cas, now); err == nil || !strings.Contains(err.Error(), "signature of CA "+trust.CAID(ca.Cert)+" invalid") {
		t.Errorf("forged signer: %v", err)
	}
	// A CA that has expired signs nothing any more.
	if _, err := trust.ParseGossipKeyBundle(b.Raw, cas, ca.Cert.NotAfter.Add(time.Second)); err == nil {
		t.Error("bundle accepted after its CA expired")
	}

	// Entries are bound to what the CA signed: even with a valid CA
	// signature, an entry moved to another epoch or key id, or to another
	// recipient, does not open.
	open := func(der []byte, k ed25519.PrivateKey) error {
		t.Helper()
		pb, err := trust.ParseGossipKeyBundle(der, cas, now)
		if err != nil {
			t.Fatalf("re-signed bundle refused: %v", err)
		}
		_, err = trust.OpenGossipKey(pb, k, 0)
		return err
	}
	for name, mutate := range map[string]func(*trust.GossipKeyBody){
		"epoch moved":  func(body *trust.GossipKeyBody) { body.Epoch = 99 },
		"key id moved": func(body *trust.GossipKeyBody) { body.KeyID = bytes.Repeat([]byte{1}, 8) },
		"entries swapped": func(body *trust.GossipKeyBody) {
			body.Entries[0].Sealed, body.Entries[1].Sealed = body.Entries[1].Sealed, body.Entries[0].Sealed
		},
		"site renamed": func(body *trust.GossipKeyBody) { body.Entries[0].Site = "zzz9" },
	} {
		if err := open(trust.ResignGossipKeyBundle(b.Raw, ca.Key, mutate), sites[0].key); err == nil || !strings.Contains(err.Error(), "does not open") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Strict decoding, even when signed.
	for name, mutate := range map[string]func(*trust.GossipKeyBody){
		"version 2":         func(body *trust.GossipKeyBody) { body.Version = 2 },
		"duplicate site":    func(body *trust.GossipKeyBody) { body.Entries[1].Site = body.Entries[0].Site },
		"duplicate key":     func(body *trust.GossipKeyBody) { body.Entries[1].Identity = body.Entries[0].Identity },
		"bad site name":     func(body *trust.GossipKeyBody) { body.Entries[0].Site = "Not A Name" },
		"short sealed key":  func(body *trust.GossipKeyBody) { body.Entries[0].Sealed = body.Entries[0].Sealed[:79] },
		"no entries":        func(body *trust.GossipKeyBody) { body.Entries = nil },
		"negative epoch":    func(body *trust.GossipKeyBody) { body.Epoch = -1 },
		"long key id":       func(body *trust.GossipKeyBody) { body.KeyID = make([]byte, 9) },
		"short identity":    func(body *trust.GossipKeyBody) { body.Entries[2].Identity = body.Entries[2].Identity[:31] },
		"zero issue time":   func(body *trust.GossipKeyBody) { body.IssuedAt = 0 },
		"short signer name": func(body *trust.GossipKeyBody) { body.Signer = body.Signer[:4] },
	} {
		if _, err := trust.ParseGossipKeyBundle(trust.ResignGossipKeyBundle(b.Raw, ca.Key, mutate), cas, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// One reading per bundle: a site name as a PrintableString decodes
	// to the same string, but is not what SealGossipKey writes.
	printable := trust.ResignGossipKeyBodyRaw(b.Raw, ca.Key, func(body []byte) []byte {
		utf8 := append([]byte{0x0c, 4}, "fra1"...)
		if !bytes.Contains(body, utf8) {
			t.Fatal("site name not found in the body")
		}
		return bytes.Replace(body, utf8, append([]byte{0x13, 4}, "fra1"...), 1)
	})
	if _, err := trust.ParseGossipKeyBundle(printable, cas, now); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("site name as a PrintableString: %v", err)
	}
	// The same key sealed again, newer: opens once the older is installed.
	b2, err := trust.SealGossipKey(key, 6, certs, ca, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := trust.OpenGossipKey(b2, sites[2].key, b.Epoch); err != nil || !bytes.Equal(got, key) {
		t.Errorf("newer bundle: %v", err)
	}
}

func FuzzParseGossipKeyBundle(f *testing.F) {
	ca := fixedCA(f, 1)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	identity := ed25519.NewKeyFromSeed(make32(7))
	c1, _ := trusttest.IssueWith(f, ca, "fra1", trusttest.CertOptions{NotBefore: nb, Identity: identity, NotAfter: nb.Add(365 * 24 * time.Hour)}, "10.1.0.0/16")
	c2, _ := trusttest.IssueWith(f, ca, "ams2", trusttest.CertOptions{NotBefore: nb, NotAfter: nb.Add(365 * 24 * time.Hour)}, "10.2.0.0/16")
	b, err := trust.SealGossipKey(bytes.Repeat([]byte{9}, 32), 3, []*trust.Certificate{c1, c2}, ca, now)
	if err != nil {
		f.Fatal(err)
	}
	addMutations(f, b.Raw)
	cas := []*x509.Certificate{ca.Cert}
	f.Fuzz(func(t *testing.T, der []byte) {
		pb, err := trust.ParseGossipKeyBundle(der, cas, now)
		if err != nil {
			return
		}
		if !bytes.Equal(pb.Raw, der) || pb.Epoch == 0 || len(pb.KeyID) != 16 || len(pb.Recipients) == 0 || pb.SignerID != trust.CAID(ca.Cert) {
			t.Fatalf("invariant broken: %+v", pb)
		}
		key, err := trust.OpenGossipKey(pb, identity, 0)
		if err == nil && trust.GossipKeyID(key) != pb.KeyID {
			t.Fatal("opened a key that does not match the key id")
		}
	})
}
