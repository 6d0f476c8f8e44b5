package worker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	ageenc "filippo.io/age"
	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// RestoreOptions are the restore command's choices.
type RestoreOptions struct {
	// Archive is an archive NAME as List shows it (looked up in
	// Destination, else in every destination in order), or the PATH of an
	// archive file.
	Archive     string
	Destination string
	// Target: extract into this directory (new or empty), leaving the
	// service alone; "" restores in place (stop, swap, start).
	Target string
	// TrustUnsigned restores an archive whose signature is missing or
	// wrong; AllowSpecial also restores setuid/setgid bits, devices,
	// fifos and privileged xattrs.
	TrustUnsigned bool
	AllowSpecial  bool
	// Identities decrypt an encrypted (.age) archive.
	Identities []ageenc.Identity
	// Paths, with Target, restores only these files or directories (each
	// a data path or below one; CheckRestorePaths) instead of every data
	// path: the one file a user lost need not cost a full copy of the
	// rest. The whole archive is still read and verified.
	Paths []string
}

// RestoreResult is what a restore put where (WriteText prints it as the
// restore command does).
type RestoreResult struct {
	Archive string // the archive, as messages name it
	Target  string // RestoreOptions.Target
	// Restored lists the data paths put in place (in place: also the
	// ones swapped before another failed).
	Restored []RestoredPath
	// Complete: every data path was restored.
	Complete bool
}

// RestoredPath is one data path restored.
type RestoredPath struct {
	DataPath string
	To       string // where its restored copy is (DataPath itself in place)
	Aside    string // in place: where the previous data went ("" if none)
}

// WriteText prints what was restored where.
func (r RestoreResult) WriteText(w io.Writer) {
	if r.Target != "" {
		if r.Complete {
			fmt.Fprintf(w, "restored %s into %s\n", r.Archive, r.Target)
			for _, p := range r.Restored {
				fmt.Fprintf(w, "  %s -> %s\n", p.DataPath, p.To)
			}
		}
		return
	}
	for _, p := range r.Restored {
		if p.Aside != "" {
			fmt.Fprintf(w, "%s: previous data moved to %s\n", p.DataPath, p.Aside)
		} else {
			fmt.Fprintf(w, "%s: restored (there was no previous data)\n", p.DataPath)
		}
	}
	if r.Complete {
		fmt.Fprintf(w, "restored %s\n", r.Archive)
	}
}

// Restore restores an archive of the service: into opts.Target, or in
// place (units stopped only once the whole archive verified, the current
// data moved aside, never deleted, units started again). Nothing is
// extracted unless the archive is trusted (signed by this host) or
// TrustUnsigned is set, and what is extracted is held to the checksum
// that was signed. The error says why it failed (it is also logged); the
// result says what was restored, in part when some of it failed.
func Restore(ctx context.Context, cfg *config.Config, systemd Systemd, log *slog.Logger, opts RestoreOptions) (RestoreResult, error) {
	rs := &restorer{cfg: cfg, log: log.With(keyService, cfg.Name), systemd: systemd, now: time.Now,
		allowSpecial: opts.AllowSpecial, trustUnsigned: opts.TrustUnsigned, ids: opts.Identities, dest: opts.Destination,
		paths: opts.Paths}
	if err := CheckRestorePaths(cfg, opts); err != nil {
		rs.log.Error("restore refused", "error", err)
		return RestoreResult{Target: opts.Target}, err
	}
	if opts.Target != "" {
		return rs.toTarget(ctx, opts.Archive, opts.Target)
	}
	return rs.inPlace(ctx, opts.Archive)
}

// restorer restores one archive of one service.
type restorer struct {
	cfg     *config.Config
	log     *slog.Logger
	systemd Systemd
	now     func() time.Time
	// trustUnsigned: --trust-unsigned (see trust).
	trustUnsigned bool
	// allowSpecial: restore setuid/setgid bits, devices, fifos and
	// privileged xattrs (archive.ExtractOptions.AllowSpecial).
	allowSpecial bool
	// ids decrypt an encrypted (.age) archive (--identity).
	ids []ageenc.Identity
	// dest is --destination: where the archive name is looked up.
	dest string
	// paths is --path: restore only these (toTarget only).
	paths []string
}

// check opens the archive, locks the service and decides whether the
// archive may be restored (precheck: its signature against its .sha256),
// before anything is extracted, stopped or moved. The content itself is
// verified while it is extracted (extract): one pass, never a second
// read.
func (rs *restorer) check(ctx context.Context, arg string) (src *restoreSource, lock *serviceLock, err error) {
	if src, err = rs.openSource(ctx, arg); err != nil {
		return nil, nil, fmt.Errorf("refusing to restore: %w", err)
	}
	if isEncryptedName(src.base) && rs.ids == nil {
		src.Close()
		return nil, nil, fmt.Errorf("%s is encrypted: give --identity FILE", src.label)
	}
	lock, err = acquireLock(ctx, lockFilePath(rs.cfg.Backup.StateDirectory, rs.cfg.Name), rs.cfg.Name,
		time.Duration(rs.cfg.Backup.LockTimeoutSec)*time.Second)
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	if err := rs.precheck(src); err != nil {
		lock.Release()
		src.Close()
		return nil, nil, fmt.Errorf("refusing to restore %s: %w", src.label, err)
	}
	return src, lock, nil
}

// extractOptions: owners are restored when root; entries without owner
// information (zip without the "ux" field) get the service's user and
// group, never root.
func (rs *restorer) extractOptions() (archive.ExtractOptions, error) {
	opts := archive.ExtractOptions{
		Prefixes:     rs.restoredPaths(),
		SameOwner:    os.Geteuid() == 0,
		AllowSpecial: rs.allowSpecial,
		Logger:       rs.log,
		Private:      true, // every restore extracts into private staging directories
	}
	if opts.SameOwner {
		own, err := lookupOwner(rs.cfg.User, rs.cfg.Group)
		if err != nil {
			return opts, fmt.Errorf("owner for entries without owner information: %w", err)
		}
		opts.DefaultOwner = &archive.Owner{UID: own.uid, GID: own.gid}
	}
	return opts, nil
}

// toTarget extracts the archive's data paths into dir (new or empty),
// leaving the service and its data alone. The archive is extracted into a
// private staging directory inside dir and moved into dir only once the
// whole stream verified; a refused archive leaves dir as it was (and
// removes it if the restore made it).
func (rs *restorer) toTarget(ctx context.Context, arg, dir string) (RestoreResult, error) {
	made, err := prepareTarget(dir)
	if err != nil {
		rs.log.Error("restore failed", "error", err, "target", dir)
		return RestoreResult{Target: dir}, err
	}
	res, err := rs.toTargetChecked(ctx, arg, dir)
	if err != nil && made {
		os.Remove(dir) // only if still empty
	}
	return res, err
}

// prepareTarget checks that dir is empty or missing (then makes it: made).
func prepareTarget(dir string) (made bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("cannot create target: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("cannot read target: %w", err)
	case len(entries) > 0:
		return false, errors.New("target directory is not empty; refusing to mix a restore into it")
	}
	return false, nil
}

func (rs *restorer) toTargetChecked(ctx context.Context, arg, dir string) (RestoreResult, error) {
	res := RestoreResult{Target: dir}
	src, lock, err := rs.check(ctx, arg)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return res, err
	}
	defer lock.Release()
	defer src.Close()
	res.Archive = src.label
	s, err := newStaging(dir, ".restore-")
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return res, err
	}
	defer s.remove()
	opts, err := rs.extractOptions()
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return res, err
	}
	rs.log.Info("extracting and verifying", keyArchive, src.label, "target", dir)
	stats, err := rs.extract(ctx, src, s.dir, opts)
	if err == nil {
		err = rs.checkPathsRestored(s.dir, src.label)
	}
	if err == nil {
		err = s.moveContentTo(dir)
	}
	if err != nil {
		rs.log.Error("restore failed; the target was left empty", "error", err, "target", dir)
		return res, err
	}
	rs.log.Info("restored", keyArchive, src.label, "target", dir, "files", stats.Files, keyBytes, stats.BytesRead)
	for _, p := range rs.restoredPaths() {
		res.Restored = append(res.Restored, RestoredPath{DataPath: p, To: filepath.Join(dir, archive.EntryName(p))})
	}
	res.Complete = true
	return res, nil
}

// inPlace restores the archive over the live data paths.
//
// One pass over the archive extracts each data path into a private
// staging directory beside it (same file system, so the final step is a
// rename) and verifies the stream, while the service still runs. Only
// when the whole archive verified are the units stopped, the current data
// renamed to <path>.pre-restore-<timestamp> (never deleted) and the
// staged copies renamed into place. A refused, failed or interrupted
// extraction therefore leaves the service and its data untouched. The
// units are started again in every case, exactly like a backup run.
func (rs *restorer) inPlace(ctx context.Context, arg string) (res RestoreResult, err error) {
	cfg := rs.cfg
	src, lock, err := rs.check(ctx, arg)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return res, err
	}
	defer lock.Release()
	defer src.Close()
	res.Archive = src.label
	stages, err := rs.stageAll(ctx, src)
	defer func() {
		for _, s := range stages {
			s.remove() // only the empty staging directories of the swapped ones
		}
	}()
	if err != nil {
		rs.log.Error("restore failed; service and current data left untouched", "error", err)
		return res, err
	}
	units := &unitController{
		systemd:      rs.systemd,
		log:          rs.log,
		stateFile:    stateFilePath(cfg.Backup.StateDirectory, cfg.Name),
		stopTimeout:  time.Duration(cfg.Backup.StopTimeoutSec) * time.Second,
		startTimeout: time.Duration(cfg.Backup.StartTimeoutSec) * time.Second,
	}
	defer func() {
		if rerr := units.restart(ctx); rerr != nil {
			rs.log.Error("restore: units did not come back", "error", rerr)
			if err == nil {
				err = rerr
			}
		}
	}()
	if err := units.stopAll(ctx, cfg.ServiceName); err != nil {
		rs.log.Error("restore aborted: could not stop the service; nothing was changed", "error", err)
		return res, err
	}
	res.Restored, err = rs.swapAll(stages, src.label)
	res.Complete = err == nil
	return res, err
}

// swapAll moves every staged data path into place and returns those it
// moved.
func (rs *restorer) swapAll(stages []*staged, label string) ([]RestoredPath, error) {
	ts := rs.now().UTC().Format(retention.TimeLayout)
	var errs *multierror.Error
	for _, s := range stages {
		if err := rs.swap(s, ts); err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		s.done = true
	}
	var done []RestoredPath
	for _, s := range stages {
		if s.done {
			done = append(done, RestoredPath{DataPath: s.dataPath, To: s.dataPath, Aside: s.aside})
		}
	}
	if errs != nil {
		err := listErr(errs)
		rs.log.Error("restore incomplete", "error", err)
		return done, err
	}
	rs.log.Info("restored in place", keyArchive, label)
	return done, nil
}

// extract extracts src into dir (or opts.Roots) in one pass that also
// hashes the stream, and fails unless the bytes read are the bytes
// precheck accepted: complete, uncorrupted, signed. An encrypted archive
// is decrypted in the same pass (its ciphertext is what is hashed).
func (rs *restorer) extract(ctx context.Context, src *restoreSource, dir *os.File, opts archive.ExtractOptions) (archive.Stats, error) {
	h := sha256.New()
	opts.Digest = h
	if isEncryptedName(src.base) {
		opts.Decrypt = func(r io.Reader) (io.Reader, error) { return decryptReader(r, rs.ids) }
	}
	if src.format == archive.FormatZip {
		// Zip is read at random, not as a stream: check its structure
		// (local headers against the central directory) first, as
		// verify does.
		if _, err := archive.VerifyAt(ctx, src.r, src.r.Size(), src.format); err != nil {
			return archive.Stats{}, fmt.Errorf("refusing to restore %s: %w", src.label, err)
		}
	}
	st, err := archive.ExtractAt(ctx, src.r, src.r.Size(), src.format, dir, opts)
	if err == nil {
		err = src.checkStream(h.Sum(nil))
	}
	if err != nil {
		return st, fmt.Errorf("refusing to restore %s: %w", src.label, err)
	}
	return st, nil
}
