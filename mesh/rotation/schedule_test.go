package rotation

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestNextRotationTime(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	iv := 24 * time.Hour
	since := now.Add(-time.Hour)
	var min, max time.Time
	for i := 0; i < 1000; i++ {
		at := nextRotationTime(since, iv, now, r.Float64)
		if at.Before(since.Add(iv*9/10)) || at.After(since.Add(iv*11/10)) {
			t.Fatalf("draw %d: %s outside interval ±10%%", i, at.Sub(since))
		}
		if min.IsZero() || at.Before(min) {
			min = at
		}
		if at.After(max) {
			max = at
		}
	}
	// Sites started together must not rotate together: the draws spread
	// over most of the ±10% window (4.8 h for a day).
	if spread := max.Sub(min); spread < 4*time.Hour {
		t.Errorf("1000 draws spread over only %s", spread)
	}
	// Overdue (the key is older than the interval): soon, within a minute,
	// and not all at the same moment.
	seen := map[time.Time]bool{}
	for i := 0; i < 50; i++ {
		at := nextRotationTime(now.Add(-3*iv), iv, now, r.Float64)
		if at.Before(now) || at.After(now.Add(time.Minute)) {
			t.Fatalf("overdue rotation at %s, want within a minute of now", at.Sub(now))
		}
		seen[at] = true
	}
	if len(seen) < 45 {
		t.Errorf("overdue rotations bunch together: %d distinct times in 50", len(seen))
	}
}
