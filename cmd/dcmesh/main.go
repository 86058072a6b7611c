// Command dcmesh keeps every backbone route between datacenter sites inside
// WireGuard. See `dcmesh --help` and README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	err := newApp().Run(os.Args)
	if err == nil {
		return
	}
	code := 1
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode() // health: 1 degraded, 2 critical
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "dcmesh:", msg)
	}
	os.Exit(code)
}
