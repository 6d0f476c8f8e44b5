package main

import (
	"context"
	"fmt"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// checkConfig validates a config file and, unless --no-credentials, the
// notification files it names; prints "ok" or every problem.
func (c *cli) checkConfig(ctx context.Context, args []string) int {
	fs := pflag.NewFlagSet("check-config", pflag.ContinueOnError)
	var path string
	var noCredentials bool
	fs.StringVarP(&path, "config", "c", "", "the config `FILE` (or give it as the argument)")
	fs.BoolVar(&noCredentials, "no-credentials", false, "do not read the notification files (the Nix build's sandbox cannot see secrets)")
	if done, code := c.parse(fs, "check-config FILE", args, nil); done {
		return code
	}
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path != "" && fs.NArg() == 0:
	default:
		fmt.Fprintln(c.stderr, "backup-worker check-config: exactly one config FILE is required")
		return worker.ExitUsage
	}
	cfg, ok := c.loadConfig(path)
	if !ok {
		return worker.ExitUsage
	}
	if !noCredentials {
		if err := worker.CheckNotifyFiles(path, cfg); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker: %v\n", err)
			return worker.ExitUsage
		}
	}
	fmt.Fprintln(c.stdout, "ok")
	return worker.ExitOK
}
