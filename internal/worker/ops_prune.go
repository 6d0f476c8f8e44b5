package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// prune is the prune command: the retention policy applied by hand.
func (c *cli) prune(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("prune", pflag.ContinueOnError)
	dryRun := fs.Bool("dry-run", false, "print what would be deleted, delete nothing")
	if done, code := c.parse(fs, "prune --config FILE [--dry-run]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return ExitUsage
	}
	log := c.log.With(keyService, cfg.Name)
	if !*dryRun {
		lock, err := acquireLock(ctx, lockFilePath(cfg.Backup.StateDirectory, cfg.Name), cfg.Name,
			time.Duration(cfg.Backup.LockTimeoutSec)*time.Second)
		if err != nil {
			log.Error("cannot prune", "error", err)
			return exitCodeFor(ctx, err)
		}
		defer lock.Release()
	}
	policy := retentionPolicy(cfg)
	fmt.Fprintf(c.stdout, "policy: %s\n", policy)
	// Without the key nothing is trusted, so nothing counts and nothing is
	// removed: pruning is safe, merely useless, until the key is back.
	key, keyErr := loadSigningKey(cfg, false)
	if keyErr != nil {
		log.Warn("signatures cannot be checked; every archive is untrusted and kept", "error", keyErr)
	}
	var errs *multierror.Error
	for _, dir := range cfg.Backup.Paths {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir) {
			fmt.Fprintf(c.stdout, "%s: optional destination missing, skipped\n", dir)
			continue
		}
		store, err := openStore(cfg, dir, false, owner{uid: -1, gid: -1}, nil, log)
		if err != nil {
			fmt.Fprintf(c.stdout, "%s: %v\n", dir, err)
			errs = multierror.Append(errs, err)
			continue
		}
		defer closeStore(store)
		res, err := pruneDir(ctx, key, store, config.ArchiveExt(cfg.Backup.Format), policy, nil, time.Now(), *dryRun, log)
		verb := "removed"
		if *dryRun {
			verb = "would remove"
		}
		for _, a := range res.kept {
			if a.Check != retention.Bad {
				fmt.Fprintf(c.stdout, "keep %s: %s\n", joinDest(dir, a.Name), why(a))
			}
		}
		for _, a := range res.removed {
			fmt.Fprintf(c.stdout, "%s %s: %s\n", verb, joinDest(dir, a.Name), why(a))
		}
		nBad, nUntrusted := 0, 0
		for _, a := range res.bad {
			what := "bad"
			if a.untrusted {
				what = "untrusted"
				nUntrusted++
			} else {
				nBad++
			}
			fmt.Fprintf(c.stdout, "%s, kept %s: %v\n", what, joinDest(dir, a.Name), a.reason)
		}
		badNote := ""
		if len(res.bad) > 0 {
			badNote = fmt.Sprintf(" (%d of them bad)", nBad)
			if nUntrusted > 0 {
				badNote = fmt.Sprintf(" (%d of them bad, %d untrusted)", nBad, nUntrusted)
			}
		}
		fmt.Fprintf(c.stdout, "%s: %d kept%s, %d %s\n", dir, len(res.kept), badNote, len(res.removed), verb)
		if err != nil {
			fmt.Fprintf(c.stdout, "%s: error: %v\n", dir, err)
			errs = multierror.Append(errs, err)
		}
	}
	if errs != nil {
		return exitCodeFor(ctx, errs)
	}
	return ExitOK
}
