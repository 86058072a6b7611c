package main

import (
	"os"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		text, name string
		full       bool
	}{
		{"Apache License\nVersion 2.0, January 2004\nTERMS AND CONDITIONS FOR USE", "Apache-2.0", false},
		{"Mozilla Public License, version 2.0\n1. Definitions", "MPL-2.0", false},
		{"Copyright (c) 2016 X\n\nPermission is hereby granted, free of charge, to any person", "Expat", true},
		{"Permission is hereby granted, free of\ncharge ...\nLicensed under the Apache License, Version 2.0 (the", "Expat and Apache-2.0", true},
		{"Redistribution and use in source and binary forms ... Neither the name of Google", "BSD-3-clause", true},
		{"Redistribution and use in source and binary forms, with or without modification", "BSD-2-clause", true},
		{"All rights reserved. Do not copy.", "", false},
	} {
		if name, full := classify(c.text); name != c.name || full != c.full {
			t.Errorf("classify(%.40q) = %q, %v; want %q, %v", c.text, name, full, c.name, c.full)
		}
	}
}

func TestCopyrightLines(t *testing.T) {
	text := "Copyright (c) 2016 Caleb Spare\n> Copyright © 2011 Russ Ross\n" +
		"each Contributor grants a\ncopyright license to reproduce\nCopyright 2009 The Go Authors.\nCopyright 2009 The Go Authors.\n"
	got := strings.Join(copyrightLines(text), "|")
	if want := "(c) 2016 Caleb Spare|© 2011 Russ Ross|2009 The Go Authors."; got != want {
		t.Errorf("copyrightLines = %q, want %q", got, want)
	}
}

func TestIndent(t *testing.T) {
	if got, want := indent("a\n\nb  \n\n"), " a\n .\n b\n"; got != want {
		t.Errorf("indent = %q, want %q", got, want)
	}
}

// On a real binary (this test's own: the standard library only) the file
// has the header, dcmesh's paragraph and the Go standard library's.
func TestRunOnABinary(t *testing.T) {
	var b strings.Builder
	if err := run(os.Args[0], &b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
		"Files: *\nCopyright: The dcmesh authors\nLicense: Apache-2.0\n",
		"Files: go/*\nCopyright: 2009 The Go Authors.\nLicense: BSD-3-clause\n Copyright 2009 The Go Authors.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("copyright lacks %q:\n%.600s", want, out)
		}
	}
	for i, para := range strings.Split(out, "\n\n") {
		for _, l := range strings.Split(para, "\n") {
			if l != "" && !strings.HasPrefix(l, " ") && !strings.Contains(l, ": ") {
				t.Errorf("paragraph %d: line %q is neither a field nor a continuation", i, l)
			}
		}
	}
}
