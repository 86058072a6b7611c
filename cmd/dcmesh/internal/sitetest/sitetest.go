// Package sitetest holds what the end-to-end tests and benchmarks of
// cmd/dcmesh share beyond their topologies: finding an agent's process and
// reading its CPU and memory from /proc, and small statistics and text
// helpers. It is imported by tests only.
package sitetest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ParsePIDs parses whitespace-separated process ids (the output of
// `ip netns pids NAME`); anything else is skipped.
func ParsePIDs(s string) []int {
	var out []int
	for _, f := range strings.Fields(s) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// FindPID returns the first of pids (every process when pids is nil) whose
// command line satisfies match. Processes that exit meanwhile are skipped.
func FindPID(pids []int, match func(argv []string) bool) (int, error) {
	if pids == nil {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process matches among %d", len(pids))
}

// Memory returns a process's resident set and its peak (VmRSS, VmHWM) in
// kB.
func Memory(pid int) (rss, hwm int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ":")
		f := strings.Fields(v)
		if !ok || len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss, found = n, found+1
		case "VmHWM":
			hwm, found = n, found+1
		}
	}
	if found < 2 {
		return rss, hwm, fmt.Errorf("no VmRSS and VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// CPU returns a process's utime+stime in clock ticks (USER_HZ) and the sum
// of its threads' schedstat run times in ns.
func CPU(pid int) (ticks, ns int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // a thread that just exited
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			v, _ := strconv.ParseInt(fs[0], 10, 64)
			ns += v
		}
	}
	return ut + st, ns, nil
}

// Median returns the median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Tail returns the last n lines of s, without the trailing newlines.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Sum returns the sum of xs.
func Sum(xs []float64) (s float64) {
	for _, x := range xs {
		s += x
	}
	return s
}

// Mean returns the arithmetic mean of xs (0 for none).
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return Sum(xs) / float64(len(xs))
}

// EnvInt returns the positive integer in the environment variable name (a
// benchmark's knob), or def when it is unset or not a positive integer.
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
