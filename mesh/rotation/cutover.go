package rotation

import (
	"context"
	"sync"
	"time"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
)

// Watcher polls the device for handshakes under pre-installed keys and
// cuts over on its own goroutine, so that a slow reconcile on the agent loop
// never delays it. The loop publishes what to watch after every reconcile
// and learns of each cut-over on the done channel.
//
// The signal is a completed handshake on the pre-installed key. We never
// initiate towards a pre-installed key, so we are the responder, and a
// responder counts the handshake complete only when the initiator's first
// packet under the new session arrives: only the holder of the new private
// key can produce it, and at that moment the session can carry traffic both
// ways. Cutting over earlier, at the initiation, would route our traffic to
// a key with no usable session yet: our first packet would start a handshake
// of our own that crosses the rotating site's, and two crossing initiations
// cancel each other (each side's response is refused, "invalid response"),
// silencing the pair until WireGuard retries after 5 s. Cut-overs made here
// are therefore also confirmed: this site has received data under the new
// key (confirm.go).
type Watcher struct {
	wgc  wg.Client
	name string
	done chan wg.PublicKey

	mu        sync.Mutex
	pairs     map[wg.PublicKey]wg.PublicKey // pre-installed new key → key it replaces
	cfg       wg.Config                     // last desired WireGuard state (slot 0)
	slots     []slot                        // every slot's, when set by setSlots
	fastUntil time.Time
	wake      chan struct{}
	// made are cut-overs done that the loop has not yet taken: a reconcile
	// computed without them would put the old key back.
	made map[wg.PublicKey]bool
	// device serialises the watcher's cut-overs with the loop's reconcile
	// (take → compute → apply), so neither works from a stale device view.
	device sync.Mutex
}

// NewWatcher watches the device name through wgc.
func NewWatcher(wgc wg.Client, name string) *Watcher {
	return &Watcher{wgc: wgc, name: name, done: make(chan wg.PublicKey, 16), wake: make(chan struct{}, 1),
		made: map[wg.PublicKey]bool{}}
}

// take returns the cut-overs made since the last call (for the loop, before
// it computes a desired state).
func (w *Watcher) take() []wg.PublicKey {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wg.PublicKey
	for k := range w.made {
		out = append(out, k)
	}
	clear(w.made)
	return out
}

// set publishes what to watch (from the loop) on the watcher's one
// interface.
func (w *Watcher) set(pairs map[wg.PublicKey]wg.PublicKey, cfg wg.Config) {
	w.setSlots(pairs, []slot{{iface: w.name, cfg: cfg}})
}

// setSlots publishes what to watch on every slot's interface.
func (w *Watcher) setSlots(pairs map[wg.PublicKey]wg.PublicKey, slots []slot) {
	w.mu.Lock()
	w.pairs, w.slots = pairs, slots
	if len(slots) > 0 {
		w.cfg = slots[0].cfg
	}
	w.mu.Unlock()
	notify(w.wake)
}

func (w *Watcher) fast(until time.Time) {
	w.mu.Lock()
	w.fastUntil = until
	w.mu.Unlock()
	notify(w.wake)
}

// Run polls until ctx ends: every handshakePoll while something is pending,
// every fastPoll in a fast window, not at all otherwise.
func (w *Watcher) Run(ctx context.Context, log func(msg string, args ...any)) {
	for {
		w.mu.Lock()
		pending := len(w.pairs) > 0
		interval := handshakePoll
		if time.Now().Before(w.fastUntil) {
			interval = fastPoll
		}
		w.mu.Unlock()
		var tick <-chan time.Time
		if pending {
			tick = time.After(interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
			continue
		case <-tick:
		}
		w.Poll(log)
	}
}

// Poll checks the devices once and cuts over every pre-installed key that
// completed a handshake (Run calls it; a test may instead). Each slot's
// keys are cut over on the slot's own interface.
func (w *Watcher) Poll(log func(msg string, args ...any)) {
	w.device.Lock()
	defer w.device.Unlock()
	w.mu.Lock()
	slots := w.slots
	if len(slots) == 0 {
		slots = []slot{{iface: w.name, cfg: w.cfg}}
	}
	w.mu.Unlock()
	for _, s := range slots {
		w.pollSlot(s, log)
	}
}

func (w *Watcher) pollSlot(s slot, log func(msg string, args ...any)) {
	dev, err := w.wgc.Device(s.iface)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[wg.PublicKey]wg.PublicKey{}
	for _, p := range dev.Peers {
		k := wg.PublicKey(p.PublicKey)
		if old, ok := w.pairs[k]; ok && !p.LastHandshakeTime.IsZero() {
			seen[k] = old
		}
	}
	if len(seen) == 0 {
		return
	}
	if err := wg.CutOver(w.wgc, s.iface, s.cfg, seen); err != nil {
		log("fast cut-over failed; the reconcile does it", "err", err)
	}
	for k := range seen {
		delete(w.pairs, k)
		w.made[k] = true
		select {
		case w.done <- k:
		default: // the loop's next reconcile still cuts over (cutover map)
		}
	}
}

// StartWatch starts the cut-over watcher; it stops with ctx. The loop takes
// its cut-overs from CutOverEvents.
func (r *Rotator) StartWatch(ctx context.Context) {
	w := NewWatcher(r.wgc, r.cfg.Interface)
	r.UseWatcher(w)
	go w.Run(ctx, func(msg string, args ...any) { r.log.Warn(msg, args...) })
}

// UseWatcher makes w the Rotator's watcher, without running it (StartWatch
// runs one; a test polls its own).
func (r *Rotator) UseWatcher(w *Watcher) {
	r.watch = w
	r.publishWatch(r.sites)
}

// CutOverEvents are the watcher's cut-overs (nil before startWatch: never ready).
func (r *Rotator) CutOverEvents() <-chan wg.PublicKey {
	if r.watch == nil {
		return nil
	}
	return r.watch.done
}

// OnCutOver is the loop's side of a cut-over the watcher made (the loop
// reconciles next).
func (r *Rotator) OnCutOver(k wg.PublicKey) { r.markCutOver(k) }

// publishWatch tells the watcher what is pending after a reconcile.
func (r *Rotator) publishWatch(sites []records.Site) {
	if r.watch == nil {
		return
	}
	pairs := map[wg.PublicKey]wg.PublicKey{}
	for _, s := range sites {
		if !s.Next.IsZero() && !r.cutover[s.Next] {
			pairs[s.Next] = s.PublicKey
		}
	}
	r.watch.setSlots(pairs, r.slotList())
}

// notify wakes whoever waits on ch, without blocking.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
