package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	ageenc "filippo.io/age"
	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/notify"
)

// Runner runs one backup of one service, in phases (execute): 1 lock,
// 2 recover what a killed run left, 3 preflight, 4 stop, 5 capture or
// stream, 6 start, 7 commit, 8 prune, 9 report. Destinations are reached
// through the Destination interface, except for two local checks of
// preflight (no two paths name one directory through a symlink or bind
// mount: remote duplicates are config's rule; where a captureFirst capture
// is staged, which only a local directory can hold).
type Runner struct {
	Config *config.Config
	Log    *slog.Logger
	// HookOutput receives the pre/post hooks' output (default os.Stderr).
	HookOutput io.Writer
	// Now returns the current time (default time.Now).
	Now func() time.Time

	seams
}

// run is the state of one Runner.Run call.
type run struct {
	*Runner
	cfg   *config.Config
	log   *slog.Logger
	start time.Time

	errs        *multierror.Error  // failures of the run as a whole
	warnings    []string           // see warn
	key         *hostkey.Key       // signs the archives (preflight loads it)
	recipients  []ageenc.Recipient // encrypt the archive to these (nil: not encrypted)
	dests       []*destination
	archives    *archiveSet // this run's uncommitted archives (stream phase)
	owner       owner
	base        string // NAME-TS.EXT
	units       *unitController
	restartOnce sync.Once
	stats       archive.Stats
	dataSize    int64        // preflight estimate of the data (with header overhead)
	staging     *destination // captureFirst: where the capture goes
	capturePath string       // captureFirst: the capture file while it exists
	captureFile *os.File     // captureFirst: its descriptor, read instead of the name
	// captureFirst, reflink capture (capture.go): tryReflink is set when the
	// staging destination shares the data paths' file system; cloneDir is
	// the reflink copy while it exists; captureMethod is "reflink" or "tar"
	// once the data is captured.
	tryReflink    bool
	cloneDir      string
	captureMethod string
	notifier      *notify.Notifier // backup.notify (notify.go); nil: none

	healthErr error // backup.healthCheck failed after the restart

	manifest *runManifest // backup.drill: the archive's manifest being written (drill_manifest.go)

	memo *verifyMemo // the verification memo, from the prune phase on (memo.go)
}

// Run performs the backup and returns the exit code. It never returns with
// a unit it stopped still stopped, unless starting that unit failed (then
// the state file keeps it for `recover` and the run fails).
func (r *Runner) Run(ctx context.Context) int {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.HookOutput == nil {
		r.HookOutput = os.Stderr
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	r.seams.withDefaults()
	rn := &run{Runner: r, cfg: r.Config, log: r.Log.With(keyService, r.Config.Name), start: time.Now()}

	// 1. lock (phase_lock.go)
	release, code := rn.lock(ctx)
	if release == nil {
		return code
	}
	defer release()
	// Until the report is out: a run killed before it is reported by
	// Recover (killed.go).
	rn.markRunning()
	defer rn.clearRunning()
	// The start ping goes out before anything is stopped (bounded).
	rn.notifier = rn.loadNotifier()
	rn.notifier.Start(ctx)

	rn.executeSafely(ctx)
	// 9. report (phase_report.go)
	return rn.finish(ctx)
}

// executeSafely turns a panic into a run failure. The deferred restart and
// temp cleanup inside execute have already run by the time recover sees it.
func (rn *run) executeSafely(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			rn.log.Error("internal error", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			rn.fatal(fmt.Errorf("internal error: %v", p))
		}
	}()
	rn.execute(ctx)
}

// execute runs phases 2 to 8 of one backup; each phase has its own file.
// A phase that fails records why (fatal, or the destination's state) and
// the run stops there. The units are started again (6) as soon as the data
// paths are no longer read, before the slow commit (7), and, whatever
// happens, by the deferred restartUnits.
func (rn *run) execute(ctx context.Context) {
	// Whatever happens below, no temp file of this run survives it.
	defer rn.abortAll()
	// 2. recover what a killed run left (phase_recover.go), 3. preflight
	// (phase_preflight.go): nothing is stopped yet.
	if !rn.recoverStale(ctx) || !rn.preflight(ctx) || !rn.preBackupHook(ctx) {
		return
	}
	// The capture (captureFirst) never outlives the run, whatever happens.
	defer rn.removeCapture()
	// Registered before the first stop: error paths, cancellation and
	// panics all pass through here.
	defer rn.restartUnits(ctx)
	// 4. stop (phase_stop.go)
	if !rn.stop(ctx) {
		return
	}
	// 5. capture or stream (capture.go, phase_stream.go)
	produce, ok := rn.captureOrStream(ctx)
	if !ok || !rn.openArchives(ctx) {
		return
	}
	rn.startManifest()
	defer rn.dropManifest()
	err := rn.stream(ctx, produce)
	// 6. start (phase_start.go): the data paths are no longer read, so the
	// service comes back before the slow part (copies, fsync,
	// verification, pruning). The capture is no longer needed either.
	rn.restartUnits(ctx)
	rn.removeCapture()
	if err != nil {
		rn.streamFailed(ctx, err)
		return
	}
	// 7. commit (phase_commit.go)
	if !rn.commit(ctx) {
		return
	}
	rn.keepManifest()
	rn.warnChanged()
	if ctx.Err() != nil {
		return
	}
	// 8. prune (phase_prune.go), unless the run already failed (a unit
	// or the application did not come back): the archives are kept, and
	// an operator looking at a down service wants every copy there.
	if rn.errs != nil {
		rn.log.Warn("pruning skipped: the run failed", "error", listErr(rn.errs))
		return
	}
	rn.prune(ctx)
}

// fatal records a failure of the run as a whole.
func (rn *run) fatal(err error) {
	rn.errs = multierror.Append(rn.errs, err)
}

// warn records something that needs attention although the archive was
// committed: the run ends with ExitWarning unless something failed.
func (rn *run) warn(msg string) {
	rn.warnings = append(rn.warnings, msg)
	rn.log.Warn(msg)
}
