package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/notify"
)

// Exit codes of backup-worker.
const (
	// ExitOK: the run succeeded (every destination not skipped holds a
	// verified archive and was pruned), or a subcommand had nothing to do.
	ExitOK = 0
	// ExitFailed: the run failed: no verified archive was written anywhere,
	// a hook or a unit stop failed, or a unit did not come back after the
	// backup (archives that were written are kept).
	ExitFailed = 1
	// ExitUsage: bad command line, or a config file that is missing or
	// invalid (every problem is listed).
	ExitUsage = 2
	// ExitPartial: at least one destination holds a verified archive, but
	// another destination failed (write, verify, commit or prune).
	ExitPartial = 3
	// ExitLockHeld: another run for the same service held the lock for the
	// whole lock timeout.
	ExitLockHeld = 4
	// ExitWarning: the archive was committed, but something needs
	// attention (a file changed while it was read; data empty or much
	// smaller than the last verified archive, so pruning was skipped).
	ExitWarning = 5
	// ExitInterrupted: SIGINT or SIGTERM; units were started again and temp
	// files removed.
	ExitInterrupted = 130
)

// Result strings, passed to the post-backup hook as BACKUP_RESULT.
const (
	resultSuccess     = "success"
	resultPartial     = "partial"
	resultFailed      = "failed"
	resultInterrupted = "interrupted"
	resultWarning     = "warning"
)

// finish logs the summary, writes metrics, runs the post hook, sends the
// notifications (bounded; they never change the result) and returns the
// exit code.
func (rn *run) finish(ctx context.Context) int {
	cfg := rn.cfg
	code, result := rn.outcome(ctx)
	duration := time.Since(rn.start)
	var downtime time.Duration
	if rn.units != nil {
		downtime = rn.units.Downtime()
	}
	var archiveSize, written int64
	var destAttrs []any
	var counts []destinationCount
	var outcomes []notify.Outcome
	for _, d := range rn.dests {
		status := d.state.String()
		if d.err != nil {
			status = "failed: " + d.err.Error()
			if d.state == destInterrupted {
				status = "interrupted"
			}
		}
		if d.state == destCommitted {
			archiveSize = d.size
			written += d.size
			if d.pruned > 0 {
				status = fmt.Sprintf("ok, pruned %d", d.pruned)
			}
			if d.guard != "" {
				status = "ok, not pruned (" + d.guard + ")"
			}
			counts = append(counts, destinationCount{d.dir, d.count, d.guard})
		}
		destAttrs = append(destAttrs, slog.String(d.dir, status))
		outcomes = append(outcomes, notify.Outcome{Destination: d.dir, Status: status})
	}
	allErrs := rn.allErrors()
	attrs := []any{
		"result", result,
		keyArchive, rn.base,
		"bytes_read", rn.stats.BytesRead,
		"bytes_written", written,
		keyBytes, archiveSize,
		keyDuration, duration.Round(time.Millisecond),
		"downtime", downtime.Round(time.Millisecond),
		slog.Group("destinations", destAttrs...),
	}
	if rn.captureMethod != "" {
		attrs = append(attrs, "capture_method", rn.captureMethod)
	}
	if rn.stats.Changed > 0 {
		attrs = append(attrs, "changed_files", rn.stats.Changed)
	}
	if len(rn.warnings) > 0 {
		attrs = append(attrs, "warnings", strings.Join(rn.warnings, "; "))
	}
	if allErrs != nil {
		attrs = append(attrs, "errors", strings.ReplaceAll(allErrs.Error(), "\n", "; "))
	}
	level := slog.LevelInfo
	switch code {
	case ExitOK:
	case ExitWarning:
		level = slog.LevelWarn
	default:
		level = slog.LevelError
	}
	rn.log.Log(context.WithoutCancel(ctx), level, "backup finished", attrs...)
	rn.writeLastRun(code, result, duration, downtime, archiveSize) // lastrun.go

	if cfg.Backup.PrometheusTextfile != "" {
		err := writeMetrics(cfg.Backup.PrometheusTextfile, runMetrics{
			service: cfg.Name, success: code == ExitOK || code == ExitWarning, finished: time.Now(),
			duration: duration, downtime: downtime, archiveSize: archiveSize, archives: counts,
			warnings: len(rn.warnings),
		})
		if err != nil {
			rn.log.Error("cannot write metrics", "path", cfg.Backup.PrometheusTextfile, "error", err)
		}
	}
	if cfg.Backup.PostBackup != "" {
		// Runs even when interrupted (it may unmount a disk or notify);
		// a failure is reported but does not change the result, which the
		// hook has already been told.
		err := runHook(context.WithoutCancel(ctx), cfg.Backup.PostBackup,
			[]string{"BACKUP_NAME=" + cfg.Name, "BACKUP_RESULT=" + result}, rn.HookOutput)
		if err != nil {
			rn.log.Error("post-backup hook failed", "error", err)
		}
	}
	// Last: the units run again, and the result is logged and final.
	rn.notifyFinish(ctx, rn.summary(result, archiveSize, duration, downtime, outcomes, allErrs))
	return code
}

// outcome maps the run's state to an exit code and result string.
func (rn *run) outcome(ctx context.Context) (int, string) {
	if ctx.Err() != nil {
		return ExitInterrupted, resultInterrupted
	}
	if rn.errs != nil {
		return ExitFailed, resultFailed
	}
	ok, failed := 0, 0
	for _, d := range rn.dests {
		switch {
		case d.state == destCommitted:
			ok++
		case d.state != destSkipped:
			failed++
		}
	}
	switch {
	case ok == 0:
		return ExitFailed, resultFailed
	case failed > 0:
		return ExitPartial, resultPartial
	case len(rn.warnings) > 0:
		return ExitWarning, resultWarning
	}
	return ExitOK, resultSuccess
}

// allErrors lists the run's failures and every destination's failure.
func (rn *run) allErrors() error {
	var errs *multierror.Error
	if rn.errs != nil {
		errs = multierror.Append(errs, rn.errs.Errors...)
	}
	for _, d := range rn.dests {
		if d.err != nil && d.state != destInterrupted {
			errs = multierror.Append(errs, fmt.Errorf("destination %s: %w", d.dir, d.err))
		}
	}
	return listErr(errs)
}
