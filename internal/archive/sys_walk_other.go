//go:build unix && !linux

package archive

import (
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// The descriptor-based walk (fswalk.go) needs Linux's *at(2) calls, which
// Go's syscall package does not offer elsewhere; backup-worker runs on
// Linux (systemd) only. Elsewhere the package builds, and Write, Capture
// and Clone fail with this error.

var errWalkUnsupported = fmt.Errorf("archive: walking data paths is supported on Linux only, not %s", runtime.GOOS)

const (
	atFdCwd      = -100
	seekData     = 3
	seekHole     = 4
	xattrListMax = 64 << 10
)

func fstatat(dir int, dirPath, name string, st *syscall.Stat_t) error { return errWalkUnsupported }
func openat(dir int, dirPath, name string, flags int, mode uint32) (int, error) {
	return -1, errWalkUnsupported
}
func readlinkat(dir int, dirPath, name string) (string, error) { return "", errWalkUnsupported }
func readDirNames(fd int, dirPath string, buf *[]byte) ([]string, error) {
	return nil, errWalkUnsupported
}
func flistxattr(fd int) ([]string, error)                       { return nil, nil }
func fgetxattr(fd int, name string) ([]byte, error)             { return nil, errWalkUnsupported }
func seekDataHole(fd int, off int64, whence int) (int64, error) { return 0, errWalkUnsupported }
func statMtime(st *syscall.Stat_t) time.Time                    { return time.Time{} }
func statChanged(a, b *syscall.Stat_t) bool                     { return a.Size != b.Size }
func isNoAttr(err error) bool                                   { return false }
