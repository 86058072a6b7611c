package main

import (
	"fmt"

	"github.com/dcmesh/dcmesh/wg"
	"github.com/urfave/cli/v2"
)

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "create and inspect WireGuard private keys",
		Subcommands: []*cli.Command{
			{
				Name:  "generate",
				Usage: "write a new WireGuard private key to a file and print its public key",
				Description: `The key is written in the format of 'wg genkey' (one base64 line), mode
0600, atomically (a crash leaves no partial file). An existing file is never
replaced unless --force is given. The private key is never printed: give the
public key that is printed to the peers.

With --out - the private key is written to standard output instead, and
nothing else (as 'wg genkey'), e.g. for a secret store:
  dcmesh key generate --out - | dcmesh key public --in -`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "private key `FILE` to create (- for standard output)", Required: true},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing key file (the old key is lost)"},
				},
				Action: func(c *cli.Context) error {
					k, err := wg.GeneratePrivateKey()
					if err != nil {
						return err
					}
					if c.String("out") == "-" {
						return wg.WritePrivateKey(c.App.Writer, k)
					}
					if err := wg.WritePrivateKeyFile(c.String("out"), k, c.Bool("force")); err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, k.Public())
					return err
				},
			},
			{
				Name:  "public",
				Usage: "print the public key of a private key file",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "in", Aliases: []string{"i"}, Usage: "private key `FILE` (- for standard input)", Required: true},
				},
				Action: func(c *cli.Context) error {
					read := func() (wg.PrivateKey, error) { return wg.ReadPrivateKeyFile(c.String("in")) }
					if c.String("in") == "-" {
						read = func() (wg.PrivateKey, error) { return wg.ReadPrivateKey(c.App.Reader) }
					}
					k, err := read()
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, k.Public())
					return err
				},
			},
		},
	}
}
