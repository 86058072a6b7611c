package records

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/dcmesh/dcmesh/wg"
)

// maxSeqFileSize bounds seq.json: {"seq":N}.
const maxSeqFileSize = 4096

// seqState is the persisted sequence number of this site's own record: it
// must never go backwards, or other sites would take a fresh record for a
// replay.
type seqState struct {
	Seq uint64 `json:"seq"`
}

func LoadSeq(path string) (uint64, error) {
	raw, err := wg.ReadStateFile(path, maxSeqFileSize)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var s seqState
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("state file %s is corrupt (%v); move it away to start over (the next record then uses the clock as its sequence number)", path, err)
	}
	return s.Seq, nil
}

func SaveSeq(path string, seq uint64) error {
	raw, _ := json.Marshal(seqState{Seq: seq})
	return wg.WriteFileAtomic(path, raw, 0o600)
}
