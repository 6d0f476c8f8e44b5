package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
	"github.com/hashicorp/go-multierror"
)

// formatSizeFactor scales the data size into an estimate of the archive
// size. It is 1.0 for every format on purpose: compression usually shrinks
// the data, but already-compressed data (media, databases with compressed
// pages) does not shrink, and a wrong guess here means a failed run after
// downtime rather than before it.
var formatSizeFactor = map[string]float64{
	"tar.gz": 1.0, "tar.xz": 1.0, "tar.bz2": 1.0, "tar.zst": 1.0, "zip": 1.0,
}

// perFileOverhead approximates the archive header bytes per entry (a tar
// header is 512 bytes, plus padding of the last block).
const perFileOverhead = 1024

// dataSize walks the data paths cheaply (no reads) and returns the total
// size of regular files plus header overhead. A missing data path is an
// error: archiving it would fail after the units were stopped.
func dataSize(paths []string) (int64, error) {
	var total int64
	var errs *multierror.Error
	for _, root := range paths {
		if _, err := os.Lstat(root); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("data path %s: %w", root, err))
			continue
		}
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				// Unreadable subdirectories are the archiver's business; the
				// estimate just misses them.
				return nil
			}
			total += perFileOverhead
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
				}
			}
			return nil
		})
	}
	return total, errs.ErrorOrNil()
}

// estimateArchiveSize is the free space a destination must have before the
// units are stopped: the smaller of
//   - the data size times formatSizeFactor, and
//   - the newest existing archive of this service in that destination plus
//     10% (the previous archive is the best predictor, and is usually far
//     smaller than the raw data).
//
// Existing archives are not counted as freed: pruning happens only after the
// new archive is safely written.
func estimateArchiveSize(ctx context.Context, store Destination, dataBytes int64, format string) int64 {
	factor, ok := formatSizeFactor[format]
	if !ok {
		factor = 1.0
	}
	est := int64(float64(dataBytes) * factor)
	archives, err := listFormat(ctx, store, config.ArchiveExt(format))
	if err == nil && len(archives) > 0 {
		if r, err := store.Open(ctx, archives[0].Name); err == nil {
			est = min(est, r.Size()+r.Size()/10)
			r.Close()
		}
	}
	return est
}

// prepareDestination makes sure dir is usable: present (see mounts.go for
// when a destination counts as present, and when a missing one is
// created, 0750), a directory, and writable (by creating and removing a
// private probe file). It reports skip=true for an optional destination
// that is not there; it never creates one.
func prepareDestination(s *seams, dir, name string, optional bool, log *slog.Logger) (skip bool, err error) {
	mt, err := readMountTable(s.mountinfoPath, s.fstabPath)
	if err != nil {
		return false, fmt.Errorf("destination %s: %w", dir, err)
	}
	if mp, ok := mt.unmountedAbove(nearestExisting(dir)); ok {
		if optional {
			log.Warn("optional destination not mounted; skipping it", "destination", dir, "mount_point", mp)
			return true, nil
		}
		return false, fmt.Errorf("destination %s: %s is a mount point in %s but nothing is mounted there; mount it", dir, mp, mt.fstab)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist) && optional:
		// An optional destination is typically a removable disk's mount
		// point; creating it would write the backup to the root file system.
		log.Warn("optional destination missing; skipping it", "destination", dir)
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		if parent := nearestExisting(dir); mt.bareMountPoint(parent) {
			return false, fmt.Errorf("destination %s does not exist, and %s is an empty directory, not a mount point: "+
				"if a disk belongs there, mount it; otherwise create %s by hand", dir, parent, dir)
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return false, fmt.Errorf("destination %s: create: %w", dir, err)
		}
		fi, err = os.Stat(dir)
		if err != nil {
			return false, fmt.Errorf("destination %s: %w", dir, err)
		}
	case err != nil:
		return false, fmt.Errorf("destination %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("destination %s: not a directory", dir)
	}
	if optional && mt.bareMountPoint(dir) {
		log.Warn("optional destination is an empty directory, not a mount point: taken for an unmounted disk and skipped "+
			"(put a file in it if it is meant to be a plain directory)", "destination", dir)
		return true, nil
	}
	probe := filepath.Join(dir, "."+name+"-probe-"+randomSuffix())
	f, err := os.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("destination %s: not writable: %w", dir, err)
	}
	f.Close()
	if err := os.Remove(probe); err != nil {
		return false, fmt.Errorf("destination %s: remove probe file: %w", dir, err)
	}
	return false, nil
}

// checkBeforeStop checks what the run would otherwise trip over after
// stopping the service: the whole config (a Runner may be given one that
// no check-config has seen), the archive owner, and the data paths.
func (rn *run) checkBeforeStop() *multierror.Error {
	var errs *multierror.Error
	if err := rn.cfg.Validate(); err != nil {
		errs = multierror.Append(errs, err)
	}
	own, err := lookupOwner(rn.cfg.User, rn.cfg.Group)
	if err != nil {
		errs = multierror.Append(errs, fmt.Errorf("archive owner: %w", err))
	}
	rn.owner = own
	// A data path reached through a symlink that the service user could
	// have made is refused (archive's one rule, which the walk applies).
	if err := archive.CheckDataPaths(rn.cfg.DataPaths); err != nil {
		errs = multierror.Append(errs, err)
	} else if err := checkDataPaths(rn.cfg.DataPaths); err != nil {
		errs = multierror.Append(errs, err)
	}
	return errs
}

// checkDataPaths: every data path exists, is a directory or a regular file
// and not a symlink (the walk does not follow one: the service's user
// could point it anywhere), and no two are the same directory or nested,
// also through symlinked parents or a bind mount of the same directory.
func checkDataPaths(paths []string) error {
	var errs *multierror.Error
	type seen struct {
		path, real string
		id         fileID
	}
	var ok []seen
	for _, p := range paths {
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			errs = multierror.Append(errs, fmt.Errorf("data path %s: %w", p, err))
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			// archive.CheckDataPaths has accepted it: only root can have
			// made it (systemd's DynamicUser links, an admin's move).
			if fi, err = os.Stat(p); err != nil {
				errs = multierror.Append(errs, fmt.Errorf("data path %s: %w", p, err))
				continue
			}
		}
		switch {
		case !fi.IsDir() && !fi.Mode().IsRegular():
			errs = multierror.Append(errs, fmt.Errorf("data path %s is not a directory or regular file (%s)", p, fi.Mode().Type()))
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("data path %s: %w", p, err))
			continue
		}
		cur := seen{p, real, idOf(fi)}
		for _, o := range ok {
			switch {
			case o.id == cur.id:
				errs = multierror.Append(errs, fmt.Errorf("data paths %s and %s are the same directory; list it once", o.path, p))
			case within(cur.real, o.real) || within(o.real, cur.real):
				errs = multierror.Append(errs, fmt.Errorf("data paths %s and %s are nested (%s, %s); list only the outer one", o.path, p, o.real, cur.real))
			}
		}
		ok = append(ok, cur)
	}
	return errs.ErrorOrNil()
}

// fileID identifies a file by device and inode.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(st.Dev), uint64(st.Ino)}
	}
	return fileID{}
}

// within reports whether p lies strictly below dir.
func within(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// sameDestinations reports destinations that are one directory under two
// names (a symlink, a bind mount): each archive would be written twice
// over itself, and every run would end partial. Two remote entries that
// name one place (config.Destination.Place: host case, default port, ...)
// are refused when the config is loaded, with the same "list it once", by
// config's rule that backupgen validate applies too; a remote has no
// device and inode to compare here.
func sameDestinations(dests []*destination) error {
	var errs *multierror.Error
	first := map[fileID]string{}
	for _, d := range dests {
		fi, err := os.Stat(d.dir)
		if err != nil {
			continue // reported by the destination's own checks
		}
		id := idOf(fi)
		if other, dup := first[id]; dup {
			errs = multierror.Append(errs, fmt.Errorf("destinations %s and %s are the same directory (a symlink or bind mount); list it once", other, d.dir))
			continue
		}
		first[id] = d.dir
	}
	return errs.ErrorOrNil()
}

// freeSpace returns the bytes available to unprivileged users in dir's
// file system (root's reserved blocks are deliberately not counted) and the
// device id, so that destinations sharing a file system are summed.
func freeSpace(dir string) (avail uint64, dev uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if dev, err = pathDevice(dir); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), dev, nil
}

// removeStaleTemps removes temp and probe files of this service left in dir
// by a killed run, and the directory of a reflink capture
// (.NAME-TS.capture.tmp-RANDOM) with everything in it. The service lock is
// held, so none of them can belong to a run in progress. Symlinks and
// directories with any other name are left alone.
func removeStaleTemps(dir, name string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	re, captureRE := staleTempRE(name), captureDirRE(name)
	var errs *multierror.Error
	for _, e := range entries {
		if !re.MatchString(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() && captureRE.MatchString(e.Name()) {
			if err := archive.RemoveTree(p); err != nil {
				errs = multierror.Append(errs, err)
				continue
			}
			log.Warn("removed capture directory left by an interrupted run", "destination", dir, "capture", e.Name())
			continue
		}
		if !retention.IsRegularFile(p) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = multierror.Append(errs, err)
			continue
		}
		log.Warn("removed temp file left by an interrupted run", "destination", dir, "archive", e.Name())
	}
	return errs.ErrorOrNil()
}
