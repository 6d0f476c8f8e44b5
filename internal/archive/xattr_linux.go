//go:build linux

package archive

import (
	"syscall"
)

// setxattrFd sets one extended attribute on an open file or directory (the
// restore side's name for fsetxattr; xattr_other.go stubs it elsewhere).
func setxattrFd(fd uintptr, name string, value []byte) error {
	return fsetxattr(int(fd), name, value)
}

// mknod creates a device node or fifo (kind as in xentry.special).
func mknod(path string, kind specialKind, perm uint32, major, minor int64) error {
	mode := perm
	switch kind {
	case specialChar:
		mode |= syscall.S_IFCHR
	case specialBlock:
		mode |= syscall.S_IFBLK
	default:
		mode |= syscall.S_IFIFO
	}
	ma, mi := uint64(major), uint64(minor)
	dev := (ma&0xfffff000)<<32 | (ma&0xfff)<<8 | (mi&0xffffff00)<<12 | mi&0xff
	return syscall.Mknod(path, mode, int(dev))
}
