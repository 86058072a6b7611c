package ca

import (
	"cmp"
	"slices"
	"time"
)

// Listed is one certificate of the inventory as `dcmesh ca list` shows it.
type Listed struct {
	IssuedEntry
	// State is revoked, expired or valid at the time of the listing.
	State       string `json:"state"`
	LeftSeconds int64  `json:"left_seconds"` // until not-after; negative once expired
}

// States of a listed certificate.
const (
	ListedValid   = "valid"
	ListedExpired = "expired"
	ListedRevoked = "revoked"
)

// List returns every certificate the CA in dir issued, by site, gateway
// and then not-before (oldest first), with its state at now.
func List(dir string, now time.Time) ([]Listed, error) {
	_, inv, err := load(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(inv.Issued))
	for _, e := range inv.Issued {
		l := Listed{IssuedEntry: e, State: ListedValid, LeftSeconds: int64(e.NotAfter.Sub(now) / time.Second)}
		switch {
		case e.Revoked:
			l.State = ListedRevoked
		case now.After(e.NotAfter):
			l.State = ListedExpired
		}
		out = append(out, l)
	}
	slices.SortStableFunc(out, func(a, b Listed) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Gateway, b.Gateway), a.NotBefore.Compare(b.NotBefore))
	})
	return out, nil
}
