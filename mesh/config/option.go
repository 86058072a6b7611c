package config

import "fmt"

// OptionError is a bad option a program passed to one of dcmesh's
// operations (mesh/ca, mesh/enroll, the agent's Options), as opposed to a
// field of the configuration file (FieldError). Option is the Go field of the
// options, e.g. "Prefixes"; the CLI names the flag instead, so that no flag
// name is written outside cmd/dcmesh.
type OptionError struct {
	Option string
	// Err says what is wrong and how to fix it; its text follows the
	// option's name (it starts with the value, or ": ").
	Err error
	// See is another option that fixes the problem, if any.
	See string
}

// Optionf returns an OptionError for option; the text follows its name.
func Optionf(option, format string, args ...any) *OptionError {
	return &OptionError{Option: option, Err: fmt.Errorf(format, args...)}
}

func (e *OptionError) Error() string { return e.Text(e.Option, e.See) }

func (e *OptionError) Unwrap() error { return e.Err }

// Text renders the error naming the option name and the other option see
// (the CLI passes the flags).
func (e *OptionError) Text(name, see string) string {
	s := name + e.Err.Error()
	if see != "" {
		s += " (" + see + ")"
	}
	return s
}
