package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
)

// Recover starts the units listed in the state file of a run that was
// killed before it could start them itself, through sd, and returns the
// exit code. It is meant for the backup unit's ExecStopPost, so "nothing
// to do" is the common, successful case.
func Recover(ctx context.Context, cfg *config.Config, sd Systemd, log *slog.Logger) int {
	log = log.With(keyService, cfg.Name)
	path := stateFilePath(cfg.Backup.StateDirectory, cfg.Name)
	_, stErr := os.Lstat(path)
	if errors.Is(stErr, os.ErrNotExist) && !hasRunningMarker(cfg) {
		log.Info("nothing to recover")
		return ExitOK
	}
	// Waiting for the lock keeps a manual `recover` from starting units in
	// the middle of a running backup. A killed run holds no lock: flock
	// dies with its process.
	lock, err := acquireLock(ctx, lockFilePath(cfg.Backup.StateDirectory, cfg.Name), cfg.Name,
		time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
	if err != nil {
		log.Error("cannot recover", "error", err)
		return exitCodeFor(ctx, err)
	}
	defer lock.Release()
	// A run killed before its report (killed.go): told, after its units
	// are started below (notifications never delay a restart).
	defer reportKilled(ctx, cfg, log)
	units, err := readStoppedState(path, cfg.ServiceName)
	if err != nil {
		log.Error("cannot read state file", "error", err)
		return ExitFailed
	}
	if units == nil {
		log.Info("nothing to recover")
		return ExitOK
	}
	log.Warn("starting units left stopped by an interrupted backup", "units", strings.Join(units, ","))
	timeout := time.Duration(cfg.Backup.StartTimeoutSec) * time.Second
	if err := startUnits(context.WithoutCancel(ctx), sd, log, units, timeout, 0, path); err != nil {
		log.Error("recover failed", "error", err)
		return ExitFailed
	}
	log.Info("recovered", "units", strings.Join(units, ","))
	return ExitOK
}
