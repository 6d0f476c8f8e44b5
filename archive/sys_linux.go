//go:build linux

package archive

import (
	"syscall"
	"time"
	"unsafe"
)

const atSymlinkNoFollow = 0x100
const atFdCwd = -100

func timespecs(mtime time.Time) [2]syscall.Timespec {
	ts := syscall.NsecToTimespec(mtime.UnixNano())
	// atime := mtime (tar does the same when no atime is stored)
	return [2]syscall.Timespec{ts, ts}
}

// futimes sets the mtime (and atime) of an open file.
func futimes(fd uintptr, mtime time.Time) error {
	ts := timespecs(mtime)
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, fd, 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// lutimes sets the mtime of path without following a final symlink.
func lutimes(path string, mtime time.Time) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	ts := timespecs(mtime)
	fd := atFdCwd
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&ts[0])), atSymlinkNoFollow, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// setPipeSize enlarges a pipe's buffer (F_SETPIPE_SZ) so the native
// compressor and the tar writer exchange data in fewer, larger steps. Best
// effort: errors (e.g. above /proc/sys/fs/pipe-max-size) are ignored.
func setPipeSize(fd uintptr, size int) {
	const fSetPipeSz = 1031
	syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, uintptr(size))
}
