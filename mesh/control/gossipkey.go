package control

import (
	"context"
	"fmt"
	"time"
)

// GossipKeyRequest is the body of POST /v1/gossip-key (`dcmesh gossip-key
// install`): a CA-signed gossip-key bundle, as `dcmesh ca gossip-key
// rotate` wrote it.
type GossipKeyRequest struct {
	Bundle []byte `json:"bundle"`
	// Wait until every live site uses the new key and the old one is gone
	// (up to Timeout).
	Wait    bool          `json:"wait"`
	Timeout time.Duration `json:"timeout"`
}

// MaxGossipKeyBundle bounds a bundle (trust.MaxGossipKeyBundleSize; this
// package imports nothing of dcmesh).
const MaxGossipKeyBundle = 512 << 10

// DefaultGossipKeyWait is the wait of `gossip-key install --wait` without a
// timeout.
const DefaultGossipKeyWait = 5 * time.Minute

// Validate refuses an empty or oversize bundle and a wait out of range.
func (r GossipKeyRequest) Validate() error {
	if len(r.Bundle) == 0 || len(r.Bundle) > MaxGossipKeyBundle {
		return fmt.Errorf("bundle: %d bytes: pass the file 'dcmesh ca gossip-key rotate' wrote (at most %d bytes)", len(r.Bundle), MaxGossipKeyBundle)
	}
	return checkOptional("timeout", r.Timeout, MinRotateWait, MaxRotateWait, DefaultGossipKeyWait)
}

// WaitFor is how long the agent waits for the rotation's end.
func (r GossipKeyRequest) WaitFor() time.Duration { return orDefault(r.Timeout, DefaultGossipKeyWait) }

// ResponseWithin lets the answer to `--wait` take as long as the wait.
func (r GossipKeyRequest) ResponseWithin() time.Duration { return longPoll(r.Wait, r.WaitFor()) }

// GossipKeyResult says how far a gossip-key rotation got.
type GossipKeyResult string

const (
	GossipKeyStarted    GossipKeyResult = "started"    // installed here, under way (without --wait)
	GossipKeyComplete   GossipKeyResult = "complete"   // every live site uses the new key, the old one is removed here
	GossipKeyIncomplete GossipKeyResult = "incomplete" // not within the wait: Pending says what is missing
)

// GossipKeyReply says how a gossip-key rotation stands, as this site sees it.
type GossipKeyReply struct {
	Epoch  uint64          `json:"epoch"`
	KeyID  string          `json:"key_id"`
	Result GossipKeyResult `json:"result"`
	// Using lists the live sites that use the new key; Pending the others
	// (this one included), with what is missing.
	Using   []string          `json:"using"`
	Pending map[string]string `json:"pending,omitempty"`
}

// GossipKeyStatus is the gossip key in status: ids, never keys.
type GossipKeyStatus struct {
	// InUse is the id of the key this site sends with.
	InUse string `json:"in_use"`
	// Installed are the ids of the keys it accepts, InUse first.
	Installed []string `json:"installed"`
	// Epoch of the last bundle installed (0: the enrollment's key).
	Epoch uint64 `json:"epoch"`
	// Phase is "stable", "installed" (waiting until every live site holds
	// the new key) or "switched" (waiting until every live site uses it).
	Phase string `json:"phase"`
	// Pending names the live sites the next step waits for, and why.
	Pending map[string]string `json:"pending,omitempty"`
	// Started is when the rotation under way here began (installed, or the
	// agent restarted during it); absent when stable.
	Started *time.Time `json:"started,omitempty"`
	// Problem is why the stored bundle did not open at start (the site
	// gossips with its enrollment's key until a newer bundle is installed).
	Problem string `json:"problem,omitempty"`
}

// GossipKeyStuckAfter is how long a gossip-key rotation may wait before
// health says so: a rotation takes seconds (every live site holds the key,
// then uses it, plus a grace), and a site that is down is no longer live
// once gossip declares it dead (seconds to minutes on the WAN profile).
const GossipKeyStuckAfter = 15 * time.Minute

// InstallGossipKey hands the agent a gossip-key bundle and, with r.Wait,
// waits for the rotation's end.
func (c *Client) InstallGossipKey(ctx context.Context, r GossipKeyRequest) (GossipKeyReply, error) {
	return Call(ctx, c, EndpointGossipKey, r)
}
