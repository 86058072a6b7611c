package wg

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPrivateKeyNeverPrints(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	secret := k.encode()
	var logged strings.Builder
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("key", "k", k, "ptr", &k)
	outputs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x %X", k, k, k, k, k, k, k),
		fmt.Sprintf("%v", &k), fmt.Sprintf("%v", []PrivateKey{k}), fmt.Sprintf("%+v", struct{ K PrivateKey }{k}),
		k.String(), k.GoString(), logged.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", k.k[:])) {
			t.Errorf("private key leaked into %q", out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("output %q does not say redacted", out)
		}
	}
	if b, err := json.Marshal(struct{ K PrivateKey }{k}); err == nil {
		t.Errorf("json.Marshal succeeded: %s", b)
	}
}

func TestParseKeys(t *testing.T) {
	k, _ := GeneratePrivateKey()
	pub := k.Public()
	got, err := ParsePublicKey(pub.String())
	if err != nil || got != pub {
		t.Fatalf("round trip: %v %v", got, err)
	}
	back, err := parsePrivateKey(k.encode())
	if err != nil || !back.Equal(k) {
		t.Fatalf("private round trip failed: %v", err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 43) + "!", strings.Repeat("A", 45), pub.String()[:43] + "_"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats the input", err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "Kernel": ModeKernel, "userspace": ModeUserspace} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("boringtun"); err == nil || !strings.Contains(err.Error(), "auto, kernel or userspace") {
		t.Errorf("ParseMode(boringtun) error = %v", err)
	}
}

func TestPresharedKeyNeverPrints(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdef")
	k, err := NewPresharedKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%x %#v %+v", k, k, struct{ K PresharedKey }{k}), k.String()} {
		if strings.Contains(out, string(raw)) || strings.Contains(out, fmt.Sprintf("%x", raw)) || !strings.Contains(out, "redacted") {
			t.Errorf("pre-shared key printed as %q", out)
		}
	}
	if _, err := json.Marshal(k); err == nil {
		t.Error("json.Marshal succeeded")
	}
}
