package control

import (
	"fmt"
	"time"
)

// A request's optional durations (rotate, gossip-key install, drain) share
// one reading: zero means the default, anything else must lie in a range,
// and a request that waits may be answered as late as its wait.

// orDefault is d when set, else def.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// longPoll is how long the answer may take: wait when the request waits,
// else 0 (the client's usual deadline; see LongPoll).
func longPoll(waits bool, wait time.Duration) time.Duration {
	if !waits {
		return 0
	}
	return wait
}

// checkOptional refuses d outside [lo, hi] unless it is zero (the default
// def), naming the field.
func checkOptional(field string, d, lo, hi, def time.Duration) error {
	if d != 0 && (d < lo || d > hi) {
		return fmt.Errorf("%s: %s is out of range: use a duration between %s and %s (or 0 for the default, %s)", field, d, lo, hi, def)
	}
	return nil
}
