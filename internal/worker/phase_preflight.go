package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
	"github.com/backupgen/backupgen/internal/retention"
	"github.com/hashicorp/go-multierror"
)

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
	if rn.recipients, err = loadRecipients(cfg); err != nil {
		errs = multierror.Append(errs, err)
	}
	size, err := dataSize(cfg.DataPaths)
	if err != nil && errs == nil {
		errs = multierror.Append(errs, err)
	}
	rn.openDestinations(ctx)
	if err := sameDestinations(rn.usableDests()); err != nil {
		errs = multierror.Append(errs, err)
	}
	room := rn.checkRoom(ctx, size)
	if cfg.Backup.CaptureFirst && errs == nil {
		if err := rn.pickStaging(ctx, size, room); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	usable := rn.usableDests()
	if len(usable) == 0 && errs == nil {
		errs = multierror.Append(errs, rn.noDestination())
	}
	if errs != nil {
		rn.fatal(fmt.Errorf("preflight failed, nothing was stopped:\n%w", listErr(errs)))
		return false
	}
	rn.base = rn.pickName(ctx, usable)
	rn.dataSize = size
	rn.log.Info("preflight ok", keyArchive, rn.base, "data_size", notify.HumanBytes(size), "destinations", len(usable))
	return ctx.Err() == nil
}

// failDest marks d failed in preflight; the run goes on with the others.
func (rn *run) failDest(d *destination, err error) {
	d.fail(err)
	rn.log.Error("destination unusable; backing up to the others", keyDestination, d.dir, "error", err)
}

// openDestinations makes a destination of every configured path (a local
// directory) and checks that it is there and writable; an optional one
// that is absent is skipped. What a killed run left uncommitted is removed
// from each usable one.
func (rn *run) openDestinations(ctx context.Context) {
	cfg := rn.cfg
	for _, dir := range cfg.Backup.Paths {
		d := &destination{dir: dir, name: cfg.Name, optional: cfg.Backup.IsOptional(dir)}
		rn.dests = append(rn.dests, d)
		var err error
		if d.store, err = openStore(cfg, dir, d.optional, rn.owner, &rn.seams, rn.log); err != nil {
			rn.failDest(d, err)
			continue
		}
		skip, err := d.store.Prepare(ctx)
		if skip {
			d.state = destSkipped
			continue
		}
		if err != nil {
			rn.failDest(d, err)
			continue
		}
		if err := d.store.CleanStale(ctx); err != nil {
			rn.log.Warn("cannot remove stale temp files", keyDestination, dir, "error", err)
		}
	}
}

// fsNeed is the room the archives need in one store (file system).
type fsNeed struct {
	avail uint64
	need  int64
	dests []*destination
}

// checkRoom fails every destination whose file system has less room than
// the archives it will receive: free space is summed per file system, so
// two destinations on one disk need room for two copies. It returns the
// need per device, for pickStaging.
func (rn *run) checkRoom(ctx context.Context, size int64) map[string]*fsNeed {
	byDev := map[string]*fsNeed{}
	var devs []string
	for _, d := range rn.usableDests() {
		avail, dev, err := d.store.FreeSpace(ctx)
		if err != nil {
			rn.failDest(d, err)
			continue
		}
		if dev == "" {
			dev = "(" + d.dir + ")" // shares its room with no other
		}
		n := byDev[dev]
		if n == nil {
			n = &fsNeed{avail: avail}
			byDev[dev] = n
			devs = append(devs, dev)
		}
		n.need += estimateArchiveSize(ctx, d.store, size, rn.cfg.Backup.Format)
		n.dests = append(n.dests, d)
	}
	for _, dev := range devs {
		n := byDev[dev]
		if uint64(n.need) <= n.avail {
			continue
		}
		dirs := make([]string, len(n.dests))
		for i, d := range n.dests {
			dirs[i] = d.dir
		}
		err := fmt.Errorf("%s free on the file system of %s, the archive needs about %s",
			notify.HumanBytes(int64(n.avail)), strings.Join(dirs, " and "), notify.HumanBytes(n.need))
		for _, d := range n.dests {
			rn.failDest(d, err)
		}
	}
	return byDev
}

// pickStaging chooses where the capture goes (captureFirst): the first
// destination whose file system has room for a tar capture on top of the
// archive(s) it will receive, preferably one on the data's file system (a
// reflink copy is tried there; the tar capture is its fallback, so the
// room is needed either way). None: the run fails before anything is
// stopped.
//
// The capture is a local file or directory, so only a local destination
// can stage it. With none usable (every destination remote, or the local
// ones absent or failed) the run fails before anything is stopped, naming
// backup.captureFirst: the state directory is not used instead, since
// nothing sizes it for a copy of the data, and filling it would break the
// lock and state file of every later run.
func (rn *run) pickStaging(ctx context.Context, size int64, room map[string]*fsNeed) error {
	locals := 0
	for _, d := range rn.usableDests() {
		if _, local := d.store.(*localDir); !local {
			continue
		}
		locals++
		if avail, dev, err := d.store.FreeSpace(ctx); err == nil && room[dev] != nil &&
			uint64(room[dev].need)+uint64(size) <= avail {
			if rn.staging == nil {
				rn.staging = d
			}
			if sameFileSystem(d.dir, rn.cfg.DataPaths) {
				rn.staging, rn.tryReflink = d, true
				break
			}
		}
	}
	if locals == 0 {
		var usable []string
		for _, d := range rn.usableDests() {
			usable = append(usable, d.dir)
		}
		if err := config.CaptureFirstStaging(usable); err != nil {
			return err
		}
	}
	if rn.staging == nil && len(rn.usableDests()) > 0 {
		return fmt.Errorf("captureFirst: no destination has room for the uncompressed capture "+
			"(about %s on top of the archive); free space or turn captureFirst off", notify.HumanBytes(size))
	}
	return nil
}

// noDestination lists why no destination is left. The destinations'
// errors are reported here, not again by allErrors.
func (rn *run) noDestination() error {
	errs := multierror.Append(nil, errors.New("no destination available"))
	for _, d := range rn.dests {
		if d.err != nil {
			errs = multierror.Append(errs, fmt.Errorf("destination %s: %w", d.dir, d.err))
		} else if d.state == destSkipped {
			errs = multierror.Append(errs, fmt.Errorf("destination %s: optional and missing", d.dir))
		}
	}
	for _, d := range rn.dests {
		d.err = nil
	}
	return errs
}

// pickName returns NAME-TS.EXT for now, moved on by a second while that name
// exists in a destination (two runs in one second must not collide). Every
// destination is asked through the Destination interface (takenNames): a
// remote Commit would refuse an existing name too, but only after the
// units were stopped and the archive uploaded, and that destination would
// end the run partial.
func (rn *run) pickName(ctx context.Context, usable []*destination) string {
	taken := map[string]bool{}
	for _, d := range usable {
		names, err := takenNames(ctx, d.store)
		if err != nil {
			// Its Commit still refuses an existing name; the run goes on.
			rn.log.Warn("cannot list the destination to pick a free archive name", keyDestination, d.dir, "error", err)
		}
		for n := range names {
			taken[n] = true
		}
	}
	t := rn.Now().UTC().Truncate(time.Second)
	ext := rn.cfg.Backup.RunExt()
	for i := 0; ; i++ {
		base := retention.FileName(rn.cfg.Name, ext, t)
		if !taken[base] || i >= 60 {
			return base
		}
		t = t.Add(time.Second)
	}
}

// takenNames returns the names a new archive in store must not take: its
// committed archives (List, in every format), and for a local directory
// whatever else sits under an archive-like name (a file List refuses, a
// symlink: link-to-final would fail on it).
func takenNames(ctx context.Context, store Destination) (map[string]bool, error) {
	stored, err := store.List(ctx)
	names := map[string]bool{}
	for _, a := range stored {
		names[a.Name] = true
	}
	if l, local := store.(*localDir); local {
		entries, _ := os.ReadDir(l.dir)
		for _, e := range entries {
			names[e.Name()] = true
		}
	}
	return names, err
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
