package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/urfave/cli/v2"
)

func newApp() *cli.App {
	app := &cli.App{
		Name:  "dcmesh",
		Usage: "encrypt every backbone route between datacenter sites with WireGuard",
		Description: `dcmesh runs one agent per site. The agent programs a WireGuard interface
(the kernel module, or an embedded wireguard-go device where the kernel has
none) with one peer per remote site, and routes every remote site prefix into
it. Each remote prefix also gets an "unreachable" route with a worse metric,
so if the tunnel goes away traffic is refused rather than sent in cleartext.

Bootstrap (see examples/bootstrap.md):
  dcmesh ca init  --dir CA --cluster prod                       # operator, once
  dcmesh ca issue --dir CA --site fra1 --prefix 10.1.0.0/16 --overlay 10.255.0.1 --out fra1
  dcmesh init --bundle fra1 --state-dir /var/lib/dcmesh --endpoint 192.0.2.10:51820 --join 192.0.2.20:7946
  dcmesh agent --config /var/lib/dcmesh/dcmesh.yaml

Static peers only (plain WireGuard routers): see examples/dcmesh.yaml.`,
		Version:              version(),
		EnableBashCompletion: true,
		// Exit codes are main's business: the framework would os.Exit from
		// inside Run.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		Commands: []*cli.Command{
			caCommand(),
			initCommand(),
			agentCommand(),
			configCommand(),
			statusCommand(),
			healthCommand(),
			graphCommand(),
			rotateCommand(),
			drainCommand(),
			undrainCommand(),
			leaveCommand(),
			revokeCommand(),
			renewCommand(),
			gossipKeyCommand(),
			downCommand(),
			keyCommand(),
			demoCommand(),
			completionCommand(),
			versionCommand(),
			manCommand(),
		},
	}
	applyConventions(app)
	return app
}

var configFlag = &cli.StringFlag{
	Name:    "config",
	Aliases: []string{"c"},
	Usage:   "agent configuration `FILE` (default " + config.DefaultConfigPath + ", else the one dcmesh init writes in " + string(config.DefaultStateDir) + ")",
	EnvVars: []string{"DCMESH_CONFIG"},
}

// configPath returns --config, or the default location that exists.
func configPath(c *cli.Context) string {
	if p := c.String("config"); p != "" {
		return p
	}
	return config.Find()
}

var logFlags = []cli.Flag{
	&cli.StringFlag{Name: "log-format", Usage: "log as `text` or json", Value: "text", EnvVars: []string{"DCMESH_LOG_FORMAT"}},
	&cli.StringFlag{Name: "log-level", Usage: "log `LEVEL`: debug, info, warn or error", Value: "info", EnvVars: []string{"DCMESH_LOG_LEVEL"}},
}

// newLogger builds the slog logger the flags ask for.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.String("log-format")) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", c.String("log-format"))
}

var stderr io.Writer = os.Stderr
