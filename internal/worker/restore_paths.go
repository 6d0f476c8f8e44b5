package worker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// CheckRestorePaths checks restore --path before anything is opened:
// each path is absolute and clean and lies in one of the service's data
// paths (an archive holds nothing else), and a partial restore goes to a
// --target (in place, the data path is swapped as a whole; putting one
// file back is the operator's copy from the target).
func CheckRestorePaths(cfg *config.Config, opts RestoreOptions) error {
	if len(opts.Paths) == 0 {
		return nil
	}
	if opts.Target == "" {
		return errors.New("--path restores into --target DIR only; copy what you need into place from there")
	}
	for _, p := range opts.Paths {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("--path %s: must be an absolute, clean path (e.g. %s)", strconv.Quote(p), filepath.Join(cfg.DataPaths[0], "file"))
		}
		if !underAny(p, cfg.DataPaths) {
			return fmt.Errorf("--path %s: not inside a data path of %s (%s)", strconv.Quote(p), cfg.Name, joinQuoted(cfg.DataPaths))
		}
	}
	return nil
}

// underAny reports whether p is one of roots or lies below one.
func underAny(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || within(p, r) {
			return true
		}
	}
	return false
}

func joinQuoted(l []string) string {
	s := ""
	for i, p := range l {
		if i > 0 {
			s += ", "
		}
		s += strconv.Quote(p)
	}
	return s
}

// restoredPaths are what a restore extracts: --path, else every data
// path.
func (rs *restorer) restoredPaths() []string {
	if len(rs.paths) > 0 {
		return rs.paths
	}
	return rs.cfg.DataPaths
}

// checkPathsRestored fails a --path restore when a requested path was not
// in the archive: an operator asking for a file the backup never held
// must hear so, not find an empty target. It looks inside the private
// staging directory through its descriptor, never following a symlink.
func (rs *restorer) checkPathsRestored(staging *os.File, label string) error {
	var missing []string
	for _, p := range rs.paths {
		var st unix.Stat_t
		err := unix.Fstatat(int(staging.Fd()), archive.EntryName(p), &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			missing = append(missing, p)
		} else if err != nil {
			return fmt.Errorf("checking %s in the staging directory: %w", p, err)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s holds no %s (give the path as it was on this host; without --path the whole archive is restored)", label, joinQuoted(missing))
	}
	return nil
}
