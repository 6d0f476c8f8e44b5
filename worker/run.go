package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/backupgen/backupgen/archive"
	"github.com/backupgen/backupgen/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/retention"
	"github.com/hashicorp/go-multierror"
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

// archiveWriter is archive.Write's signature, a seam for tests.
type archiveWriter func(ctx context.Context, w io.Writer, dataPaths []string, opts archive.Options) (archive.Stats, error)

// archiveConverter is archive.Convert's signature, a seam for tests.
type archiveConverter func(ctx context.Context, w io.Writer, r io.Reader, opts archive.Options) (archive.Stats, error)

// Runner runs one backup of one service.
type Runner struct {
	Config  *config.Config
	Systemd Systemd
	Log     *slog.Logger
	// HookOutput receives the pre/post hooks' output (default os.Stderr).
	HookOutput io.Writer
	// Now returns the current time (default time.Now).
	Now func() time.Time

	seams
}

// seams are the Runner's test seams, the only ones in the package (no
// package variable, so tests can run in parallel). Zero values mean the
// real thing.
type seams struct {
	writeArchive     archiveWriter
	captureData      archiveWriter
	convertCapture   archiveConverter
	cloneData        func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error)
	writeTree        func(ctx context.Context, w io.Writer, roots []archive.Root, opts archive.Options) (archive.Stats, error)
	afterStop        func(ctx context.Context)
	progressTTY      func() bool   // default stderrIsTerminal
	progressInterval time.Duration // 0: 1 s on a terminal, 30 s logged
	progressOut      io.Writer     // terminal progress (default os.Stderr)
	activePoll       time.Duration // how often a started unit is checked for "active" (default 200 ms)
	fstabPath        string        // default /etc/fstab
	mountinfoPath    string        // default /proc/self/mountinfo
}

// withDefaults fills the unset seams with the real implementations.
func (s *seams) withDefaults() {
	if s.writeArchive == nil {
		s.writeArchive = archive.Write
	}
	if s.captureData == nil {
		s.captureData = archive.Capture
	}
	if s.convertCapture == nil {
		s.convertCapture = archive.Convert
	}
	if s.cloneData == nil {
		s.cloneData = archive.Clone
	}
	if s.writeTree == nil {
		s.writeTree = archive.WriteTree
	}
	if s.progressTTY == nil {
		s.progressTTY = stderrIsTerminal
	}
	if s.activePoll == 0 {
		s.activePoll = defaultActivePoll
	}
	if s.fstabPath == "" {
		s.fstabPath = "/etc/fstab"
	}
	if s.mountinfoPath == "" {
		s.mountinfoPath = "/proc/self/mountinfo"
	}
}

// run is the state of one Runner.Run call.
type run struct {
	*Runner
	cfg   *config.Config
	log   *slog.Logger
	start time.Time

	errs        *multierror.Error // failures of the run as a whole
	warnings    []string          // see warn
	key         *hostkey.Key      // signs the archives (preflight loads it)
	dests       []*destination
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
}

// Run performs the backup and returns the exit code. It never returns with
// a unit it stopped still stopped, unless starting that unit failed (then
// the state file keeps it for `recover` and the run fails).
func (r *Runner) Run(ctx context.Context) int {
	cfg := r.Config
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.HookOutput == nil {
		r.HookOutput = os.Stderr
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Systemd == nil {
		r.Systemd = Systemctl{}
	}
	r.seams.withDefaults()
	rn := &run{Runner: r, cfg: cfg, log: r.Log.With(keyService, cfg.Name), start: time.Now()}

	if err := ensureStateDir(cfg.Backup.StateDirectory); err != nil {
		rn.log.Error("unsafe or unusable state directory; nothing was stopped", "error", err)
		return ExitFailed
	}
	lock, err := acquireLock(ctx, lockFilePath(cfg.Backup.StateDirectory, cfg.Name), cfg.Name,
		time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
	if err != nil {
		// Neither metrics nor the post hook: they belong to the run holding
		// the lock, which may be using the destinations right now.
		rn.log.Error(err.Error())
		switch {
		case errors.Is(err, ErrLockHeld):
			return ExitLockHeld
		case ctx.Err() != nil:
			return ExitInterrupted
		}
		return ExitFailed
	}
	defer lock.Release()

	rn.executeSafely(ctx)
	return rn.finish(ctx)
}

func (rn *run) fatal(err error) {
	rn.errs = multierror.Append(rn.errs, err)
}

// warn records something that needs attention although the archive was
// committed: the run ends with ExitWarning unless something failed.
func (rn *run) warn(msg string) {
	rn.warnings = append(rn.warnings, msg)
	rn.log.Warn(msg)
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

func (rn *run) execute(ctx context.Context) {
	cfg := rn.cfg
	// Whatever happens below, no temp file of this run survives it.
	defer func() {
		for _, d := range rn.dests {
			if err := d.abort(); err != nil {
				rn.log.Error("cannot remove temp file", keyDestination, d.dir, "error", err)
			}
		}
	}()

	if err := rn.recoverStale(ctx); err != nil {
		rn.fatal(err)
		return
	}
	if !rn.preflight(ctx) {
		return
	}
	if cfg.Backup.PreBackup != "" {
		rn.log.Info("running pre-backup hook")
		if err := runHook(ctx, cfg.Backup.PreBackup, []string{"BACKUP_NAME=" + cfg.Name}, rn.HookOutput); err != nil {
			rn.fatal(fmt.Errorf("pre-backup hook failed (nothing was stopped): %w", err))
			return
		}
	}

	rn.units = &unitController{
		systemd:      rn.Systemd,
		log:          rn.log,
		stateFile:    stateFilePath(cfg.Backup.StateDirectory, cfg.Name),
		stopTimeout:  time.Duration(cfg.Backup.StopTimeoutSec) * time.Second,
		startTimeout: time.Duration(cfg.Backup.StartTimeoutSec) * time.Second,
		poll:         rn.activePoll,
	}
	// The capture (captureFirst) never outlives the run, whatever happens.
	defer rn.removeCapture()
	// Registered before the first stop: error paths, cancellation and
	// panics all pass through here.
	defer rn.restartUnits(ctx)
	if err := rn.units.stopAll(ctx, cfg.ServiceName); err != nil {
		if cfg.Backup.AllowLiveBackup && ctx.Err() == nil {
			rn.log.Warn("could not stop a unit; backing up live because allowLiveBackup is set", "error", err)
		} else {
			rn.fatal(fmt.Errorf("%w (no archive written; stopped units are started again)", err))
			return
		}
	}
	if rn.afterStop != nil {
		rn.afterStop(ctx)
	}
	produce := archiveProducer{"archiving", rn.archiveDataPaths}
	if cfg.Backup.CaptureFirst {
		ok := rn.capture(ctx)
		// The data paths are no longer read: the service comes back now,
		// before the slow part (compression, fan-out, verification).
		rn.restartUnits(ctx)
		if !ok || ctx.Err() != nil {
			return
		}
		rn.log.Info("data captured and units started again; compressing the capture",
			"downtime", rn.units.Downtime().Round(time.Millisecond))
		produce = archiveProducer{"compressing", rn.archiveCapture}
	}
	if !rn.writeArchives(ctx, produce) {
		return
	}
	rn.warnChanged()
	if ctx.Err() != nil {
		return
	}
	rn.prune(ctx)
}

// restartUnits starts the stopped units once and records a failure.
func (rn *run) restartUnits(ctx context.Context) {
	rn.restartOnce.Do(func() {
		defer lowerPriority(rn.log) // nix helper: full speed only while units are stopped
		if rn.units == nil {
			return
		}
		if err := rn.units.restart(ctx); err != nil {
			rn.fatal(err)
		}
	})
}

// recoverStale starts units that a killed earlier run left stopped (its
// ExecStopPost `recover` should have done so; this covers a missing or
// failed ExecStopPost). If they do not come back, the run is refused: the
// operator has to look at the service first.
func (rn *run) recoverStale(ctx context.Context) error {
	path := stateFilePath(rn.cfg.Backup.StateDirectory, rn.cfg.Name)
	units, err := readStoppedState(path, rn.cfg.ServiceName)
	if err != nil {
		return fmt.Errorf("read state file: %w", err)
	}
	if units == nil {
		return nil
	}
	rn.log.Warn("an earlier run left units stopped; starting them first", "state_file", path, "units", strings.Join(units, ","))
	timeout := time.Duration(rn.cfg.Backup.StartTimeoutSec) * time.Second
	if err := startUnits(context.WithoutCancel(ctx), rn.Systemd, rn.log, units, timeout, rn.activePoll, path); err != nil {
		return fmt.Errorf("units left stopped by an earlier run could not be started; not backing up: %w", err)
	}
	return nil
}

// preflight checks everything that can be checked before stopping a unit.
//
// Problems of the run as a whole (a missing data path, an unknown owner)
// fail it before anything is stopped. A destination that fails its checks
// (not creatable, not a directory, read-only, not enough room) is marked
// failed and left out, and the run goes on with the others: a backup in
// the remaining destinations is worth more than none, and the run still
// ends "partial" (exit 3), so the failure is loud. With no destination
// left, the run fails before anything is stopped.
//
// With captureFirst, the uncompressed capture needs about the data size on
// top of the archive(s) in one destination's file system: the first usable
// destination with that room is the staging destination. If none has it,
// the run fails before anything is stopped (no destination is dropped for
// it: each can still hold its archive; turn captureFirst off or free space).
func (rn *run) preflight(ctx context.Context) bool {
	cfg := rn.cfg
	errs := rn.checkBeforeStop()
	var err error
	if rn.key, err = loadSigningKey(cfg, true); err != nil {
		errs = multierror.Append(errs, err)
	}
	size, err := dataSize(cfg.DataPaths)
	if err != nil && errs == nil {
		errs = multierror.Append(errs, err)
	}
	failDest := func(d *destination, err error) {
		d.fail(err)
		rn.log.Error("destination unusable; backing up to the others", keyDestination, d.dir, "error", err)
	}
	for _, dir := range cfg.Backup.Paths {
		d := &destination{dir: dir, name: cfg.Name, optional: cfg.Backup.IsOptional(dir)}
		rn.dests = append(rn.dests, d)
		skip, err := prepareDestination(&rn.seams, dir, cfg.Name, d.optional, rn.log)
		if skip {
			d.state = destSkipped
			continue
		}
		if err != nil {
			failDest(d, err)
			continue
		}
		if err := removeStaleTemps(dir, cfg.Name, rn.log); err != nil {
			rn.log.Warn("cannot remove stale temp files", keyDestination, dir, "error", err)
		}
	}
	if err := sameDestinations(rn.usableDests()); err != nil {
		errs = multierror.Append(errs, err)
	}
	// Free space, summed per file system: two destinations on one disk need
	// room for two copies.
	type fsNeed struct {
		avail uint64
		need  int64
		dests []*destination
	}
	byDev := map[uint64]*fsNeed{}
	var devs []uint64
	for _, d := range rn.usableDests() {
		avail, dev, err := freeSpace(d.dir)
		if err != nil {
			failDest(d, err)
			continue
		}
		n := byDev[dev]
		if n == nil {
			n = &fsNeed{avail: avail}
			byDev[dev] = n
			devs = append(devs, dev)
		}
		n.need += estimateArchiveSize(size, cfg.Backup.Format, d.dir, cfg.Name)
		n.dests = append(n.dests, d)
	}
	for _, dev := range devs {
		n := byDev[dev]
		if uint64(n.need) > n.avail {
			dirs := make([]string, len(n.dests))
			for i, d := range n.dests {
				dirs[i] = d.dir
			}
			err := fmt.Errorf("%s free on the file system of %s, the archive needs about %s",
				humanBytes(int64(n.avail)), strings.Join(dirs, " and "), humanBytes(n.need))
			for _, d := range n.dests {
				failDest(d, err)
			}
		}
	}
	if cfg.Backup.CaptureFirst && errs == nil {
		// The capture goes to the first destination whose file system has
		// room for a tar capture on top of the archive(s) it will receive,
		// preferably one on the data's file system (a reflink copy is tried
		// there; the tar capture is its fallback, so the room is needed
		// either way). None: the run fails here, before anything is stopped.
		for _, d := range rn.usableDests() {
			if avail, dev, err := freeSpace(d.dir); err == nil && byDev[dev] != nil &&
				uint64(byDev[dev].need)+uint64(size) <= avail {
				if rn.staging == nil {
					rn.staging = d
				}
				if sameFileSystem(d.dir, cfg.DataPaths) {
					rn.staging, rn.tryReflink = d, true
					break
				}
			}
		}
		if rn.staging == nil && len(rn.usableDests()) > 0 {
			errs = multierror.Append(errs, fmt.Errorf("captureFirst: no destination has room for the uncompressed capture "+
				"(about %s on top of the archive); free space or turn captureFirst off", humanBytes(size)))
		}
	}
	usable := rn.usableDests()
	if len(usable) == 0 && errs == nil {
		errs = multierror.Append(errs, errors.New("no destination available"))
		for _, d := range rn.dests {
			if d.err != nil {
				errs = multierror.Append(errs, fmt.Errorf("destination %s: %w", d.dir, d.err))
			} else if d.state == destSkipped {
				errs = multierror.Append(errs, fmt.Errorf("destination %s: optional and missing", d.dir))
			}
		}
		// Reported here, not again by allErrors.
		for _, d := range rn.dests {
			d.err = nil
		}
	}
	if errs != nil {
		errs.ErrorFormat = config.ListFormat
		rn.fatal(fmt.Errorf("preflight failed, nothing was stopped:\n%w", errs))
		return false
	}
	rn.base = rn.pickName(usable)
	rn.dataSize = size
	rn.log.Info("preflight ok", keyArchive, rn.base, "data_size", humanBytes(size), "destinations", len(usable))
	return ctx.Err() == nil
}

// pickName returns NAME-TS.EXT for now, moved on by a second while that name
// exists in a destination (two runs in one second must not collide).
func (rn *run) pickName(usable []*destination) string {
	t := rn.Now().UTC().Truncate(time.Second)
	ext := config.ArchiveExt(rn.cfg.Backup.Format)
	for i := 0; ; i++ {
		base := retention.FileName(rn.cfg.Name, ext, t)
		taken := false
		for _, d := range usable {
			if _, err := os.Lstat(filepath.Join(d.dir, base)); err == nil {
				taken = true
			}
		}
		if !taken || i >= 60 {
			return base
		}
		t = t.Add(time.Second)
	}
}

func (rn *run) usableDests() []*destination {
	var out []*destination
	for _, d := range rn.dests {
		if d.state == destUsable {
			out = append(out, d)
		}
	}
	return out
}

// writeArchives writes one archive to every usable destination (see the
// protocol in dest.go): the stream goes to one primary destination per file
// system, the units are restarted as soon as it is complete, then each
// primary's copies are filled from it and every copy is fsynced, verified
// and committed. It reports whether at least one copy was committed.
func (rn *run) writeArchives(ctx context.Context, produce archiveProducer) bool {
	cfg := rn.cfg
	var active, primaries []*destination
	primaryOf := map[uint64]*destination{}
	for _, d := range rn.usableDests() {
		d.base, d.key = rn.base, rn.key
		if err := d.create(); err != nil {
			d.fail(fmt.Errorf("create temp file: %w", err))
			rn.log.Error("destination failed", keyDestination, d.dir, "error", err)
			continue
		}
		active = append(active, d)
		dev, ok := fileDevice(d.file)
		if p := primaryOf[dev]; ok && p != nil {
			d.primary = p
			if p.verified == nil {
				p.copyable, p.verified = newSignal(), newSignal()
			}
			continue
		}
		if ok {
			primaryOf[dev] = d
		}
		primaries = append(primaries, d)
	}
	if len(active) == 0 {
		rn.fatal(errors.New("no destination could be written"))
		return false
	}
	var names []string
	for _, d := range active {
		names = append(names, d.dir)
	}
	rn.log.Info("writing archive", keyArchive, rn.base, "destinations", strings.Join(names, ","), "streamed_to", len(primaries))

	// One primary: the archive goes straight into its file (a native
	// compressor writes it itself). Several: through the fan-out, which
	// hashes the stream and writes the primaries concurrently; batching
	// the archiver's small writes keeps its per-write handoff cheap.
	var out io.Writer
	var fo *fanout
	var buf *bufio.Writer
	if len(primaries) == 1 {
		out = primaries[0].file
	} else {
		var pnames []string
		var writers []io.Writer
		for _, d := range primaries {
			pnames = append(pnames, d.dir)
			writers = append(writers, d)
		}
		fo = newFanout(ctx, rn.log, pnames, writers)
		buf = bufio.NewWriterSize(fo, 1<<20)
		out = buf
	}
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, produce.phase, rn.dataSize, prog)
	stats, err := produce.run(ctx, out, archive.Options{
		Format:   cfg.Backup.Format,
		Level:    cfg.Backup.CompressionLevel,
		Threads:  cfg.Backup.Threads,
		Exclude:  cfg.Backup.Exclude,
		Logger:   rn.log,
		Progress: prog,
		SkipDirs: rn.skipDirs(),
	})
	stopProgress()
	if fo != nil {
		if err == nil {
			err = buf.Flush()
		}
		fo.Close()
	}
	rn.stats = stats
	// The data paths are no longer read: bring the service back before the
	// slow part (copies, fsync, verification, pruning). The capture is no
	// longer needed either.
	rn.restartUnits(ctx)
	rn.removeCapture()

	if err != nil {
		for _, d := range active {
			d.abort()
			if ctx.Err() != nil {
				d.state = destInterrupted
			} else {
				d.fail(errors.New("archive aborted"))
			}
		}
		if ctx.Err() != nil {
			rn.fatal(fmt.Errorf("interrupted while writing the archive: %w", context.Cause(ctx)))
		} else {
			rn.fatal(fmt.Errorf("write archive: %w", err))
		}
		return false
	}
	var streamSum []byte
	if fo != nil {
		streamSum = fo.Sum()
		for i, d := range primaries {
			if err := fo.sinkErr(i); err != nil {
				d.fail(err)
				d.abort()
			}
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, len(active))
	sc := &structureCheck{}
	// Each copy reads its primary through a duplicate of the descriptor
	// the primary was written through (never its name: see dest.go),
	// taken before the primary can commit and close it.
	srcs := make([]*os.File, len(active))
	for i, d := range active {
		if d.primary != nil && d.primary.err == nil {
			if srcs[i], errs[i] = dupFile(d.primary.file); errs[i] != nil {
				errs[i] = fmt.Errorf("duplicate the descriptor of %s to copy it: %w", d.primary.file.Name(), errs[i])
			}
		}
	}
	for i, d := range active {
		switch {
		case d.primary == nil && d.err == nil:
			goSafe(&wg, &errs[i], func() (err error) {
				defer func() {
					if err != nil {
						d.failPrimary()
					}
				}()
				_, err = d.finish(ctx, streamSum, rn.owner, cfg.Backup.Format, sc)
				return err
			})
		case d.primary == nil:
			d.failPrimary()
		case d.primary.err != nil:
			errs[i] = fmt.Errorf("the copy in %s, on the same file system, failed: %w", d.primary.dir, d.primary.err)
		case srcs[i] != nil:
			src := srcs[i]
			goSafe(&wg, &errs[i], func() error {
				defer src.Close()
				return d.copyFromPrimary(ctx, src, rn.owner, cfg.Backup.Format, sc)
			})
		}
	}
	wg.Wait()
	committed := 0
	for i, d := range active {
		if errs[i] != nil {
			d.abort()
			if ctx.Err() != nil {
				d.state = destInterrupted
				continue
			}
			d.fail(errs[i])
			rn.log.Error("destination failed", keyDestination, d.dir, "error", errs[i])
			continue
		}
		if d.state == destCommitted {
			committed++
			how := "streamed"
			if d.primary != nil {
				how = "copied from " + d.primary.dir
			}
			rn.log.Info("archive written and verified", keyDestination, d.dir, keyArchive, d.base, keyBytes, d.size, "written", how)
		}
	}
	if ctx.Err() != nil {
		rn.fatal(fmt.Errorf("interrupted while committing the archive: %w", context.Cause(ctx)))
		return false
	}
	if committed == 0 {
		rn.fatal(errors.New("no destination holds a verified copy of the archive"))
		return false
	}
	return true
}

// prune applies retention to each destination holding a verified copy,
// unless the shrink guard (shrink.go) holds it back.
func (rn *run) prune(ctx context.Context) {
	cfg := rn.cfg
	policy := retention.PolicyFromConfig(cfg.Backup.MaxRetentionDays, cfg.Backup.RetentionSnapshots, cfg.Backup.MinKeepOrDefault())
	policy.Protect = []string{rn.base}
	empty := rn.emptyData()
	if empty != "" {
		rn.warn(empty + "; the archive was committed, but pruning was skipped in every destination")
	}
	for _, d := range rn.dests {
		if d.state != destCommitted {
			continue
		}
		// The archive just written was verified by this run: not read again.
		good := []string{rn.base}
		if empty != "" {
			d.guard = "empty"
			d.count = rn.countArchives(d)
			continue
		}
		if why, prev := rn.shrunk(ctx, d); why != "" {
			d.guard = "shrunk"
			d.count = rn.countArchives(d)
			rn.warn(fmt.Sprintf("%s: %s; the archive was committed, but pruning was skipped there", d.dir, why))
			continue
		} else if prev != "" {
			good = append(good, prev)
		}
		res, err := pruneDir(ctx, rn.key, d.dir, cfg.Name, config.ArchiveExt(cfg.Backup.Format), policy, good, rn.Now(), false, rn.log)
		d.pruned, d.count = len(res.removed), len(res.kept)
		if err != nil {
			d.state = destFailed
			d.err = fmt.Errorf("prune: %w", err)
			rn.log.Error("pruning failed", keyDestination, d.dir, "error", err)
		}
	}
}

// finish logs the summary, writes metrics, runs the post hook and returns
// the exit code.
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
	if errs == nil {
		return nil
	}
	errs.ErrorFormat = config.ListFormat
	return errs
}

// pruneResult lists what pruneDir kept and removed, and which of the kept
// archives failed their integrity check.
type pruneResult struct {
	kept, removed []retention.Archive
	bad           []badArchive
}

// badArchive is an archive whose .sha256 is missing, unreadable or does not
// match its content, or (untrusted) whose signature is missing or wrong.
type badArchive struct {
	retention.Archive
	reason    error
	untrusted bool
}

// pruneDir applies policy to the archives of service name in dir. Only
// regular files matching the service's exact naming pattern are considered;
// each is re-checked with Lstat just before removal. The .sha256 beside a
// removed archive goes with it.
//
// An archive counts towards MinKeep, KeepLast and MaxAge only if it is
// trusted (trust.go: its content matches its .sha256 and its signature
// verifies with key, nil: nothing is trusted): retention.Plan asks about
// every archive it would keep as counted, so a run re-reads the archives
// it keeps (except those in goodNames: the run's own archive, verified
// moments ago). An archive that fails the check is never removed (it is
// evidence of a problem, or an archive the admin has to judge) and is
// logged as a warning.
func pruneDir(ctx context.Context, key *hostkey.Key, dir, name, ext string, policy retention.Policy, goodNames []string, now time.Time, dryRun bool, log *slog.Logger) (pruneResult, error) {
	archives, err := retention.Scan(dir, name, ext)
	if err != nil {
		return pruneResult{}, err
	}
	for i := range archives {
		if slices.Contains(goodNames, archives[i].Name) {
			archives[i].Check = retention.Good
		}
	}
	reasons := map[string]archiveCheck{}
	policy.Verify = func(a retention.Archive) bool {
		c := inspectArchive(ctx, key, filepath.Join(dir, a.Name), true, nil)
		if c.trusted() {
			return true
		}
		reasons[a.Name] = c
		return false
	}
	keep, remove := retention.Plan(archives, policy, now)
	if ctx.Err() != nil {
		// A check cut short by SIGTERM says nothing about the archive:
		// remove nothing, report nothing as bad.
		return pruneResult{kept: archives}, fmt.Errorf("prune interrupted: %w", context.Cause(ctx))
	}
	res := pruneResult{kept: keep}
	for _, a := range keep {
		if a.Check != retention.Bad {
			continue
		}
		c := reasons[a.Name]
		// Untrusted: intact (matches its .sha256), only the signature is
		// missing or wrong. Anything else is damage.
		b := badArchive{a, c.reason(), c.err == nil && c.checksum == checksumOK}
		res.bad = append(res.bad, b)
		if b.untrusted {
			log.Warn("archive is untrusted (signature missing or wrong); kept and not counted for retention",
				keyDestination, dir, keyArchive, a.Name, "error", b.reason)
		} else {
			log.Warn("archive failed its checksum check; kept as evidence and not counted for retention",
				keyDestination, dir, keyArchive, a.Name, "error", b.reason)
		}
	}
	if dryRun {
		res.removed = remove
		return res, nil
	}
	var errs *multierror.Error
	for _, a := range remove {
		p := filepath.Join(dir, a.Name)
		if !retention.IsRegularFile(p) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = multierror.Append(errs, err)
			res.kept = append(res.kept, a)
			continue
		}
		res.removed = append(res.removed, a)
		log.Info("pruned archive", keyDestination, dir, keyArchive, a.Name)
		for _, side := range []string{p + ".sha256", p + ".sig"} {
			if retention.IsRegularFile(side) {
				if err := os.Remove(side); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = multierror.Append(errs, err)
				}
			}
		}
	}
	if len(res.removed) > 0 {
		if err := syncDir(dir); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	sort.SliceStable(res.kept, func(i, j int) bool { return res.kept[i].Time.After(res.kept[j].Time) })
	return res, errs.ErrorOrNil()
}

// humanBytes formats n with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
