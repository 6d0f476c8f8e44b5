package worker

import (
	"context"
	"fmt"
	"time"
)

// preBackupHook runs the pre-backup hook, if any, before anything is
// stopped; a failing hook fails the run.
func (rn *run) preBackupHook(ctx context.Context) bool {
	cfg := rn.cfg
	if cfg.Backup.PreBackup == "" {
		return true
	}
	rn.log.Info("running pre-backup hook")
	if err := runHook(ctx, cfg.Backup.PreBackup, []string{"BACKUP_NAME=" + cfg.Name}, rn.HookOutput); err != nil {
		rn.fatal(fmt.Errorf("pre-backup hook failed (nothing was stopped): %w", err))
		return false
	}
	return true
}

// stop stops the service's active units (units.go records each in the
// state file first). A unit that cannot be stopped fails the run, unless
// allowLiveBackup is set: then the data is backed up live.
func (rn *run) stop(ctx context.Context) bool {
	cfg := rn.cfg
	rn.units = &unitController{
		systemd:      rn.systemd,
		log:          rn.log,
		stateFile:    stateFilePath(cfg.Backup.StateDirectory, cfg.Name),
		stopTimeout:  time.Duration(cfg.Backup.StopTimeoutSec) * time.Second,
		startTimeout: time.Duration(cfg.Backup.StartTimeoutSec) * time.Second,
		poll:         rn.activePoll,
	}
	if err := rn.units.stopAll(ctx, cfg.ServiceName); err != nil {
		if cfg.Backup.AllowLiveBackup && ctx.Err() == nil {
			rn.log.Warn("could not stop a unit; backing up live because allowLiveBackup is set", "error", err)
		} else {
			rn.fatal(fmt.Errorf("%w (no archive written; stopped units are started again)", err))
			return false
		}
	}
	if rn.afterStop != nil {
		rn.afterStop(ctx)
	}
	return true
}
