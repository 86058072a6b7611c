package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Endpoint is one call of the local API: its method and path, and the types
// of its request and answer. The agent serves it (Serve) and clients call it
// (Call, or the Client methods), so both ends name it once.
type Endpoint[In, Out any] struct {
	Method, Path string
}

// Pattern is the endpoint as an http.ServeMux pattern.
func (e Endpoint[In, Out]) Pattern() string { return e.Method + " " + e.Path }

// The agent's API.
var (
	EndpointStatus  = Endpoint[Empty, Status]{"GET", "/v1/status"}
	EndpointHealth  = Endpoint[Empty, Health]{"GET", "/v1/health"}
	EndpointRecords = Endpoint[Empty, Records]{"GET", "/v1/records"}
	EndpointLeave   = Endpoint[Empty, Empty]{"POST", "/v1/leave"}
	EndpointRevoke  = Endpoint[RevokeRequest, RevokeReply]{"POST", "/v1/revoke"}
	EndpointDown    = Endpoint[DownRequest, Empty]{"POST", "/v1/down"}
	EndpointRotate  = Endpoint[RotateRequest, RotateReply]{"POST", "/v1/rotate"}
	EndpointRenew   = Endpoint[RenewRequest, RenewReply]{"POST", "/v1/renew"}
)

// EndpointGossipKey installs a gossip-key bundle (gossipkey.go).
var EndpointGossipKey = Endpoint[GossipKeyRequest, GossipKeyReply]{"POST", "/v1/gossip-key"}

// Serve registers f as e's handler on mux (through Handle).
func Serve[In, Out any](mux *http.ServeMux, e Endpoint[In, Out], f func(context.Context, In) (Out, error)) {
	mux.Handle(e.Pattern(), Handle(f))
}

// Call sends in to e and returns the answer. A call without a request
// (Empty) sends no body. Errors are Do's.
func Call[In, Out any](ctx context.Context, c *Client, e Endpoint[In, Out], in In) (Out, error) {
	var out Out
	var body any = in
	if _, empty := body.(Empty); empty {
		body = nil
	}
	err := c.Do(ctx, e.Method, e.Path, body, &out)
	return out, err
}

// Status asks for the site's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return Call(ctx, c, EndpointStatus, Empty{})
}

// Health asks for the site's health, as the agent evaluates it.
func (c *Client) Health(ctx context.Context) (Health, error) {
	return Call(ctx, c, EndpointHealth, Empty{})
}

// Records asks for every site record the agent holds.
func (c *Client) Records(ctx context.Context) (Records, error) {
	return Call(ctx, c, EndpointRecords, Empty{})
}

// Leave takes the site out of the mesh and stops the agent.
func (c *Client) Leave(ctx context.Context) error {
	_, err := Call(ctx, c, EndpointLeave, Empty{})
	return err
}

// Revoke hands the agent a revocation list.
func (c *Client) Revoke(ctx context.Context, r RevokeRequest) (RevokeReply, error) {
	return Call(ctx, c, EndpointRevoke, r)
}

// Down stops the agent.
func (c *Client) Down(ctx context.Context, r DownRequest) error {
	_, err := Call(ctx, c, EndpointDown, r)
	return err
}

// Rotate starts a key rotation and, with r.Wait, waits for its end.
func (c *Client) Rotate(ctx context.Context, r RotateRequest) (RotateReply, error) {
	return Call(ctx, c, EndpointRotate, r)
}

// Empty is the request or answer of calls without one.
type Empty struct{}

// Records is the answer of GET /v1/records: every record held, encoded as
// gossiped (for diagnostics and tests).
type Records struct {
	Records [][]byte `json:"records"`
}

// RevokeRequest carries a CA-signed revocation list (PEM or DER).
type RevokeRequest struct {
	CRL []byte `json:"crl"`
}

// RevokeReply says what the agent now holds.
type RevokeReply struct {
	Number  string `json:"number"`
	Revoked int    `json:"revoked"`
}

// Validate refuses a request without a list before the agent sees it.
func (r RevokeRequest) Validate() error {
	if len(r.CRL) == 0 {
		return errors.New("crl: empty: pass the revocation list 'dcmesh ca revoke' wrote (dcmesh revoke --in FILE)")
	}
	return nil
}

// DownRequest stops the agent; Purge also removes the link and every route
// of ours, fail-closed routes included.
type DownRequest struct {
	Purge bool `json:"purge"`
}

// RotateRequest is the body of POST /v1/rotate.
type RotateRequest struct {
	Emergency bool `json:"emergency"`
	// Wait for every peer to cut over (up to Timeout).
	Wait    bool          `json:"wait"`
	Timeout time.Duration `json:"timeout"`
}

// Bounds of RotateRequest.Timeout, the wait of `rotate --wait`: 0 means
// DefaultRotateWait. A rotation gives up on its peers after at most
// rotation.ack_timeout + complete_timeout (2 h at their maxima), so a longer
// wait would only hold a connection.
const (
	DefaultRotateWait = 5 * time.Minute
	MinRotateWait     = time.Second
	MaxRotateWait     = 2 * time.Hour
)

// Validate refuses a wait out of range (a negative one started a rotation
// and waited 5 minutes).
func (r RotateRequest) Validate() error {
	return checkOptional("timeout", r.Timeout, MinRotateWait, MaxRotateWait, DefaultRotateWait)
}

// ResponseWithin lets the answer to `rotate --wait` take as long as the
// wait (LongPoll).
func (r RotateRequest) ResponseWithin() time.Duration { return longPoll(r.Wait, r.WaitFor()) }

// WaitFor is how long the agent waits for the rotation's end (Timeout, or
// DefaultRotateWait).
func (r RotateRequest) WaitFor() time.Duration { return orDefault(r.Timeout, DefaultRotateWait) }

// RotateResult says how far a rotation got.
type RotateResult string

const (
	RotateStarted    RotateResult = "started"    // under way (without --wait)
	RotateComplete   RotateResult = "complete"   // every peer carried data both ways under the new key
	RotateIncomplete RotateResult = "incomplete" // some did not, within rotation.complete_timeout
	// RotateFailed labels a scheduled rotation that did not start, in
	// metrics; the API answers an error instead.
	RotateFailed RotateResult = "failed"
)

// RotateReply says how a rotation went.
type RotateReply struct {
	Epoch uint64 `json:"epoch"`
	// PublicKey is the key the site rotates to.
	PublicKey string       `json:"public_key"`
	Result    RotateResult `json:"result"`
	// CutOver lists the peers that carried data both ways under the new
	// key; Missing the others, with why in Pending.
	CutOver []string          `json:"cut_over"`
	Missing []string          `json:"missing,omitempty"`
	Pending map[string]string `json:"pending,omitempty"`
}

// Renew installs a renewed certificate bundle into the running agent
// (`dcmesh renew`).
func (c *Client) Renew(ctx context.Context, r RenewRequest) (RenewReply, error) {
	return Call(ctx, c, EndpointRenew, r)
}

// RenewRequest carries the files of a bundle `dcmesh ca issue` wrote, as
// read: the CA bundle (every CA to pin, PEM), the site certificate and its
// identity key (PKCS#8 PEM). The agent validates all of it before it changes
// anything; the identity key never appears in a log or an error.
type RenewRequest struct {
	CA       []byte `json:"ca"`
	Cert     []byte `json:"cert"`
	Identity []byte `json:"identity"`
	// DryRun validates only: nothing is written or changed.
	DryRun bool `json:"dry_run"`
	// AllowDroppingPeers installs a CA bundle under which some peers'
	// certificates no longer verify (their sites are dropped); without it
	// such a bundle is refused, naming them.
	AllowDroppingPeers bool `json:"allow_dropping_peers"`
}

// Validate refuses a request that lacks a file before the agent sees it.
func (r RenewRequest) Validate() error {
	for _, f := range []struct {
		name string
		b    []byte
	}{{"ca", r.CA}, {"cert", r.Cert}, {"identity", r.Identity}} {
		if len(f.b) == 0 {
			return fmt.Errorf("%s: empty: pass the bundle directory 'dcmesh ca issue' wrote (dcmesh renew --bundle DIR)", f.name)
		}
	}
	return nil
}

// RenewReply says what the agent installed (or, for a dry run, would).
type RenewReply struct {
	Site           string    `json:"site"`
	Serial         string    `json:"serial"`          // the new certificate's, hex
	PreviousSerial string    `json:"previous_serial"` // the replaced one's
	NotAfter       time.Time `json:"not_after"`
	// IdentityKeyChanged: the bundle brings a new identity key (every
	// `ca issue` makes one); peers adopt it with the next record.
	IdentityKeyChanged bool `json:"identity_key_changed"`
	// CAs are the ids of the CAs now pinned.
	CAs []string `json:"cas"`
	// Narrower lists what the new certificate no longer permits.
	Narrower []string `json:"narrower,omitempty"`
	// Written lists the files replaced; each old file is kept beside it as
	// FILE.prev.
	Written []string `json:"written"`
	DryRun  bool     `json:"dry_run"`
}
