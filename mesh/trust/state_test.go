package trust_test

import (
	"bytes"
	"encoding/asn1"
	"fmt"
	"math/big"
	"reflect"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// sampleState returns a state with n records (two prefixes each) and one CRL.
func sampleState(t testing.TB, ca *trust.CA, n int) trust.State {
	var s trust.State
	for i := range n {
		c, k := trusttest.Issue(t, ca, fmt.Sprintf("site%d", i), fmt.Sprintf("10.%d.0.0/16", i), fmt.Sprintf("fd00:%x::/48", i))
		s.Records = append(s.Records, trusttest.SignedRecord(t, c, k, trusttest.RecordOptions{}).Raw)
	}
	crl, err := ca.Revoke(nil, []*big.Int{big.NewInt(1), big.NewInt(2)}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.CRLs = append(s.CRLs, crl.Raw)
	return s
}

func TestStateRoundTrip(t *testing.T) {
	ca := trusttest.NewCA(t)
	s := sampleState(t, ca, 10)
	b, err := trust.EncodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state with 10 records and 1 CRL: %d bytes", len(b))
	got, err := trust.DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Error("round trip changed the state")
	}
	again, _ := trust.EncodeState(got)
	if !bytes.Equal(again, b) {
		t.Error("re-encoding differs")
	}
	// Elements do not alias the input.
	b[len(b)-1] ^= 0xff
	if !bytes.Equal(got.CRLs[0], s.CRLs[0]) {
		t.Error("decoded state aliases its input")
	}
	for _, empty := range []trust.State{{}, {Records: [][]byte{}, CRLs: nil}} {
		b, err := trust.EncodeState(empty)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := trust.DecodeState(b); err != nil || len(got.Records)+len(got.CRLs) != 0 {
			t.Errorf("empty state: %v %v", got, err)
		}
	}
}

func TestStateLimits(t *testing.T) {
	rec := []byte{0x30, 0x00}
	tooMany := make([][]byte, trust.MaxStateRecords+1)
	for i := range tooMany {
		tooMany[i] = rec
	}
	bad := map[string]trust.State{
		"too many records":   {Records: tooMany},
		"oversized record":   {Records: [][]byte{make([]byte, trust.MaxRecordSize+1)}},
		"empty record":       {Records: [][]byte{{}}},
		"too many CRLs":      {CRLs: tooMany[:trust.MaxStateCRLs+1]},
		"oversized CRL":      {CRLs: [][]byte{make([]byte, trust.MaxCRLSize+1)}},
		"oversized in total": {Records: bytes8MiB()},
	}
	for name, s := range bad {
		if _, err := trust.EncodeState(s); err == nil {
			t.Errorf("EncodeState: %s accepted", name)
		}
		// The decoder refuses the same, however it was encoded.
		raw, err := asn1.Marshal(struct {
			V       int
			R, CRLs [][]byte
		}{1, orEmpty(s.Records), orEmpty(s.CRLs)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.DecodeState(raw); err == nil {
			t.Errorf("DecodeState: %s accepted", name)
		}
	}
	ok := trust.State{Records: [][]byte{rec}}
	good, err := trust.EncodeState(ok)
	if err != nil {
		t.Fatal(err)
	}
	mustFail := map[string][]byte{
		"trailing data": append(bytes.Clone(good), 0),
		"truncated":     good[:len(good)-1],
		"empty":         nil,
		"version 2": mustMarshal(t, struct {
			V    int
			R, C [][]byte
		}{2, [][]byte{}, [][]byte{}}),
		"records not OCTET STRINGs": mustMarshal(t, struct {
			V int
			R []int
			C [][]byte
		}{1, []int{1}, [][]byte{}}),
		"records as UTF8Strings": mustMarshal(t, struct {
			V int
			R []asn1.RawValue
			C [][]byte
		}{1, []asn1.RawValue{{Tag: asn1.TagUTF8String, Bytes: []byte("x")}}, [][]byte{}}),
		"missing CRL list": mustMarshal(t, struct {
			V int
			R [][]byte
		}{1, [][]byte{rec}}),
		"extra element": mustMarshal(t, struct {
			V       int
			R, C, X [][]byte
		}{1, [][]byte{rec}, [][]byte{}, [][]byte{}}),
		"non-minimal length": {0x30, 0x81, 0x07, 0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00},
	}
	for name, b := range mustFail {
		if _, err := trust.DecodeState(b); err == nil {
			t.Errorf("DecodeState: %s accepted", name)
		}
	}
}

func bytes8MiB() [][]byte {
	var rs [][]byte
	for range trust.MaxStateSize/trust.MaxRecordSize + 1 {
		rs = append(rs, make([]byte, trust.MaxRecordSize))
	}
	return rs
}

func orEmpty(b [][]byte) [][]byte {
	if b == nil {
		return [][]byte{}
	}
	return b
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
