package main

import (
	"context"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// prune applies the retention policy by hand (worker.Prune) and prints
// what it kept and removed.
func (c *cli) prune(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("prune", pflag.ContinueOnError)
	dryRun := fs.Bool("dry-run", false, "print what would be deleted, delete nothing")
	if done, code := c.parse(fs, "prune --config FILE [--dry-run]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	res, err := worker.Prune(ctx, cfg, c.log, worker.PruneOptions{DryRun: *dryRun})
	res.WriteText(c.stdout)
	return worker.ExitCode(ctx, err)
}
