package main

import (
	"encoding/json"
	"io"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/urfave/cli/v2"
)

// Every --json shape (docs/CLI.md) carries "schema": jsonSchema, the same
// number as status and health (control.StatusSchema); a change that breaks
// a reader bumps it.
const jsonSchema = control.StatusSchema

// jsonFlag is --json of the commands whose result a script needs. With it,
// stdout holds exactly one JSON document; errors still go to stderr with a
// non-zero exit, and no JSON.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print the result as JSON (docs/CLI.md)"}
}

// printResult writes v as indented JSON with --json, else text.
func printResult(c *cli.Context, v any, text func(w io.Writer) error) error {
	if !c.Bool("json") {
		return text(c.App.Writer)
	}
	return writeJSON(c.App.Writer, v)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// orEmpty makes a nil list print as [], not null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// rotateJSON is `dcmesh rotate --json`.
type rotateJSON struct {
	Schema    int                  `json:"schema"`
	Epoch     uint64               `json:"epoch"`
	PublicKey string               `json:"public_key"`
	Result    control.RotateResult `json:"result"`
	CutOver   []string             `json:"cut_over"`
	Missing   []string             `json:"missing"`
	Pending   map[string]string    `json:"pending"`
}

// drainJSON is `dcmesh drain --json` and `dcmesh undrain --json`.
type drainJSON struct {
	Schema  int                 `json:"schema"`
	Result  control.DrainResult `json:"result"`
	Drained bool                `json:"drained"`
	Since   *time.Time          `json:"since"`
	Changed bool                `json:"changed"`
	Busy    []control.DrainPeer `json:"busy"`
	// LastInService and Siblings: control.DrainReply's.
	LastInService bool              `json:"last_in_service"`
	Siblings      []control.Sibling `json:"siblings"`
}

// issueJSON is `dcmesh ca issue --json`.
type issueJSON struct {
	Schema       int       `json:"schema"`
	Site         string    `json:"site"`
	Gateway      uint8     `json:"gateway"`
	Serial       string    `json:"serial"` // hex, as openssl prints it
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	Prefixes     []string  `json:"prefixes"`
	Overlay      string    `json:"overlay"`
	Underlay     []string  `json:"underlay"`
	AllowDefault bool      `json:"allow_default"`
	Bundle       string    `json:"bundle"`
}

// caRevokeJSON is `dcmesh ca revoke --json`.
type caRevokeJSON struct {
	Schema  int      `json:"schema"`
	Site    string   `json:"site"`
	Gateway *uint8   `json:"gateway,omitempty"` // with --gateway only
	Number  string   `json:"number"`
	Serials []string `json:"serials"` // hex: every serial the list revokes
	Out     string   `json:"out"`
}

// revokeJSON is `dcmesh revoke --json`.
type revokeJSON struct {
	Schema  int    `json:"schema"`
	Number  string `json:"number"`
	Revoked int    `json:"revoked"`
}

// initJSON is `dcmesh init --json`.
type initJSON struct {
	Schema    int      `json:"schema"`
	Site      string   `json:"site"`
	PublicKey string   `json:"public_key"`
	Config    string   `json:"config"`
	StateDir  string   `json:"state_dir"`
	Endpoints []string `json:"endpoints"` // the preferred first
	Next      string   `json:"next"`
}

// leaveJSON is `dcmesh leave --json`.
type leaveJSON struct {
	Schema int    `json:"schema"`
	Result string `json:"result"` // "left"
	Next   string `json:"next"`
}

// downJSON is `dcmesh down --json`.
type downJSON struct {
	Schema int `json:"schema"`
	// Result: "stopping" (the agent was asked), "not_running" (nothing to
	// do), "purged" (--purge without an agent: done here).
	Result        string `json:"result"`
	Purge         bool   `json:"purge"`
	Interface     string `json:"interface,omitempty"`
	RoutesRemoved int    `json:"routes_removed"`
}

// caListJSON is `ca list --json`: every certificate the CA issued.
type caListJSON struct {
	Schema       int         `json:"schema"`
	Certificates []ca.Listed `json:"certificates"`
}

// renewJSON is `renew --json`: the agent's answer.
type renewJSON struct {
	Schema int `json:"schema"`
	control.RenewReply
}
