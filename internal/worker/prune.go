package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// PruneOptions are the prune command's choices.
type PruneOptions struct {
	// DryRun decides and reports, removes nothing and takes no lock.
	DryRun bool
}

// PruneResult is what Prune decided per destination (WriteText prints it
// as the prune command does).
type PruneResult struct {
	// Policy is the retention policy applied, as text; "" when Prune did
	// not start (the lock was held).
	Policy string
	DryRun bool
	Dests  []PrunedDest
}

// PrunedDest is one destination's outcome.
type PrunedDest struct {
	Destination string
	// Skipped: an optional destination that is missing.
	Skipped bool
	// OpenErr: the destination could not be opened (nothing decided).
	OpenErr error
	Kept    []retention.Archive
	Removed []retention.Archive // or, with DryRun, would be removed
	Bad     []BadArchive        // kept: failed the check or untrusted
	// Err: listing or removing failed part way.
	Err error
}

// Prune applies the retention policy to every destination by hand, under
// the service's lock (unless opts.DryRun). Archives that fail their check
// or are untrusted are kept and reported; without the signing key every
// archive is untrusted, so nothing is removed. The error lists the
// destinations that failed; the result holds every destination either way.
func Prune(ctx context.Context, cfg *config.Config, log *slog.Logger, opts PruneOptions) (PruneResult, error) {
	log = log.With(keyService, cfg.Name)
	if !opts.DryRun {
		lock, err := acquireLock(ctx, lockFilePath(cfg.Backup.StateDirectory, cfg.Name), cfg.Name,
			time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
		if err != nil {
			log.Error("cannot prune", "error", err)
			return PruneResult{}, err
		}
		defer lock.Release()
	}
	policy := retentionPolicy(cfg)
	res := PruneResult{Policy: policy.String(), DryRun: opts.DryRun}
	// Without the key nothing is trusted, so nothing counts and nothing is
	// removed: pruning is safe, merely useless, until the key is back.
	key, keyErr := loadSigningKey(cfg, false)
	if keyErr != nil {
		log.Warn("signatures cannot be checked; every archive is untrusted and kept", "error", keyErr)
	}
	// The verification memo (memo.go): recorded and used under the lock,
	// only used by a dry run.
	var memo *verifyMemo
	if opts.DryRun {
		memo = loadMemoReadOnly(cfg.Backup.StateDirectory, cfg.Name, log)
	} else {
		memo = loadMemo(cfg.Backup.StateDirectory, cfg.Name, false, time.Now, log)
		memo.retainDests(cfg.Backup.Paths)
		defer memo.saveLogged()
	}
	var errs *multierror.Error
	for _, dir := range cfg.Backup.Paths {
		d := PrunedDest{Destination: dir}
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir) {
			d.Skipped = true
			res.Dests = append(res.Dests, d)
			continue
		}
		store, err := openForReading(cfg, dir, log)
		if err != nil {
			d.OpenErr = err
			res.Dests = append(res.Dests, d)
			errs = multierror.Append(errs, err)
			continue
		}
		defer closeStore(store)
		pr, err := pruneDir(ctx, key, store, config.ArchiveExt(cfg.Backup.Format), policy, nil, time.Now(), opts.DryRun, memo, log)
		d.Kept, d.Removed, d.Bad, d.Err = pr.kept, pr.removed, pr.bad, err
		res.Dests = append(res.Dests, d)
		if err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	return res, errs.ErrorOrNil()
}

// WriteText prints the result as the prune command does: the policy, then
// per destination what was kept, removed and found bad, and a summary.
func (r PruneResult) WriteText(w io.Writer) {
	if r.Policy == "" {
		return
	}
	fmt.Fprintf(w, "policy: %s\n", r.Policy)
	for _, d := range r.Dests {
		switch {
		case d.Skipped:
			fmt.Fprintf(w, "%s: optional destination missing, skipped\n", d.Destination)
		case d.OpenErr != nil:
			fmt.Fprintf(w, "%s: %v\n", d.Destination, d.OpenErr)
		default:
			d.writeText(w, r.DryRun)
		}
	}
}

// writeText prints one destination that was pruned (or would be).
func (d PrunedDest) writeText(w io.Writer, dryRun bool) {
	dir := d.Destination
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	for _, a := range d.Kept {
		if a.Check != retention.Bad {
			fmt.Fprintf(w, "keep %s: %s\n", joinDest(dir, a.Name), why(a))
		}
	}
	for _, a := range d.Removed {
		fmt.Fprintf(w, "%s %s: %s\n", verb, joinDest(dir, a.Name), why(a))
	}
	nBad, nUntrusted := 0, 0
	for _, a := range d.Bad {
		what := "bad"
		if a.Untrusted {
			what = "untrusted"
			nUntrusted++
		} else {
			nBad++
		}
		fmt.Fprintf(w, "%s, kept %s: %v\n", what, joinDest(dir, a.Name), a.Reason)
	}
	badNote := ""
	if len(d.Bad) > 0 {
		badNote = fmt.Sprintf(" (%d of them bad)", nBad)
		if nUntrusted > 0 {
			badNote = fmt.Sprintf(" (%d of them bad, %d untrusted)", nBad, nUntrusted)
		}
	}
	fmt.Fprintf(w, "%s: %d kept%s, %d %s\n", dir, len(d.Kept), badNote, len(d.Removed), verb)
	if d.Err != nil {
		fmt.Fprintf(w, "%s: error: %v\n", dir, d.Err)
	}
}
