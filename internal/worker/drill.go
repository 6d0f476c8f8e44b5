package worker

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	ageenc "filippo.io/age"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
)

// A restore drill (backup.drill; `backup-worker drill`) proves that the
// newest archive of each destination restores: it takes the service lock
// (no backup or prune runs meanwhile), opens the newest archive as
// restore does (its signature checked against its .sha256 first),
// extracts it into a private directory in the scratch directory (never a
// data path: config's rule) while hashing the stream against its
// .sha256, compares what was restored with the manifest the backup wrote
// (archive.CheckManifest), and removes the scratch copy. The result goes
// to stdout, last-drill.json, the metrics and, unless it is ok, the
// notification URLs (drill_report.go).

// Drill results, per destination and for the drill.
const (
	DrillOK      = "ok"      // restored, and identical to the manifest
	DrillFailed  = "failed"  // could not restore, or differs from the manifest
	DrillPartial = "partial" // some destinations failed, others passed
	// DrillChecksumOnly: an encrypted archive and no identity: only its
	// signature and the ciphertext's SHA-256 were checked.
	DrillChecksumOnly = "checksum-only"
	DrillSkipped      = "skipped" // an optional destination that is absent
)

// maxDrillDifferences bounds the differences a drill reports per
// destination (all are counted).
const maxDrillDifferences = 10

// Drill runs the restore drill of one service.
type Drill struct {
	Config *config.Config
	Log    *slog.Logger
	// Report, when set, gets each destination's result as soon as it is
	// known (the command prints it with WriteText): a drill of several
	// destinations takes as long as restoring each, and the operator
	// should see the first verdict without waiting for the last.
	Report func(DrillDest)
	// Destination limits the drill to one of the service's destinations.
	Destination string
	Now         func() time.Time
	// LockWait bounds the wait for a backup in progress (default
	// drillLockWait).
	LockWait time.Duration
}

// drillLockWait: a drill that finds a backup (or a restore) of the
// service running waits for it rather than failing; the unit's
// TimeoutStartSec bounds it too.
const drillLockWait = 2 * time.Hour

// DrillResult is what a drill found (last-drill.json).
type DrillResult struct {
	Service      string      `json:"service"`
	Finished     time.Time   `json:"finished"`
	DurationSec  float64     `json:"durationSec"`
	Result       string      `json:"result"`
	ExitCode     int         `json:"exitCode"`
	Destinations []DrillDest `json:"destinations"`
}

// DrillDest is one destination's drill.
type DrillDest struct {
	Destination string   `json:"destination"`
	Archive     string   `json:"archive,omitempty"`
	Result      string   `json:"result"`
	Entries     int64    `json:"entries,omitempty"` // manifest entries compared
	Bytes       int64    `json:"bytes,omitempty"`   // content bytes compared
	Differences []string `json:"differences,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// Run drills every destination (or Destination) and returns the exit
// code: 0 all ok, 1 all failed (or none could be drilled), 3 some
// failed, 5 none failed but some were only checksummed, 4 the lock is
// held, 130 interrupted.
func (d *Drill) Run(ctx context.Context) int {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	cfg := d.Config
	log := d.Log.With(keyService, cfg.Name)
	if err := d.check(); err != nil {
		log.Error("drill not started", "error", err)
		return ExitUsage
	}
	dests := cfg.Backup.Paths
	if d.Destination != "" {
		dests = []string{d.Destination}
	}
	start := d.Now()
	lock, err := d.lock(ctx, log)
	if err != nil {
		log.Error("drill not started", "error", err)
		if errors.Is(err, ErrLockHeld) {
			return ExitLockHeld
		}
		return ExitFailed
	}
	defer lock.Release()
	ids, idErr := drillIdentities(cfg)
	res := &DrillResult{Service: cfg.Name}
	for _, dest := range dests {
		r := d.one(ctx, log, dest, ids, idErr)
		res.Destinations = append(res.Destinations, r)
		if d.Report != nil {
			d.Report(r)
		}
	}
	res.Finished = d.Now()
	res.DurationSec = roundSec(res.Finished.Sub(start))
	res.Result, res.ExitCode = drillOutcome(ctx, res.Destinations)
	d.report(ctx, log, res)
	return res.ExitCode
}

// check: drills are on (the runs write manifests) and Destination, if
// set, is one of the service's.
func (d *Drill) check() error {
	cfg := d.Config
	if cfg.Backup.Drill == nil {
		return fmt.Errorf("%s has no backup.drill: its backups write no manifest to compare with", cfg.Name)
	}
	if d.Destination != "" && !configuredDest(cfg, d.Destination) {
		return fmt.Errorf("--destination %s is not one of the service's destinations (%s)", d.Destination, strings.Join(cfg.Backup.Paths, ", "))
	}
	return nil
}

// CheckDrill is what the drill command refuses before it starts (exit 2).
func CheckDrill(cfg *config.Config, dest string) error {
	return (&Drill{Config: cfg, Destination: dest}).check()
}

// lock takes the service's lock, waiting up to LockWait for a backup in
// progress (and saying so).
func (d *Drill) lock(ctx context.Context, log *slog.Logger) (*serviceLock, error) {
	cfg := d.Config
	path := lockFilePath(cfg.Backup.StateDirectory, cfg.Name)
	lock, err := acquireLock(ctx, path, cfg.Name, time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
	if !errors.Is(err, ErrLockHeld) {
		return lock, err
	}
	wait := d.LockWait
	if wait == 0 {
		wait = drillLockWait
	}
	log.Info("a backup of the service is in progress; the drill waits for it", "max_wait", wait)
	return acquireLock(ctx, path, cfg.Name, wait)
}

// drillIdentities reads backup.drill.identityFile ($CREDENTIALS_DIRECTORY/
// drill-identity in the unit); nil, nil when none is configured.
func drillIdentities(cfg *config.Config) ([]ageenc.Identity, error) {
	if cfg.Backup.Drill == nil || cfg.Backup.Drill.IdentityFile == "" {
		return nil, nil
	}
	return LoadIdentities(credentialFile(config.DrillIdentityCredential, cfg.Backup.Drill.IdentityFile))
}

// drillOutcome sums up the destinations' results, as a run's exit codes
// do: an absent optional destination counts for nothing.
func drillOutcome(ctx context.Context, dests []DrillDest) (string, int) {
	var ok, failed, unverified int
	for _, d := range dests {
		switch d.Result {
		case DrillOK:
			ok++
		case DrillChecksumOnly:
			unverified++
		case DrillFailed:
			failed++
		}
	}
	switch {
	case ctx.Err() != nil:
		return DrillFailed, ExitInterrupted
	case failed > 0 && ok+unverified > 0:
		return DrillPartial, ExitPartial
	case failed > 0 || ok+unverified == 0:
		return DrillFailed, ExitFailed
	case unverified > 0:
		return DrillChecksumOnly, ExitWarning
	}
	return DrillOK, ExitOK
}

// one drills one destination.
func (d *Drill) one(ctx context.Context, log *slog.Logger, dest string, ids []ageenc.Identity, idErr error) DrillDest {
	r := DrillDest{Destination: dest, Result: DrillFailed}
	fail := func(err error) DrillDest {
		r.Error = err.Error()
		log.Error("drill failed", keyDestination, dest, keyArchive, r.Archive, "error", err)
		return r
	}
	if d.Config.Backup.IsOptional(dest) && !config.IsRemote(dest) {
		if _, err := os.Stat(dest); errors.Is(err, os.ErrNotExist) {
			r.Result = DrillSkipped
			log.Warn("drill: optional destination absent; skipped", keyDestination, dest)
			return r
		}
	}
	name, err := newestArchive(ctx, d.Config, dest, log)
	if err != nil {
		return fail(err)
	}
	r.Archive = name
	rs := &restorer{cfg: d.Config, log: log, now: d.Now, ids: ids, dest: dest}
	src, err := rs.openSource(ctx, name)
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	if err := rs.precheck(src); err != nil {
		return fail(fmt.Errorf("not trusted: %w", err))
	}
	if isEncryptedName(name) && ids == nil {
		return d.checksumOnly(ctx, log, r, src, idErr)
	}
	check, err := d.restoreAndCompare(ctx, rs, src)
	if check != nil {
		r.Entries, r.Bytes, r.Differences = check.Entries, check.Bytes, check.Differences
	}
	if err != nil {
		return fail(err)
	}
	if !check.OK() {
		return fail(fmt.Errorf("the restore differs from the manifest in %d place(s)", check.Total))
	}
	r.Result = DrillOK
	log.Info("drill ok", keyDestination, dest, keyArchive, name, "entries", check.Entries, keyBytes, check.Bytes)
	return r
}

// newestArchive names the newest archive in dest.
func newestArchive(ctx context.Context, cfg *config.Config, dest string, log *slog.Logger) (string, error) {
	store, err := openForReading(cfg, dest, log)
	if err != nil {
		return "", err
	}
	defer closeStore(store)
	list, err := store.List(ctx)
	if err != nil {
		return "", err
	}
	if len(list) == 0 {
		return "", errors.New("no archive to restore")
	}
	return list[0].Name, nil
}

// checksumOnly checks an encrypted archive without its identity: the
// ciphertext read in full against its signed .sha256. Loudly not a
// restore.
func (d *Drill) checksumOnly(ctx context.Context, log *slog.Logger, r DrillDest, src *restoreSource, idErr error) DrillDest {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(src.r, 0, src.r.Size()))
	if err == nil {
		err = src.checkStream(h.Sum(nil))
	}
	if err == nil && src.claimed == nil {
		err = errors.New("it has no .sha256 to check it against")
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		r.Error = err.Error()
		log.Error("drill failed", keyDestination, r.Destination, keyArchive, r.Archive, "error", err)
		return r
	}
	why := "no backup.drill.identityFile"
	if idErr != nil {
		why = idErr.Error()
	}
	r.Result, r.Bytes = DrillChecksumOnly, n
	r.Error = "encrypted, and " + why + ": only the signature and the ciphertext's SHA-256 were checked; NOT restored, NOT compared with the manifest"
	log.Warn("drill: checksum only", keyDestination, r.Destination, keyArchive, r.Archive, "reason", r.Error)
	return r
}

// restoreAndCompare extracts src into a private directory in the scratch
// directory and compares it with the archive's manifest; the directory is
// removed whatever happens.
func (d *Drill) restoreAndCompare(ctx context.Context, rs *restorer, src *restoreSource) (*archive.ManifestCheck, error) {
	man, err := os.Open(manifestPath(d.Config, src.base))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no manifest of %s in %s (the archive predates backup.drill, or is older than the last %d runs)",
			src.base, d.Config.Backup.Drill.ManifestDirectoryOrDefault(d.Config.Name), keepManifests)
	}
	if err != nil {
		return nil, err
	}
	defer man.Close()
	gz, err := gzip.NewReader(man)
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", src.base, err)
	}
	scratch := d.Config.Backup.Drill.ScratchDirectoryOrDefault()
	if err := ensureStateDir(scratch); err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	s, err := newStaging(scratch, d.Config.Name+"-drill-")
	if err != nil {
		return nil, err
	}
	defer s.remove()
	opts, err := rs.extractOptions()
	if err != nil {
		return nil, err
	}
	if _, err := rs.extract(ctx, src, s.dir, opts); err != nil {
		return nil, err
	}
	var roots []string
	for _, p := range d.Config.DataPaths {
		roots = append(roots, archive.EntryName(p))
	}
	check, err := archive.CheckManifest(ctx, fdPath(s.dir), gz, roots, maxDrillDifferences)
	if err != nil {
		return check, fmt.Errorf("compare with the manifest: %w", err)
	}
	return check, nil
}

// WriteText prints one destination's drill result for the operator.
func (r DrillDest) WriteText(w io.Writer) {
	switch r.Result {
	case DrillOK:
		fmt.Fprintf(w, "%s: ok: %s restored and identical to its manifest (%d entries, %s compared)\n",
			r.Destination, r.Archive, r.Entries, notify.HumanBytes(r.Bytes))
	case DrillSkipped:
		fmt.Fprintf(w, "%s: skipped: optional destination absent\n", r.Destination)
	default:
		fmt.Fprintf(w, "%s: %s: %s\n", r.Destination, r.Result, r.Error)
		for _, diff := range r.Differences {
			fmt.Fprintf(w, "  %s\n", diff)
		}
	}
}
