package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// status prints the last run, the next run and the archives per
// destination, for people or (--json) for scripts.
func (c *cli) status(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as JSON (for scripts)")
	if done, code := c.parse(fs, "status --config FILE [--json]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	st := worker.ReadStatus(ctx, cfg, c.systemd, c.log, time.Now())
	if *asJSON {
		data, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", data)
	} else {
		st.WriteText(c.stdout, time.Now())
	}
	return st.ExitCode()
}
