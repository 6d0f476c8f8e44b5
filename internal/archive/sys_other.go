//go:build unix && !linux

package archive

import (
	"os"
	"syscall"
	"time"
)

// futimes sets the mtime of an open file (portable fallback: microseconds).
func futimes(fd uintptr, mtime time.Time) error {
	tv := syscall.NsecToTimeval(mtime.UnixNano())
	return syscall.Futimes(int(fd), []syscall.Timeval{tv, tv})
}

// lutimes: the portable fallback cannot avoid following symlinks, so it only
// handles non-symlinks and leaves symlink times alone.
func lutimes(path string, mtime time.Time) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil
	}
	return os.Chtimes(path, mtime, mtime)
}

func setPipeSize(fd uintptr, size int) {}
