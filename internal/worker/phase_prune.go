package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/retention"
	"github.com/hashicorp/go-multierror"
)

// prune applies retention to each destination holding a verified copy,
// unless the shrink guard (shrink.go) holds it back.
func (rn *run) prune(ctx context.Context) {
	cfg := rn.cfg
	policy := retentionPolicy(cfg)
	policy.Protect = []string{rn.base}
	empty := rn.emptyData()
	// The verification memo (memo.go): the lock phase made the state
	// directory root-only. The archive each destination just committed is
	// recorded first, as verified by this run.
	rn.memo = loadMemo(cfg.Backup.StateDirectory, cfg.Name, false, rn.Now, rn.log)
	rn.memo.hashed = rn.keptHashed
	defer rn.memo.saveLogged()
	rn.memo.retainDests(cfg.Backup.Paths)
	for _, d := range rn.dests {
		if d.state == destCommitted && d.committed != nil {
			rn.memo.put(d.dir, rn.base, *d.committed, d.sum)
		}
	}
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
			d.count = rn.countArchives(ctx, d)
			continue
		}
		if why, prev := rn.shrunk(ctx, d); why != "" {
			d.guard = "shrunk"
			d.count = rn.countArchives(ctx, d)
			rn.warn(fmt.Sprintf("%s: %s; the archive was committed, but pruning was skipped there", d.dir, why))
			continue
		} else if prev != "" {
			good = append(good, prev)
		}
		res, err := pruneDir(ctx, rn.key, d.store, config.ArchiveExt(cfg.Backup.Format), policy, good, rn.Now(), false, rn.memo, rn.log)
		d.pruned, d.count = len(res.removed), len(res.kept)
		if err != nil {
			d.state = destFailed
			d.err = fmt.Errorf("prune: %w", err)
			rn.log.Error("pruning failed", keyDestination, d.dir, "error", err)
		}
	}
}

// retentionPolicy is the service's retention settings as a Policy (the
// combined rule: retention.Plan, docs/retention.md).
func retentionPolicy(cfg *config.Config) retention.Policy {
	b := cfg.Backup
	return retention.PolicyFromConfig(b.MaxRetentionDays, b.RetentionSnapshots, b.MinKeepOrDefault(), b.KeepPeriods())
}

// why joins the reasons Plan gave for keeping or removing a.
func why(a retention.Archive) string { return strings.Join(a.Why, "; ") }

// pruneResult lists what pruneDir kept and removed, and which of the kept
// archives failed their integrity check.
type pruneResult struct {
	kept, removed []retention.Archive
	bad           []BadArchive
}

// BadArchive is an archive whose .sha256 is missing, unreadable or does not
// match its content, or (untrusted) whose signature is missing or wrong.
type BadArchive struct {
	retention.Archive
	Reason    error
	Untrusted bool
}

// pruneDir applies policy to the service's archives with extension ext in
// store: only those it lists (regular files matching the service's exact
// naming pattern) are considered; Remove re-checks each just before
// removal and takes the .sha256 and .sig along.
//
// An archive counts towards MinKeep, KeepLast and MaxAge only if it is
// trusted (trust.go: its content matches its .sha256 and its signature
// verifies with key, nil: nothing is trusted): retention.Plan asks about
// every archive it would keep as counted, so a run re-reads the archives
// it keeps (except those in goodNames: the run's own archive, verified
// moments ago), or, in a local directory, those memo (memo.go; nil: none)
// knows to be unchanged since they were verified less than memoMaxAge
// ago. The memo then forgets the archives that are gone; a dry run's memo
// is read-only. An archive that fails the check is never removed (it is
// evidence of a problem, or an archive the admin has to judge) and is
// logged as a warning.
func pruneDir(ctx context.Context, key *hostkey.Key, store Destination, ext string, policy retention.Policy, goodNames []string, now time.Time, dryRun bool, memo *verifyMemo, log *slog.Logger) (pruneResult, error) {
	dir := store.String()
	archives, err := listFormat(ctx, store, ext)
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
		c, ok := checkKept(ctx, key, store, a.Name, memo)
		if ok {
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
		b := BadArchive{a, c.reason(), c.err == nil && c.checksum == checksumOK}
		res.bad = append(res.bad, b)
		if b.Untrusted {
			log.Warn("archive is untrusted (signature missing or wrong); kept and not counted for retention",
				keyDestination, dir, keyArchive, a.Name, "error", b.Reason)
		} else {
			log.Warn("archive failed its checksum check; kept as evidence and not counted for retention",
				keyDestination, dir, keyArchive, a.Name, "error", b.Reason)
		}
	}
	if dryRun {
		res.removed = remove
		return res, nil
	}
	for _, a := range keep {
		if a.Check != retention.Bad {
			log.Info("kept archive", keyDestination, dir, keyArchive, a.Name, "why", why(a))
		}
	}
	var errs *multierror.Error
	for _, a := range remove {
		err := store.Remove(ctx, a.Name)
		switch {
		case errors.Is(err, errNotRegular):
			// Replaced by something else since it was listed: not ours.
			continue
		case err != nil && !errors.Is(err, errSideFiles):
			errs = multierror.Append(errs, err)
			res.kept = append(res.kept, a)
			continue
		case err != nil:
			errs = multierror.Append(errs, err)
		}
		res.removed = append(res.removed, a)
		log.Info("pruned archive", keyDestination, dir, keyArchive, a.Name, "why", why(a))
	}
	sort.SliceStable(res.kept, func(i, j int) bool { return res.kept[i].Time.After(res.kept[j].Time) })
	names := make([]string, len(res.kept))
	for i, a := range res.kept {
		names[i] = a.Name
	}
	memo.retain(dir, names)
	return res, errs.ErrorOrNil()
}
