package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	archivePath := fs.String("archive", "", "the archive `PATH` to restore (required)")
	target := fs.String("target", "", "extract into `DIR` (new or empty) instead of restoring in place")
	yes := fs.Bool("yes", false, "restore in place: stop the units, move the current data aside, extract, start the units")
	trustUnsigned := fs.Bool("trust-unsigned", false, "restore an archive whose signature is missing or wrong (not written by this host's worker)")
	allowSpecial := fs.Bool("allow-special", false, "also restore setuid/setgid bits, device nodes, fifos and extended attributes outside user.* "+
		"(e.g. security.capability); without it they are skipped with a warning. Only for archives nobody else could have written: "+
		"the service's user can write its destinations")
	identity := fs.String("identity", "", "age identity `FILE` (age-keygen output, or an unencrypted ssh-ed25519/ssh-rsa private key); required for an encrypted (.age) archive")
	if done, code := c.parse(fs, "restore --config FILE --archive PATH [--target DIR] [--yes] [--allow-special] [--trust-unsigned] [--identity FILE]", args, &common); done {
		return code
	}
	if *archivePath == "" || fs.NArg() > 0 {
		fmt.Fprintln(c.stderr, "backup-worker restore: --archive PATH is required (and no other arguments)")
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
	case isEncryptedName(*archivePath):
		fmt.Fprintf(c.stderr, "backup-worker restore: %s is encrypted: give --identity FILE (a private key of one of its recipients)\n", *archivePath)
		return ExitUsage
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return ExitUsage
	}
	if *target == "" && !*yes {
		fmt.Fprintf(c.stderr, "backup-worker restore: restoring in place stops %s, moves %s aside to <path>.pre-restore-<timestamp> and extracts %s.\nRe-run with --yes to do that, or use --target DIR to extract elsewhere.\n",
			orNone(cfg.ServiceName), strings.Join(cfg.DataPaths, ", "), *archivePath)
		return ExitUsage
	}
	rs := &restorer{cfg: cfg, log: c.log.With(keyService, cfg.Name), systemd: c.seams.systemd, out: c.stdout, now: time.Now,
		allowSpecial: *allowSpecial, trustUnsigned: *trustUnsigned, ids: ids}
	if *target != "" {
		return rs.toTarget(ctx, *archivePath, *target)
	}
	return rs.inPlace(ctx, *archivePath)
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
	// digest is the SHA-256 of the archive as check read it; every
	// extraction must read exactly these bytes (extract).
	digest []byte
}

// check locks the service, then hashes, parses and checks the signature of
// the archive in one read (trust); a bad or untrusted archive is refused
// before anything is stopped or moved. It is the one place where an
// archive becomes trusted: both restore modes call it before extracting
// anything, and every extraction then proves it read the bytes hashed
// here (rs.digest).
func (rs *restorer) check(ctx context.Context, path string) (format string, lock *serviceLock, err error) {
	format, ok := formatOf(path)
	if !ok {
		return "", nil, fmt.Errorf("%s: unknown archive extension (want one of %s)", path, strings.Join(config.Formats, ", "))
	}
	if isEncryptedName(path) && rs.ids == nil {
		return "", nil, fmt.Errorf("%s is encrypted: give --identity FILE", path)
	}
	lock, err = acquireLock(ctx, lockFilePath(rs.cfg.Backup.StateDirectory, rs.cfg.Name), rs.cfg.Name,
		time.Duration(rs.cfg.Backup.LockTimeoutSec)*time.Second)
	if err != nil {
		return "", nil, err
	}
	rs.log.Info("verifying archive before restoring", keyArchive, path)
	if err := rs.trust(ctx, path, format); err != nil {
		lock.Release()
		return "", nil, fmt.Errorf("refusing to restore %s: %w", path, err)
	}
	return format, lock, nil
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
// leaving the service and its data alone.
func (rs *restorer) toTarget(ctx context.Context, path, dir string) int {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			rs.log.Error("cannot create target", "error", err)
			return ExitFailed
		}
	case err != nil:
		rs.log.Error("cannot read target", "error", err)
		return ExitFailed
	case len(entries) > 0:
		rs.log.Error("target directory is not empty; refusing to mix a restore into it", "target", dir)
		return ExitFailed
	}
	format, lock, err := rs.check(ctx, path)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return exitCodeFor(ctx, err)
	}
	defer lock.Release()
	opts, err := rs.extractOptions()
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return ExitFailed
	}
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return ExitFailed
	}
	defer d.Close()
	stats, err := rs.extract(ctx, path, format, d, opts)
	if err != nil {
		rs.log.Error("restore failed; do not use what was extracted into the target", "error", err, "target", dir)
		return exitCodeFor(ctx, err)
	}
	rs.log.Info("restored", keyArchive, path, "target", dir, "files", stats.Files, keyBytes, stats.BytesRead)
	fmt.Fprintf(rs.out, "restored %s into %s\n", path, dir)
	for _, p := range rs.cfg.DataPaths {
		fmt.Fprintf(rs.out, "  %s -> %s\n", p, filepath.Join(dir, archive.EntryName(p)))
	}
	return ExitOK
}

// inPlace restores the archive over the live data paths.
//
// Each data path is extracted into a private staging directory beside it
// (same file system, so the final step is a rename) while the units are
// stopped; only when every data path extracted cleanly is the current data
// renamed to <path>.pre-restore-<timestamp> (never deleted) and the staged
// copy renamed into place. A failed or interrupted extraction therefore
// leaves the current data untouched. The units are started again in every
// case, exactly like a backup run.
func (rs *restorer) inPlace(ctx context.Context, path string) (code int) {
	cfg := rs.cfg
	format, lock, err := rs.check(ctx, path)
	if err != nil {
		rs.log.Error("restore failed", "error", err)
		return exitCodeFor(ctx, err)
	}
	defer lock.Release()

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

	ts := rs.now().UTC().Format(retention.TimeLayout)
	var stages []*staged
	cleanup := func() {
		for _, s := range stages {
			s.remove()
		}
	}
	for _, p := range cfg.DataPaths {
		s, err := rs.stage(ctx, path, format, p)
		if s != nil {
			stages = append(stages, s)
		}
		if err != nil {
			cleanup()
			rs.log.Error("restore failed; current data left untouched", "error", err)
			return exitCodeFor(ctx, err)
		}
	}
	var errs *multierror.Error
	for _, s := range stages {
		if err := rs.swap(s, ts); err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		s.done = true
	}
	cleanup() // only the empty parent directories are left of the swapped ones
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
	rs.log.Info("restored in place", keyArchive, path)
	fmt.Fprintf(rs.out, "restored %s\n", path)
	return ExitOK
}

// extract extracts into dir and fails unless the bytes it read are the
// bytes check hashed and verified: the archive belongs to the service
// user, who could rewrite it in between.
func (rs *restorer) extract(ctx context.Context, path, format string, dir *os.File, opts archive.ExtractOptions) (archive.Stats, error) {
	h := sha256.New()
	opts.Digest = h
	if isEncryptedName(path) {
		// The ciphertext is hashed (it is what check hashed), then
		// decrypted in the stream.
		opts.Decrypt = func(r io.Reader) (io.Reader, error) { return decryptReader(r, rs.ids) }
	}
	st, err := archive.ExtractDir(ctx, path, format, dir, opts)
	if err == nil && !bytes.Equal(h.Sum(nil), rs.digest) {
		err = fmt.Errorf("archive %s changed after it was verified; refusing it", path)
	}
	return st, err
}

// trust reads the archive once, through one descriptor: its SHA-256 (kept
// in rs.digest for the extraction to match), its full structure (an
// encrypted archive is decrypted with rs.ids to parse it), its
// .sha256 and its signature by this host's key. Reading these separately
// would let the archive's owner swap the file between two reads, so a
// forged archive could pass the signature check and be extracted.
func (rs *restorer) trust(ctx context.Context, path, format string) error {
	key, keyErr := loadSigningKey(rs.cfg, false)
	c := verifyArchiveKey(ctx, key, path, format, rs.ids)
	if c.err != nil {
		return c.err
	}
	if c.sum == nil {
		return errors.New("the archive was not read")
	}
	rs.digest = c.sum
	var untrusted error
	switch {
	case keyErr != nil:
		untrusted = fmt.Errorf("cannot check its signature: %w", keyErr)
	case !c.trusted():
		untrusted = fmt.Errorf("not trusted: %w", c.reason())
	}
	if untrusted == nil {
		return nil
	}
	if rs.trustUnsigned && ctx.Err() == nil {
		rs.log.Warn("restoring an untrusted archive because --trust-unsigned was given", keyArchive, path, "reason", untrusted.Error())
		return nil
	}
	return fmt.Errorf("%w; restore it only if you know where it came from, with --trust-unsigned", untrusted)
}
