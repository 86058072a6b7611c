package trust

import (
	"encoding/asn1"
	"errors"
	"fmt"
)

// stateVersion is the only push/pull state version this code reads or
// writes.
const stateVersion = 1

// wireState is the push/pull state on the wire; see EncodeState.
type wireState struct {
	Version int
	Records [][]byte
	CRLs    [][]byte
}

// EncodeState encodes s for memberlist's push/pull exchange
// (LocalState/MergeRemoteState).
//
// The format (DER, encoding/asn1):
//
//	State ::= SEQUENCE {
//	    version  INTEGER,                 -- 1
//	    records  SEQUENCE OF OCTET STRING, -- encoded SignedRecords, at most MaxStateRecords
//	    crls     SEQUENCE OF OCTET STRING  -- DER CRLs, at most MaxStateCRLs
//	}
//
// The state is only a container: its elements are opaque here and each is
// decoded and checked on its own (DecodeRecord, ParseRevocationList), so one
// bad record costs only itself. The whole is not signed; every element is.
//
// It refuses what DecodeState would refuse: more than
// MaxStateRecords records or MaxStateCRLs lists, an empty record or list, a
// record above MaxRecordSize or a list above MaxCRLSize, or a total above
// MaxStateSize. The caller chooses what to drop when the node holds more.
func EncodeState(s State) ([]byte, error) {
	if err := checkStateElements(s.Records, MaxStateRecords, MaxRecordSize, "records"); err != nil {
		return nil, fmt.Errorf("trust: encode state: %w", err)
	}
	if err := checkStateElements(s.CRLs, MaxStateCRLs, MaxCRLSize, "revocation lists"); err != nil {
		return nil, fmt.Errorf("trust: encode state: %w", err)
	}
	w := wireState{Version: stateVersion, Records: s.Records, CRLs: s.CRLs}
	if w.Records == nil {
		w.Records = [][]byte{}
	}
	if w.CRLs == nil {
		w.CRLs = [][]byte{}
	}
	b, err := asn1.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("trust: encode state: %w", err)
	}
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("trust: encode state: %d bytes exceeds %d", len(b), MaxStateSize)
	}
	return b, nil
}

func checkStateElements(els [][]byte, max, maxSize int, what string) error {
	if len(els) > max {
		return fmt.Errorf("%d %s, at most %d", len(els), what, max)
	}
	for i, e := range els {
		if len(e) == 0 || len(e) > maxSize {
			return fmt.Errorf("%s[%d]: %d bytes, want 1 to %d", what, i, len(e), maxSize)
		}
	}
	return nil
}

// DecodeState parses a push/pull state (format: EncodeState). It enforces
// MaxStateSize, strict DER without trailing data, and the element count and
// size limits, counting elements before allocating for them. The returned
// slices point into one private copy of b (b is not retained); their
// contents are not checked.
func DecodeState(b []byte) (State, error) {
	if len(b) > MaxStateSize {
		return State{}, fmt.Errorf("trust: state of %d bytes exceeds %d", len(b), MaxStateSize)
	}
	b = append([]byte(nil), b...)
	var w struct {
		Version int
		Records asn1.RawValue
		CRLs    asn1.RawValue
	}
	if err := unmarshalCanonical(b, &w); err != nil {
		return State{}, fmt.Errorf("trust: state: %w", err)
	}
	if w.Version != stateVersion {
		return State{}, fmt.Errorf("trust: state: unsupported version %d", w.Version)
	}
	var s State
	var err error
	if s.Records, err = octetStrings(w.Records, MaxStateRecords, MaxRecordSize, "records"); err != nil {
		return State{}, fmt.Errorf("trust: state: %w", err)
	}
	if s.CRLs, err = octetStrings(w.CRLs, MaxStateCRLs, MaxCRLSize, "revocation lists"); err != nil {
		return State{}, fmt.Errorf("trust: state: %w", err)
	}
	return s, nil
}

// octetStrings returns the contents of a SEQUENCE OF OCTET STRING with at
// most max elements of 1 to maxSize bytes, as capacity-limited sub-slices of
// the input.
func octetStrings(seq asn1.RawValue, max, maxSize int, what string) ([][]byte, error) {
	var out [][]byte
	err := eachElement(seq, max, what, func(el []byte) error {
		var v asn1.RawValue
		if err := unmarshalExact(el, &v); err != nil {
			return err
		}
		if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
			return errors.New("element is not an OCTET STRING")
		}
		if len(v.Bytes) == 0 || len(v.Bytes) > maxSize {
			return fmt.Errorf("element of %d bytes, want 1 to %d", len(v.Bytes), maxSize)
		}
		out = append(out, v.Bytes[:len(v.Bytes):len(v.Bytes)])
		return nil
	})
	return out, err
}
