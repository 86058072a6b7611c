package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Command blocks in README.md and examples/*.md are pasted into a shell: one
// command per line, no "a | b" for alternatives (it runs both, as a
// pipeline), no "[--flag]" for options (a glob), and no "sudo go" (Debian's
// sudo resets PATH to secure_path, which lacks /usr/local/go/bin).
func TestDocCommandBlocksPasteAsWritten(t *testing.T) {
	docs, _ := filepath.Glob("../../examples/*.md")
	docs = append(docs, "../../README.md")
	alternative := regexp.MustCompile(`\|\s*dcmesh\b`)
	optional := regexp.MustCompile(`^\s*(sudo\s+)?dcmesh\b.*\s\[-`)
	sudoGo := regexp.MustCompile(`(^|[;&|]\s*)sudo\s+go\b`)
	blocks := 0
	for _, doc := range docs {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		in := false
		for i, line := range strings.Split(string(raw), "\n") {
			switch {
			case strings.HasPrefix(line, "```sh"):
				in = true
				blocks++
				continue
			case strings.HasPrefix(line, "```"):
				in = false
				continue
			case !in:
				continue
			}
			code, _, _ := strings.Cut(line, " #") // the comment says what it likes
			at := fmt.Sprintf("%s:%d", filepath.Base(doc), i+1)
			if alternative.MatchString(code) {
				t.Errorf("%s pipes into dcmesh (alternatives go on lines of their own): %s", at, line)
			}
			if optional.MatchString(code) {
				t.Errorf("%s writes an option as [--flag], which the shell globs: %s", at, line)
			}
			if sudoGo.MatchString(code) {
				t.Errorf("%s runs sudo go, which sudo's secure_path does not find: %s", at, line)
			}
		}
	}
	if blocks < 5 {
		t.Fatalf("found only %d sh blocks", blocks)
	}
}
