package worker

import (
	"context"
	"errors"
	"time"
)

// lock makes sure the state directory is safe and takes the service's
// lock, waiting up to the lock timeout. It returns the release function,
// or nil and the exit code when the run cannot go on.
func (rn *run) lock(ctx context.Context) (release func(), code int) {
	cfg := rn.cfg
	if err := ensureStateDir(cfg.Backup.StateDirectory); err != nil {
		rn.log.Error("unsafe or unusable state directory; nothing was stopped", "error", err)
		return nil, ExitFailed
	}
	lock, err := acquireLock(ctx, lockFilePath(cfg.Backup.StateDirectory, cfg.Name), cfg.Name,
		time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
	if err != nil {
		// Neither metrics nor the post hook: they belong to the run holding
		// the lock, which may be using the destinations right now.
		rn.log.Error(err.Error())
		switch {
		case errors.Is(err, ErrLockHeld):
			return nil, ExitLockHeld
		case ctx.Err() != nil:
			return nil, ExitInterrupted
		}
		return nil, ExitFailed
	}
	return lock.Release, ExitOK
}
