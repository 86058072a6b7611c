// Command dcmesh keeps every backbone route between datacenter sites inside
// WireGuard. See `dcmesh --help` and README.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "dcmesh:", err)
		os.Exit(1)
	}
}
