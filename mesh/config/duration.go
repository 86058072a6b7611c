package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is the unit "d" of ParseDuration: 24 hours (calendar days, leap
// seconds and daylight saving time play no part in lifetimes and intervals).
const Day = 24 * time.Hour

// ParseDuration reads a duration as time.ParseDuration does, and also in
// days: "365d", "1d12h", "7d". It is the one duration syntax of dcmesh, for
// every command-line flag and configuration field, so that a certificate
// lifetime is not written in hours.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	neg := strings.HasPrefix(t, "-")
	body := strings.TrimPrefix(strings.TrimPrefix(t, "-"), "+")
	var days time.Duration
	if i := strings.IndexByte(body, 'd'); i >= 0 {
		n, err := strconv.ParseUint(body[:i], 10, 32)
		if err != nil || n > 100*365 {
			return 0, durationError(s)
		}
		days, body = time.Duration(n)*Day, body[i+1:]
	}
	var rest time.Duration
	if body != "" {
		d, err := time.ParseDuration(body)
		if err != nil || d < 0 || strings.HasPrefix(body, "+") {
			return 0, durationError(s)
		}
		rest = d
	} else if days == 0 && !strings.HasSuffix(t, "d") {
		return 0, durationError(s)
	}
	d := days + rest
	if neg {
		d = -d
	}
	return d, nil
}

func durationError(s string) error {
	return fmt.Errorf("%q is not a duration: write a number with a unit d, h, m, s or ms, e.g. 365d, 1d12h, 90m or 10s", s)
}

// FormatDuration writes d as ParseDuration reads it, in days where it has
// whole days and without zero units ("365d", "1d12h", "3m", "500ms").
func FormatDuration(d time.Duration) string {
	if d < 0 {
		return "-" + FormatDuration(-d)
	}
	days, rest := d/Day, d%Day
	out := ""
	if days > 0 {
		out = strconv.FormatInt(int64(days), 10) + "d"
		if rest == 0 {
			return out
		}
	}
	s := rest.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return out + s
}
