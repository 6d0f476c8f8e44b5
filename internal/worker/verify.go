package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	ageenc "filippo.io/age"
	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/retention"
)

// VerifyOptions are the verify command's choices.
type VerifyOptions struct {
	// Archives are archive files to verify, by path; none: the newest
	// archive of every destination (with All, every archive).
	Archives []string
	All      bool
	// Adopt signs the selected archives that verify but are unsigned
	// (written before signing existed): only for archives the admin
	// vouches for.
	Adopt bool
	// Identities decrypt encrypted (.age) archives so they are parsed in
	// full; without them only their checksum and signature are checked.
	Identities []ageenc.Identity
	// Report gets each verdict as soon as it is known, and Warn each
	// problem that does not stop verify (no signing key: nothing is
	// trusted). Callbacks, not a result read at the end: verify reads
	// every archive in full, minutes each, and the command prints each
	// line as it comes, in the order it always did. Either may be nil.
	Report func(Verdict)
	Warn   func(error)
}

// Verdict states, the first word of verify's lines.
const (
	VerdictOK        = "OK"
	VerdictFailed    = "FAILED"
	VerdictUntrusted = "UNTRUSTED"
	VerdictSkip      = "SKIP"
)

// Verdict is verify's finding for one archive (or one destination: SKIP,
// or FAILED when it cannot be listed).
type Verdict struct {
	Status string // VerdictOK, ...
	Target string // the archive's path or URL, or the destination
	Err    error  // why it FAILED or is UNTRUSTED
	Note   string // "(decrypted and parsed)", ...
}

// String is the verdict as the verify command prints it.
func (v Verdict) String() string {
	switch {
	case v.Err != nil:
		return fmt.Sprintf("%s %s: %v", v.Status, v.Target, v.Err)
	case v.Note != "":
		return v.Status + " " + v.Target + " " + v.Note
	}
	return v.Status + " " + v.Target
}

// VerifyResult is every verdict, in the order they were reported.
type VerifyResult struct {
	Verdicts []Verdict
}

// verifyRun is one Verify: its options, key and what it found so far.
type verifyRun struct {
	opts VerifyOptions
	key  *hostkey.Key
	own  owner
	res  VerifyResult
	errs *multierror.Error
}

// report records v (and its error) and hands it to opts.Report.
func (vr *verifyRun) report(v Verdict, err error) error {
	vr.res.Verdicts = append(vr.res.Verdicts, v)
	if vr.opts.Report != nil {
		vr.opts.Report(v)
	}
	if err != nil {
		vr.errs = multierror.Append(vr.errs, err)
	}
	return err
}

func (vr *verifyRun) warn(err error) {
	if vr.opts.Warn != nil {
		vr.opts.Warn(err)
	}
}

// Verify checks archives in full: the checksum, the whole archive's
// structure (decrypted first when encrypted and Identities are given) and
// the signature; with Adopt it signs those that verify but are unsigned.
// The error lists every archive (or destination) that failed, or says why
// verify could not run (no signing key or owner for Adopt).
func Verify(ctx context.Context, cfg *config.Config, log *slog.Logger, opts VerifyOptions) (VerifyResult, error) {
	vr := &verifyRun{opts: opts}
	targets, remote, closeAll, err := vr.targets(ctx, cfg, log)
	defer closeAll()
	if err != nil {
		return vr.res, err
	}
	key, err := loadSigningKey(cfg, opts.Adopt)
	if err != nil {
		err = fmt.Errorf("signatures not checked: %w", err)
		vr.warn(err)
		if opts.Adopt {
			return vr.res, err
		}
	}
	vr.key = key
	if opts.Adopt {
		if vr.own, err = lookupOwner(cfg.User, cfg.Group); err != nil {
			vr.warn(err)
			return vr.res, err
		}
	}
	for _, a := range targets {
		vr.verifyLocal(ctx, a)
	}
	for _, r := range remote {
		for _, a := range r.archives {
			vr.verifyStored(ctx, r.store, a)
		}
	}
	return vr.res, vr.errs.ErrorOrNil()
}

// targets picks what to verify: the files named, or the newest (or every)
// archive of each destination. Local ones are read by path, remote ones
// through their Destination (remote: the stores stay open until closeAll).
func (vr *verifyRun) targets(ctx context.Context, cfg *config.Config, log *slog.Logger) (local []destArchive, remote []storedTargets, closeAll func(), err error) {
	var stores []Destination
	closeAll = func() {
		for _, s := range stores {
			closeStore(s)
		}
	}
	if len(vr.opts.Archives) > 0 {
		for _, p := range vr.opts.Archives {
			format, ok := formatOf(p)
			if !ok {
				return nil, nil, closeAll, fmt.Errorf("%s: unknown archive extension (want one of %s)", p, strings.Join(config.Formats, ", "))
			}
			local = append(local, destArchive{Archive: retention.Archive{Name: filepath.Base(p)}, dir: filepath.Dir(p), format: format, encrypted: isEncryptedName(p)})
		}
		return local, nil, closeAll, nil
	}
	for _, dir := range cfg.Backup.Paths {
		store, err := openForReading(cfg, dir, log)
		var stored []StoredArchive
		if err == nil {
			stores = append(stores, store)
			stored, err = store.List(ctx)
		}
		switch {
		case err != nil && errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir):
			vr.report(Verdict{Status: VerdictSkip, Target: dir, Note: "(optional destination missing)"}, nil)
			continue
		case err != nil:
			vr.report(Verdict{Status: VerdictFailed, Target: dir, Err: err}, err)
			continue
		case len(stored) == 0:
			vr.report(Verdict{Status: VerdictFailed, Target: dir, Err: fmt.Errorf("no archives of %s", cfg.Name)}, fmt.Errorf("%s: no archives", dir))
			continue
		}
		if !vr.opts.All {
			stored = stored[:1]
		}
		if _, isLocal := store.(*localDir); !isLocal {
			remote = append(remote, storedTargets{store, stored})
			continue
		}
		for _, a := range stored {
			local = append(local, destArchive{Archive: a.Archive, dir: dir, format: a.Format, encrypted: a.Encrypted})
		}
	}
	return local, remote, closeAll, nil
}

// verifyLocal verifies (or adopts) one archive read by path.
func (vr *verifyRun) verifyLocal(ctx context.Context, a destArchive) {
	ids := vr.opts.Identities
	if vr.opts.Adopt {
		how, err := adoptArchive(ctx, vr.key, a.path(), a.format, vr.own, ids)
		if err != nil {
			vr.report(Verdict{Status: VerdictFailed, Target: a.path(), Err: err}, err)
			return
		}
		vr.report(Verdict{Status: VerdictOK, Target: a.path(), Note: "(" + how + ")"}, nil)
		return
	}
	ck := verifyArchiveKey(ctx, vr.key, a.path(), a.format, ids)
	if ck.err != nil {
		vr.report(Verdict{Status: VerdictFailed, Target: a.path(), Err: ck.err}, ck.err)
		return
	}
	if ck.signature != signatureOK {
		vr.report(Verdict{Status: VerdictUntrusted, Target: a.path(), Err: ck.reason()}, fmt.Errorf("%s: %w", a.path(), ck.reason()))
		return
	}
	note := ""
	switch {
	case ck.checksum == checksumMissing:
		note = "(no .sha256; structure verified only)"
	case a.encrypted && !ck.structure:
		note = "(encrypted: checksum and signature verified; give --identity FILE to decrypt and parse it)"
	case a.encrypted:
		note = "(decrypted and parsed)"
	}
	vr.report(Verdict{Status: VerdictOK, Target: a.path(), Note: note}, nil)
}

// verifyArchiveKey checks the checksum (when a .sha256 exists; a missing
// one is reported, not an error: a crash between the links of the write
// protocol leaves one) and parses the whole archive, both through one
// descriptor, and checks the signature against key. c.err covers the
// checksum and the structure, c.signature and c.sigErr the signature.
// An encrypted archive (NAME-TS.EXT.age) is decrypted with ids and its
// plaintext parsed; without ids only its checksum and signature are
// checked (c.structure is false).
func verifyArchiveKey(ctx context.Context, key *hostkey.Key, path, format string, ids []ageenc.Identity) archiveCheck {
	if isEncryptedName(path) {
		if ids == nil {
			return inspectArchive(ctx, key, path, true, nil)
		}
		c := inspectArchive(ctx, key, path, true, func(f io.ReaderAt, size int64) error {
			return verifyEncrypted(ctx, f, size, format, ids)
		})
		c.structure = c.err == nil && c.sum != nil
		return c
	}
	c := inspectArchive(ctx, key, path, true, func(f io.ReaderAt, size int64) error {
		_, err := archive.VerifyAt(ctx, f, size, format)
		return err
	})
	c.structure = c.err == nil && c.sum != nil
	return c
}
