package main

import (
	"context"
	"fmt"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// drill restores the newest archive of each destination (or one) into a
// private scratch directory and compares it with the manifest the backup
// wrote (worker.Drill).
func (c *cli) drill(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("drill", pflag.ContinueOnError)
	dest := fs.String("destination", "", "drill only this `DEST`ination of the service (as `list` shows it)")
	if done, code := c.parse(fs, "drill --config FILE [--destination DEST]", args, &common); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "backup-worker drill: unexpected arguments: %v\n", fs.Args())
		return worker.ExitUsage
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	if err := worker.CheckDrill(cfg, *dest); err != nil {
		fmt.Fprintf(c.stderr, "backup-worker drill: %v\n", err)
		return worker.ExitUsage
	}
	d := &worker.Drill{Config: cfg, Log: c.log, Destination: *dest,
		Report: func(r worker.DrillDest) { r.WriteText(c.stdout) }}
	return d.Run(ctx)
}
