//go:build linux

package archive

import (
	"syscall"
	"unsafe"
)

// setxattrFd sets one extended attribute on an open file or directory.
func setxattrFd(fd uintptr, name string, value []byte) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	var v unsafe.Pointer
	if len(value) > 0 {
		v = unsafe.Pointer(&value[0])
	}
	_, _, e := syscall.Syscall6(syscall.SYS_FSETXATTR, fd, uintptr(unsafe.Pointer(p)), uintptr(v), uintptr(len(value)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
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
