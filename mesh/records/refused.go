package records

import (
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// refusedCache is a bounded set of hashes with an expiry, in two
// generations: lookups check both, inserts go to the current one, and the
// current one becomes the old one (the old one dropped) when it is full or
// ttl has passed.
type refusedCache struct {
	cur, old map[[32]byte]trust.Reason
	max      int
	ttl      time.Duration
	rotated  time.Time
}

func newRefusedCache(max int, ttl time.Duration) refusedCache {
	return refusedCache{cur: map[[32]byte]trust.Reason{}, old: map[[32]byte]trust.Reason{}, max: max, ttl: ttl}
}

func (c *refusedCache) get(h [32]byte, now time.Time) (trust.Reason, bool) {
	c.age(now)
	if r, ok := c.cur[h]; ok {
		return r, true
	}
	r, ok := c.old[h]
	return r, ok
}

func (c *refusedCache) put(h [32]byte, r trust.Reason, now time.Time) {
	c.age(now)
	if len(c.cur) >= c.max {
		c.rotate(now)
	}
	c.cur[h] = r
}

func (c *refusedCache) age(now time.Time) {
	if c.rotated.IsZero() {
		c.rotated = now
	}
	switch d := now.Sub(c.rotated); {
	case d >= 2*c.ttl:
		c.reset()
		c.rotated = now
	case d >= c.ttl:
		c.rotate(now)
	}
}

func (c *refusedCache) rotate(now time.Time) {
	c.old, c.cur, c.rotated = c.cur, make(map[[32]byte]trust.Reason, len(c.cur)), now
}

// reset forgets everything (after a reload: what was refused may pass now).
func (c *refusedCache) reset() {
	clear(c.cur)
	clear(c.old)
}

func (c *refusedCache) len() int { return len(c.cur) + len(c.old) }
