package wg

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// secretKey is the body of every secret key type here (PrivateKey,
// PresharedKey): one place where a key learns never to print itself.
// String, every fmt verb (including %x and %#v) and slog all render
// "(redacted)", and marshalling fails. Each embedding type adds its own
// GoString and Equal.
type secretKey struct {
	_ [0]func() // not comparable with ==: Equal is constant time
	k wgtypes.Key
}

var errMarshalPrivate = errors.New("refusing to marshal a WireGuard secret key")

// IsZero reports whether the key is unset.
func (s secretKey) IsZero() bool { return s.k == wgtypes.Key{} }

func (s secretKey) equal(o secretKey) bool {
	return subtle.ConstantTimeCompare(s.k[:], o.k[:]) == 1
}

func (s secretKey) String() string { return redacted }

// Format makes every fmt verb print "(redacted)".
func (s secretKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue keeps the key out of structured logs.
func (s secretKey) LogValue() slog.Value { return slog.StringValue(redacted) }

func (s secretKey) MarshalText() ([]byte, error) { return nil, errMarshalPrivate }
func (s secretKey) MarshalJSON() ([]byte, error) { return nil, errMarshalPrivate }
