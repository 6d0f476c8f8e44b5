package main

import (
	"context"
	"fmt"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// run backs the service up (worker.Runner: the phases in
// internal/worker/run.go), or with --dry-run prints what it would do.
func (c *cli) run(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "print what a run would stop, write and prune; change nothing (dryrun.go)")
	if done, code := c.parse(fs, "run --config FILE [--dry-run]", args, &common); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "backup-worker run: unexpected arguments %q\n", fs.Args())
		return worker.ExitUsage
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	if *dry {
		return worker.DryRun(ctx, cfg, c.systemd, c.stdout, c.log)
	}
	r := &worker.Runner{Config: cfg, Log: c.log, HookOutput: c.stderr}
	return r.Run(ctx)
}
