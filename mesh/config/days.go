package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is 24 hours: the unit of certificate lifetimes and expiry warnings.
const Day = 24 * time.Hour

// ParseDays parses a duration that may be given in whole days ("30d") as
// well as in time.ParseDuration's units ("720h", "90m"). Days are the unit
// operators think of certificate lifetimes in; Go's durations stop at hours.
func ParseDays(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q: a number of days like 30d, or a duration like 720h", s)
		}
		return time.Duration(days) * Day, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: a number of days like 30d, or a duration like 720h", s)
	}
	return d, nil
}

// FormatDays writes d in whole days when it is a whole number of days
// ("30d"), else as time.Duration does.
func FormatDays(d time.Duration) string {
	if d > 0 && d%Day == 0 {
		return fmt.Sprintf("%dd", d/Day)
	}
	return d.String()
}
