package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/notify"
)

// dryRun is `run --dry-run`: what a run would do now, changing nothing.
// It takes no lock and writes no state; it reads unit states with the
// same read-only systemctl calls the run makes (is-active, show), walks
// the data paths without reading files (dataSize), checks each
// destination without creating a directory or probe file (dryPrepare) and
// asks retention what it would remove, in dry-run mode. It returns the exit
// code a run would be heading for: 0, 3 (a destination would fail) or 1
// (the run would fail before stopping anything).
// DryRun prints to w what a run of cfg would stop, write and prune,
// changing nothing (systemd sd is only asked for unit states), and returns
// the exit code the run would likely have (3 when a destination would
// fail).
func DryRun(ctx context.Context, cfg *config.Config, sd Systemd, w io.Writer, log *slog.Logger) int {
	s := seams{systemd: sd}
	s.withDefaults()
	return dryRun(ctx, cfg, sd, &s, w, log)
}

func dryRun(ctx context.Context, cfg *config.Config, sd Systemd, s *seams, w io.Writer, log *slog.Logger) int {
	fmt.Fprintf(w, "dry run of %s: nothing is stopped, written or removed\n", cfg.Name)
	failed := !dryUnits(ctx, cfg, sd, w)
	if cfg.Backup.PreBackup != "" {
		fmt.Fprintf(w, "pre-backup hook would run first (not run now)\n")
	}
	size, err := dataSize(cfg.DataPaths)
	fmt.Fprintf(w, "data\n  %d path(s), %s (sizes walked, no file read)\n", len(cfg.DataPaths), notify.HumanBytes(size))
	if err != nil {
		fmt.Fprintf(w, "  error: %v\n", err)
		failed = true
	}
	fmt.Fprintf(w, "  estimated archive %s\n", estimateFromLastRun(cfg, size))
	key, keyErr := loadSigningKey(cfg, false)
	ok, bad := dryDestinations(ctx, cfg, s, size, w, log)
	if ok == 0 {
		failed = true
	}
	if keyErr != nil {
		fmt.Fprintf(w, "signing key: %v (a run creates it; nothing is trusted for pruning until then)\n", keyErr)
	}
	dryPrune(ctx, cfg, key, w, log)
	switch {
	case failed:
		fmt.Fprintln(w, "a run now would fail before stopping anything")
		return ExitFailed
	case bad > 0:
		fmt.Fprintln(w, "a run now would be partial: some destinations would be left out")
		return ExitPartial
	}
	return ExitOK
}

// estimateFromLastRun estimates the archive from the data size and the
// compression ratio of the last recorded run (last-run.json), else says
// the data size is the upper bound.
func estimateFromLastRun(cfg *config.Config, size int64) string {
	rec, err := readLastRun(cfg.Backup.StateDirectory)
	if err != nil || rec.WalkedBytes <= 0 || rec.SizeBytes <= 0 {
		return fmt.Sprintf("at most about %s (the data size; no earlier ratio recorded)", notify.HumanBytes(size))
	}
	ratio := float64(rec.SizeBytes) / float64(rec.WalkedBytes)
	return fmt.Sprintf("about %s (the data size × %.2f, the ratio of the last run)", notify.HumanBytes(int64(float64(size)*ratio)), ratio)
}

// dryUnits prints which units a run would stop; false when a unit's state
// cannot be read (the run would fail there).
func dryUnits(ctx context.Context, cfg *config.Config, sd Systemd, w io.Writer) bool {
	fmt.Fprintln(w, "units")
	if len(cfg.ServiceName) == 0 {
		fmt.Fprintln(w, "  none configured: nothing is stopped")
	}
	ok := true
	for _, u := range cfg.ServiceName {
		state, err := sd.ActiveState(ctx, u)
		switch {
		case err != nil:
			fmt.Fprintf(w, "  %s: error: %v\n", u, err)
			ok = false
		case unitRunning(state):
			fmt.Fprintf(w, "  %s: %s, would be stopped and started again\n", u, state)
		default:
			fmt.Fprintf(w, "  %s: %s, left alone\n", u, state)
		}
	}
	if h := cfg.Backup.HealthCheck; h != nil {
		fmt.Fprintf(w, "  then health check %s (up to %ds)\n", describeProbe(h), h.TimeoutSecOrDefault())
	}
	return ok
}

// dryDestinations prints each destination's preflight result and the
// estimated archive size there; it returns how many would be written and
// how many would fail.
func dryDestinations(ctx context.Context, cfg *config.Config, s *seams, size int64, w io.Writer, log *slog.Logger) (ok, bad int) {
	fmt.Fprintln(w, "destinations")
	for _, dir := range cfg.Backup.Paths {
		optional := cfg.Backup.IsOptional(dir)
		store, err := openStore(cfg, dir, optional, owner{uid: -1, gid: -1}, s, log)
		var note string
		skip := false
		if err == nil {
			defer closeStore(store)
			skip, note, err = dryPrepare(ctx, s, store, dir, optional)
		}
		switch {
		case err != nil:
			fmt.Fprintf(w, "  %s: would fail: %v\n", dir, err)
			bad++
			continue
		case skip:
			fmt.Fprintf(w, "  %s: would be skipped (%s)\n", dir, note)
			continue
		}
		est := size
		if note != "would be created" {
			est = estimateArchiveSize(ctx, store, size, cfg.Backup.Format)
		}
		avail, _, err := store.FreeSpace(ctx)
		if err == nil && avail != unboundedSpace && uint64(est) > avail {
			fmt.Fprintf(w, "  %s: would fail: estimated archive %s, only %s free\n", dir, notify.HumanBytes(est), notify.HumanBytes(int64(avail)))
			bad++
			continue
		}
		room := ""
		if err == nil && avail != unboundedSpace {
			room = fmt.Sprintf(", %s free, the run wants %s", notify.HumanBytes(int64(avail)), notify.HumanBytes(est))
		}
		fmt.Fprintf(w, "  %s: ok (%s%s)\n", dir, note, room)
		ok++
	}
	return ok, bad
}

// dryPrepare is Prepare without side effects. A local directory: the
// mount checks of prepareDestination, then access(2) for write permission
// instead of a probe file, and "would be created" for a missing required
// one. A remote store: listing the service's archives proves the address
// and the credentials; write access is not probed.
func dryPrepare(ctx context.Context, s *seams, store Destination, dir string, optional bool) (skip bool, note string, err error) {
	if config.IsRemote(dir) {
		if _, err := store.List(ctx); err != nil {
			return false, "", err
		}
		return false, "reachable, archives listed; write access not probed in a dry run", nil
	}
	mt, err := readMountTable(s.mountinfoPath, s.fstabPath)
	if err != nil {
		return false, "", err
	}
	if mp, down := mt.unmountedAbove(nearestExisting(dir)); down {
		if optional {
			return true, "optional, " + mp + " not mounted", nil
		}
		return false, "", fmt.Errorf("%s is a mount point in %s but nothing is mounted there", mp, mt.fstab)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist) && optional:
		return true, "optional, missing", nil
	case errors.Is(err, os.ErrNotExist):
		if parent := nearestExisting(dir); mt.bareMountPoint(parent) {
			return false, "", fmt.Errorf("does not exist, and %s is an empty directory, not a mount point", parent)
		}
		return false, "would be created", nil
	case err != nil:
		return false, "", err
	case !fi.IsDir():
		return false, "", errors.New("not a directory")
	case optional && mt.bareMountPoint(dir):
		return true, "optional, an empty directory, not a mount point", nil
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return false, "", fmt.Errorf("not writable: %w", err)
	}
	return false, "writable", nil
}

// dryPrune prints what retention would remove from each destination now
// (pruneDir in dry-run mode: it reads archives to check them, removes
// nothing). The new archive of a real run counts too, so a real run may
// remove one more.
func dryPrune(ctx context.Context, cfg *config.Config, key *hostkey.Key, w io.Writer, log *slog.Logger) {
	policy := retentionPolicy(cfg)
	fmt.Fprintf(w, "prune (%s; as of now, before the new archive)\n", policy)
	memo := loadMemoReadOnly(cfg.Backup.StateDirectory, cfg.Name, log)
	for _, dir := range cfg.Backup.Paths {
		if _, err := os.Stat(dir); !config.IsRemote(dir) && err != nil {
			fmt.Fprintf(w, "  %s: nothing there\n", dir)
			continue
		}
		store, err := openForReading(cfg, dir, log)
		if err != nil {
			fmt.Fprintf(w, "  %s: error: %v\n", dir, err)
			continue
		}
		res, err := pruneDir(ctx, key, store, config.ArchiveExt(cfg.Backup.Format), policy, nil, time.Now(), true, memo, log)
		closeStore(store)
		if err != nil {
			fmt.Fprintf(w, "  %s: error: %v\n", dir, err)
			continue
		}
		fmt.Fprintf(w, "  %s: %d kept, %d would be removed\n", dir, len(res.kept), len(res.removed))
		for _, a := range res.removed {
			fmt.Fprintf(w, "    would remove %s\n", a.Name)
		}
	}
}
