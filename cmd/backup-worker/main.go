// Command backup-worker backs up one service described by a JSON config:
// stop its units, archive its data paths to every destination, prune, start
// the units again. See `backup-worker --help` for commands and exit codes.
// The commands live here, one file each (cmd_*.go: flags, help, output),
// dispatched by cli.go, which holds the one flag parser; the work is done
// by internal/worker, whose operations return results these files print.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/backupgen/backupgen/internal/worker"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = ""

func main() {
	worker.ApplyMemoryLimit()
	// Cancellation (not death) on SIGINT/SIGTERM: the worker must start the
	// units it stopped before it exits.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
