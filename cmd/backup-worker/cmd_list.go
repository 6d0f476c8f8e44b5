package main

import (
	"context"
	"fmt"
	"time"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// list prints every destination's archives with the state of their
// checksum and signature (worker.List).
func (c *cli) list(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("list", pflag.ContinueOnError)
	verify := fs.Bool("verify", false, "re-read every archive and compare it with its .sha256 and .sig (shows mismatch)")
	if done, code := c.parse(fs, "list --config FILE [--verify]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	now := time.Now()
	res, err := worker.List(ctx, cfg, c.log, worker.ListOptions{Verify: *verify})
	if res.KeyErr != nil {
		fmt.Fprintf(c.stderr, "backup-worker list: signatures not checked: %v\n", res.KeyErr)
	}
	res.WriteText(c.stdout, now)
	return worker.ExitCode(ctx, err)
}
