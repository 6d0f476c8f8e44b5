package worker

import (
	"context"
	"errors"
)

// ExitCodesHelp ends every command's --help.
const ExitCodesHelp = `Exit codes:
  0    success
  1    failed
  2    usage error or invalid config
  3    partial: some destinations failed, at least one succeeded
  4    lock held: another run for this service is in progress
  130  interrupted (SIGINT/SIGTERM); units were started again
`

// ExitCode maps the error of a maintenance operation (List, Verify,
// Prune, Restore, Recover) to backup-worker's exit code: nil is ExitOK.
func ExitCode(ctx context.Context, err error) int { return exitCodeFor(ctx, err) }

// exitCodeFor is ExitCode.
func exitCodeFor(ctx context.Context, err error) int {
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() != nil:
		return ExitInterrupted
	case errors.Is(err, ErrLockHeld):
		return ExitLockHeld
	}
	return ExitFailed
}
