package archive

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// copyFileRange copies at most n bytes at off of in to out's file offset
// with copy_file_range(2), retried on EINTR.
func copyFileRange(in int, off int64, out int, n int64) (int64, error) {
	for {
		m, err := unix.CopyFileRange(in, &off, out, nil, int(n), 0)
		if err == syscall.EINTR {
			continue
		}
		return int64(m), err
	}
}
