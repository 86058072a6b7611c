// Package config is the agent's configuration: the YAML file's format, its
// validation (Load, Parse: every problem reported at once, each a FieldError
// naming the field and the fix), the defaults with their reasons, and the
// state directory's layout (StateDir: every file dcmesh keeps there, named
// once).
//
// It does not read the files the configuration names (keys, the enrollment
// bundle: mesh/enroll and wg do), and does not decide what a reload may
// change (the agent does).
package config
