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
	"strconv"
	"strings"
	"time"

	ageenc "filippo.io/age"
	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

func (c *cli) restore(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("restore", pflag.ContinueOnError)
	archiveArg := fs.String("archive", "", "the archive to restore: its `NAME` as `list` shows it (looked up in --destination, else in every destination in order), or the PATH of an archive file (required)")
	dest := fs.String("destination", "", "read --archive NAME from this `DEST`ination of the service (a directory, s3:// or sftp:// URL as `list` shows it)")
	target := fs.String("target", "", "extract into `DIR` (new or empty) instead of restoring in place")
	yes := fs.Bool("yes", false, "restore in place: stop the units, move the current data aside, extract, start the units")
	trustUnsigned := fs.Bool("trust-unsigned", false, "restore an archive whose signature is missing or wrong (not written by this host's worker)")
	allowSpecial := fs.Bool("allow-special", false, "also restore setuid/setgid bits, device nodes, fifos and extended attributes outside user.* "+
		"(e.g. security.capability); without it they are skipped with a warning. Only for archives nobody else could have written: "+
		"the service's user can write its destinations")
	identity := fs.String("identity", "", "age identity `FILE` (age-keygen output, or an unencrypted ssh-ed25519/ssh-rsa private key); required for an encrypted (.age) archive")
	if done, code := c.parse(fs, "restore --config FILE --archive NAME|PATH [--destination DEST] [--target DIR] [--yes] [--allow-special] [--trust-unsigned] [--identity FILE]", args, &common); done {
		return code
	}
	if *archiveArg == "" || fs.NArg() > 0 {
		fmt.Fprintln(c.stderr, "backup-worker restore: --archive NAME|PATH is required (and no other arguments)")
		return ExitUsage
	}
	var ids []ageenc.Identity
	switch {
	case *identity != "":
		var err error
		if ids, err = loadIdentities(*identity); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker restore: %v\n", err)
			return ExitUsage
		}
	case isEncryptedName(*archiveArg):
		fmt.Fprintf(c.stderr, "backup-worker restore: %s is encrypted: give --identity FILE (a private key of one of its recipients)\n", strconv.Quote(*archiveArg))
		return ExitUsage
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return ExitUsage
	}
	if *target == "" && !*yes {
		fmt.Fprintf(c.stderr, "backup-worker restore: restoring in place stops %s, moves %s aside to <path>.pre-restore-<timestamp> and extracts %s.\nRe-run with --yes to do that, or use --target DIR to extract elsewhere.\n",
			orNone(cfg.ServiceName), strings.Join(cfg.DataPaths, ", "), strconv.Quote(*archiveArg))
		return ExitUsage
	}
	rs := &restorer{cfg: cfg, log: c.log.With(keyService, cfg.Name), systemd: c.seams.systemd, out: c.stdout, now: time.Now,
		allowSpecial: *allowSpecial, trustUnsigned: *trustUnsigned, ids: ids, dest: *dest}
	if *target != "" {
		return rs.toTarget(ctx, *archiveArg, *target)
	}
	return rs.inPlace(ctx, *archiveArg)
}

func orNone(units []string) string {
	if len(units) == 0 {
		return "no units"
	}
	return strings.Join(units, ", ")
}

// restorer restores one archive of one service.
type restorer struct {
	cfg     *config.Config
	log     *slog.Logger
	systemd Systemd
	out     io.Writer
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
		Prefixes:     rs.cfg.DataPaths,
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
func (rs *restorer) toTarget(ctx context.Context, arg, dir string) int {
	made, err := prepareTarget(dir)
	if err != nil {
		rs.log.Error("restore failed", "error", err, "target", dir)
		return ExitFailed
	}
	code := rs.toTargetChecked(ctx, arg, dir)
	if code != ExitOK && made {
		os.Remove(dir) // only if still empty
	}
	return code
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

func (rs *restorer) toTargetChecked(ctx context.Context, arg, dir string) int {
	src, lock, err := rs.check(ctx, arg)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return exitCodeFor(ctx, err)
	}
	defer lock.Release()
	defer src.Close()
	s, err := newStaging(dir, ".restore-")
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return ExitFailed
	}
	defer s.remove()
	opts, err := rs.extractOptions()
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return ExitFailed
	}
	rs.log.Info("extracting and verifying", keyArchive, src.label, "target", dir)
	stats, err := rs.extract(ctx, src, s.dir, opts)
	if err == nil {
		err = s.moveContentTo(dir)
	}
	if err != nil {
		rs.log.Error("restore failed; the target was left empty", "error", err, "target", dir)
		return exitCodeFor(ctx, err)
	}
	rs.log.Info("restored", keyArchive, src.label, "target", dir, "files", stats.Files, keyBytes, stats.BytesRead)
	fmt.Fprintf(rs.out, "restored %s into %s\n", src.label, dir)
	for _, p := range rs.cfg.DataPaths {
		fmt.Fprintf(rs.out, "  %s -> %s\n", p, filepath.Join(dir, archive.EntryName(p)))
	}
	return ExitOK
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
func (rs *restorer) inPlace(ctx context.Context, arg string) (code int) {
	cfg := rs.cfg
	src, lock, err := rs.check(ctx, arg)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return exitCodeFor(ctx, err)
	}
	defer lock.Release()
	defer src.Close()
	stages, err := rs.stageAll(ctx, src)
	defer func() {
		for _, s := range stages {
			s.remove() // only the empty staging directories of the swapped ones
		}
	}()
	if err != nil {
		rs.log.Error("restore failed; service and current data left untouched", "error", err)
		return exitCodeFor(ctx, err)
	}
	units := &unitController{
		systemd:      rs.systemd,
		log:          rs.log,
		stateFile:    stateFilePath(cfg.Backup.StateDirectory, cfg.Name),
		stopTimeout:  time.Duration(cfg.Backup.StopTimeoutSec) * time.Second,
		startTimeout: time.Duration(cfg.Backup.StartTimeoutSec) * time.Second,
	}
	defer func() {
		if err := units.restart(ctx); err != nil {
			rs.log.Error("restore: units did not come back", "error", err)
			if code == ExitOK {
				code = ExitFailed
			}
		}
	}()
	if err := units.stopAll(ctx, cfg.ServiceName); err != nil {
		rs.log.Error("restore aborted: could not stop the service; nothing was changed", "error", err)
		return exitCodeFor(ctx, err)
	}
	return rs.swapAll(stages, src.label)
}

// swapAll moves every staged data path into place and reports it.
func (rs *restorer) swapAll(stages []*staged, label string) int {
	ts := rs.now().UTC().Format(retention.TimeLayout)
	var errs *multierror.Error
	for _, s := range stages {
		if err := rs.swap(s, ts); err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		s.done = true
	}
	for _, s := range stages {
		switch {
		case s.aside != "" && s.done:
			fmt.Fprintf(rs.out, "%s: previous data moved to %s\n", s.dataPath, s.aside)
		case s.done:
			fmt.Fprintf(rs.out, "%s: restored (there was no previous data)\n", s.dataPath)
		}
	}
	if errs != nil {
		rs.log.Error("restore incomplete", "error", listErr(errs))
		return ExitFailed
	}
	rs.log.Info("restored in place", keyArchive, label)
	fmt.Fprintf(rs.out, "restored %s\n", label)
	return ExitOK
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
