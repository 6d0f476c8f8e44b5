// Command backup-worker backs up one service described by a JSON config:
// stop its units, archive its data paths to every destination, prune, start
// the units again. See `backup-worker --help` for commands and exit codes
// (documented in package worker).
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
	code := worker.Main(ctx, version, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
