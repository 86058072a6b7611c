// Package enroll is a site's enrollment: the bundle `dcmesh ca issue` writes
// (its file names are config's, as init copies them into the state
// directory), reading and cross-checking it (Read: shared by the agent's
// start, `dcmesh init` and the tests), the agent's view of it checked
// against the configuration (Load), and `dcmesh init` itself (InitSite).
//
// It does not issue certificates (mesh/ca) nor decide what a record may
// claim (mesh/trust); its errors name configuration fields or, for init,
// the options (*config.OptionError), never the CLI's flags.
package enroll
