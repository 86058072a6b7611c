package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"365d": 365 * Day, "1d12h": 36 * time.Hour, "1d": Day, " 7d ": 7 * Day, "10s": 10 * time.Second,
		"90m": 90 * time.Minute, "1h30m": 90 * time.Minute, "500ms": 500 * time.Millisecond, "0": 0, "0s": 0,
		"-5h": -5 * time.Hour, "-1d": -Day, "2d30m": 2*Day + 30*time.Minute, "8760h": 365 * Day,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1y", "d", "1d-2h", "1.5d", "d5h", "1dd", "5", "abc", "1d+1h", "-", "99999d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		} else if !strings.Contains(err.Error(), "365d") {
			t.Errorf("ParseDuration(%q): %v does not show how to write one", in, err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		365 * Day: "365d", 36 * time.Hour: "1d12h", 3 * time.Minute: "3m", 10 * time.Second: "10s",
		90 * time.Minute: "1h30m", 2 * time.Hour: "2h", 500 * time.Millisecond: "500ms", 0: "0s", Day + time.Second: "1d1s",
	} {
		got := FormatDuration(d)
		if got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(got); err != nil || back != d {
			t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", d, back, err)
		}
	}
}
