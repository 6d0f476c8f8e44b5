package main

import (
	"context"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// recover starts the units a killed run left stopped (the backup unit's
// ExecStopPost); it logs what it did.
func (c *cli) recover(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("recover", pflag.ContinueOnError)
	if done, code := c.parse(fs, "recover --config FILE", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	return worker.Recover(ctx, cfg, c.systemd, c.log)
}
