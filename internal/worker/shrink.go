package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
	"github.com/backupgen/backupgen/internal/retention"
	"golang.org/x/sys/unix"
)

// The shrink guard. A data path that is suddenly empty (a disk that failed
// to mount) or an archive far smaller than the last one is far more likely
// a fault than the service's real state. Such an archive is still
// committed (it may be the truth, and it costs one slot), but pruning is
// skipped and the run ends with a warning (ExitWarning), so that
// retentionSnapshots bad runs cannot push every real backup out.

// emptyData says why the data counts as empty ("" when it does not): the
// archive holds no file, symlink or hard link, or a data path that is a
// directory has no entries at all.
func (rn *run) emptyData() string {
	st := rn.stats
	if st.Files+st.Symlinks+st.Hardlinks == 0 {
		return "the data paths hold no files at all (is a disk not mounted?)"
	}
	for _, p := range rn.cfg.DataPaths {
		if isEmptyDir(p) {
			return fmt.Sprintf("data path %s is empty (is a disk not mounted?)", p)
		}
	}
	return ""
}

// isEmptyDir reports whether p is a directory with no entries. O_DIRECTORY
// and O_NONBLOCK: whatever the service user put there instead (a FIFO)
// cannot block the run.
func isEmptyDir(p string) bool {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// shrunk compares the archive just written to d with the previous trusted
// archive of the service there (same format, older than this one): why is
// set when the new one is smaller than minSizeRatio times it. prev names
// that archive (verified just now, so pruning need not read it again).
func (rn *run) shrunk(ctx context.Context, d *destination) (why, prev string) {
	ratio := rn.cfg.Backup.MinSizeRatioOrDefault()
	if ratio <= 0 {
		return "", ""
	}
	archives, err := listFormat(ctx, d.store, config.ArchiveExt(rn.cfg.Backup.Format))
	if err != nil {
		return "", ""
	}
	own, _ := retention.ParseName(rn.cfg.Name, rn.cfg.Backup.RunExt(), rn.base)
	for _, a := range archives {
		if !a.Time.Before(own) || ctx.Err() != nil {
			continue
		}
		c, ok := checkKept(ctx, rn.key, d.store, a.Name, rn.memo)
		if !ok {
			continue
		}
		if float64(d.size) < ratio*float64(c.size) {
			return fmt.Sprintf("the archive (%s) is smaller than %g × the previous verified archive %s (%s)",
				notify.HumanBytes(d.size), ratio, a.Name, notify.HumanBytes(c.size)), a.Name
		}
		return "", a.Name
	}
	return "", ""
}

// countArchives counts the service's archives in d (for the metrics) when
// pruning was skipped.
func (rn *run) countArchives(ctx context.Context, d *destination) int {
	as, err := listFormat(ctx, d.store, config.ArchiveExt(rn.cfg.Backup.Format))
	if err != nil {
		return 0
	}
	return len(as)
}
