//go:build linux && (amd64 || arm64 || riscv64 || ppc64 || ppc64le || s390x || mips64 || mips64le)

package archive

import (
	"syscall"
	"unsafe"
)

// fstatat is fstatat(2) with AT_SYMLINK_NOFOLLOW, retried on EINTR.
func fstatat(dir int, dirPath, name string, st *syscall.Stat_t) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	for {
		_, _, e := syscall.Syscall6(sysFstatat, uintptr(dir), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(st)), atSymlinkNoFollow, 0, 0)
		if e != syscall.EINTR {
			return errnoErr(e)
		}
	}
}
