package wg

import (
	"errors"
	"io"
	"strings"
)

// WritePrivateKey writes k to w in the format of `wg genkey` (one base64
// line), for `dcmesh key generate --out -`: a pipe to a secret store or to
// `wg pubkey`, never a log. Files go through WritePrivateKeyFile.
func WritePrivateKey(w io.Writer, k PrivateKey) error {
	if k.IsZero() {
		return errors.New("write key: refusing to write an empty key")
	}
	data := []byte(k.encode() + "\n")
	defer clear(data)
	_, err := w.Write(data)
	return err
}

// ReadPrivateKey reads one key as WritePrivateKey writes it, from a pipe
// (`dcmesh key public --in -`). Errors never contain what was read.
func ReadPrivateKey(r io.Reader) (PrivateKey, error) {
	buf := make([]byte, maxKeyFileSize+1)
	defer clear(buf)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return PrivateKey{}, err
	}
	if n > maxKeyFileSize {
		return PrivateKey{}, errors.New("standard input: more than one key line: " + ErrInvalidKey.Error())
	}
	k, err := parsePrivateKey(strings.TrimSpace(string(buf[:n])))
	if err != nil || k.IsZero() {
		return PrivateKey{}, errors.New("standard input: " + ErrInvalidKey.Error())
	}
	return k, nil
}
