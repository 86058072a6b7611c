// Command gencopyright writes the Debian copyright file (DEP-5,
// https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/) for a
// dcmesh binary: dcmesh's own license, then one paragraph for the Go
// standard library and each Go module linked into the binary, read from the
// binary's build information, with each module's own license and notice
// text. A license it cannot name stops the build, so that a new dependency's
// license is looked at by a person before it ships.
//
//	go run ./packaging/gencopyright BINARY > copyright
//
// It is a build step of packaging/build-deb, not part of dcmesh.
package main

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
)

const header = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dcmesh
Source: https://github.com/dcmesh/dcmesh
Comment: /usr/bin/dcmesh is statically linked with the Go standard library and
 the Go modules below (the list is read from the binary's build information).
 Their paragraphs name each module as "go mod vendor" would lay it out.

Files: *
Copyright: The dcmesh authors
License: Apache-2.0
`

const apacheRef = ` Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
`

const mplRef = ` This Source Code Form is subject to the terms of the Mozilla Public License,
 v. 2.0.
 .
 On Debian systems, the full text of the Mozilla Public License 2.0 is in
 /usr/share/common-licenses/MPL-2.0.
`

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gencopyright BINARY")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gencopyright:", err)
		os.Exit(1)
	}
}

// module is one linked module and the directory holding its source.
type module struct {
	Path, Version, Dir string
}

func run(binary string, w io.Writer) error {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("read the build information of %s: %w", binary, err)
	}
	mods, err := moduleDirs(bi)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(header)
	b.WriteString(apacheRef)
	//lint:ignore SA1019 only the fallback for when the go command cannot say
	goroot := runtime.GOROOT()
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	std := module{Path: "go", Version: bi.GoVersion, Dir: goroot}
	for _, m := range append([]module{std}, mods...) {
		p, err := paragraph(m)
		if err != nil {
			return err
		}
		b.WriteString("\n" + p)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// moduleDirs finds the source of every dependency in the module cache
// (downloading it if needed) with `go mod download -json`.
func moduleDirs(bi *buildinfo.BuildInfo) ([]module, error) {
	var args []string
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		args = append(args, d.Path+"@"+d.Version)
	}
	if len(args) == 0 {
		return nil, nil
	}
	cmd := exec.Command("go", append([]string{"mod", "download", "-json"}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go mod download: %w", err)
	}
	var mods []module
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m module
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go mod download -json: %w", err)
		}
		if m.Dir == "" {
			return nil, fmt.Errorf("go mod download found no source for %s@%s", m.Path, m.Version)
		}
		mods = append(mods, m)
	}
	return mods, nil
}

var licenseFile = regexp.MustCompile(`(?i)^(LICEN[CS]E|COPYING)(\.md|\.txt)?$`)

// paragraph is the DEP-5 Files paragraph of one module.
func paragraph(m module) (string, error) {
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		return "", err
	}
	var text, notice string
	for _, e := range entries {
		raw, rerr := os.ReadFile(filepath.Join(m.Dir, e.Name()))
		switch {
		case e.IsDir() || rerr != nil:
		case licenseFile.MatchString(e.Name()) && text == "":
			text = string(raw)
		case strings.EqualFold(e.Name(), "NOTICE"):
			notice = string(raw)
		}
	}
	if text == "" {
		return "", fmt.Errorf("%s@%s: no LICENSE or COPYING file in %s", m.Path, m.Version, m.Dir)
	}
	name, full := classify(text)
	if name == "" {
		return "", fmt.Errorf("%s@%s: cannot tell the license of %s/LICENSE; add it to classify", m.Path, m.Version, m.Dir)
	}
	var b strings.Builder
	files := "vendor/" + m.Path + "/*"
	if m.Path == "go" {
		files = "go/*"
	}
	fmt.Fprintf(&b, "Files: %s\n", files)
	holders := copyrightLines(text + "\n" + notice)
	if len(holders) == 0 {
		holders = []string{"the authors of " + m.Path}
	}
	fmt.Fprintf(&b, "Copyright: %s\n", strings.Join(holders, "\n "))
	fmt.Fprintf(&b, "License: %s\n", name)
	switch {
	case full:
		b.WriteString(indent(text))
	case name == "Apache-2.0":
		b.WriteString(apacheRef)
	case name == "MPL-2.0":
		b.WriteString(mplRef)
	}
	comment := m.Path + " " + m.Version
	if m.Path == "go" {
		comment = "The Go standard library and runtime, " + m.Version
	}
	if notice != "" {
		comment += "\n\nIts NOTICE file:\n\n" + notice
	}
	b.WriteString("Comment: " + indent(comment)[1:])
	return b.String(), nil
}

// classify names a license text in DEP-5's terms. full says the text must
// be copied; Apache-2.0 and MPL-2.0 refer to /usr/share/common-licenses.
func classify(text string) (name string, full bool) {
	t := strings.Join(strings.Fields(text), " ")
	has := func(s ...string) bool {
		for _, x := range s {
			if !strings.Contains(t, x) {
				return false
			}
		}
		return true
	}
	switch {
	case has("Permission is hereby granted, free of charge", "Licensed under the Apache License, Version 2.0"):
		return "Expat and Apache-2.0", true
	case has("Apache License", "Version 2.0", "TERMS AND CONDITIONS"):
		return "Apache-2.0", false
	case has("Mozilla Public License", "2.0"):
		return "MPL-2.0", false
	case has("Permission is hereby granted, free of charge"):
		return "Expat", true
	case has("Redistribution and use in source and binary forms") && (has("Neither the name") || has("names of its contributors")):
		return "BSD-3-clause", true
	case has("Redistribution and use in source and binary forms"):
		return "BSD-2-clause", true
	}
	return "", false
}

// copyrightLine is a line that starts with "Copyright" (capital C, as a
// notice does; license texts say "copyright" in running text) followed by
// (c), ©, a year or a name.
var copyrightLine = regexp.MustCompile(`(?m)^[\s>#]*(Copyright\s+(?:\([cC]\)|©|\d|[A-Z]).*)$`)

// copyrightLines are the "Copyright …" lines of a license or notice text,
// each once, in order.
func copyrightLines(text string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range copyrightLine.FindAllStringSubmatch(text, -1) {
		l := strings.TrimSpace(strings.TrimPrefix(m[1], "Copyright "))
		if seen[l] {
			continue
		}
		seen[l] = true
		out = append(out, l)
	}
	return out
}

// indent formats text as a DEP-5 continuation: every line starts with a
// space and an empty line is " .".
func indent(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n \t"), "\n") {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			l = "."
		}
		b.WriteString(" " + l + "\n")
	}
	return b.String()
}
