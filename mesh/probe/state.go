package probe

import "fmt"

// State is a BFD session state (RFC 5880 §4.1, the Sta field).
type State uint8

// The session states, with their wire values.
const (
	StateAdminDown State = 0
	StateDown      State = 1
	StateInit      State = 2
	StateUp        State = 3
)

var stateNames = [...]string{"admin_down", "down", "init", "up"}

// String returns admin_down, down, init or up.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText makes a State a JSON string.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Diag is a BFD diagnostic code (RFC 5880 §4.1): why a session last changed
// state.
type Diag uint8

// The diagnostic codes of RFC 5880 §4.1.
const (
	DiagNone                    Diag = 0
	DiagDetectExpired           Diag = 1 // control detection time expired
	DiagEchoFailed              Diag = 2
	DiagNeighborDown            Diag = 3 // neighbor signaled session down
	DiagForwardingReset         Diag = 4
	DiagPathDown                Diag = 5
	DiagConcatenatedPathDown    Diag = 6
	DiagAdminDown               Diag = 7 // administratively down
	DiagReverseConcatenatedDown Diag = 8
)

var diagNames = [...]string{
	"none", "detect_expired", "echo_failed", "neighbor_down", "forwarding_reset",
	"path_down", "concatenated_path_down", "admin_down", "reverse_concatenated_path_down",
}

// String returns a snake_case name, or diag(N) for a reserved code.
func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("diag(%d)", uint8(d))
}

// MarshalText makes a Diag a JSON string.
func (d Diag) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
