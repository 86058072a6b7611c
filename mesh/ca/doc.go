// Package ca is the operator's certificate authority directory, on the
// operator's machine: Init creates it (CA key and certificate, the cluster's
// gossip key, an empty inventory), Issue certifies a site and writes its
// enrollment bundle, refusing addresses another live certificate holds, and
// Revoke writes the revocation list that agents spread.
//
// The agent never runs it: only cmd/dcmesh imports it (and, in tests, its
// helper catest). Its options are
// typed values (the CLI parses flags), and its errors name the options'
// fields (*config.OptionError), never the CLI's flags.
package ca
