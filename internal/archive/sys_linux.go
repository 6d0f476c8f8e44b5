//go:build linux

package archive

import (
	"errors"
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

// ---- descriptor-relative primitives of the walk (fswalk.go) ----
//
// The walk never resolves a path string below a data path: every entry is
// reached with *at(2) calls relative to its parent directory's descriptor,
// and never through a symlink. dirPath is only used in messages here (the
// portable fallback in sys_other.go resolves it).

const (
	atEmptyPath  = 0x1000
	seekData     = 3
	seekHole     = 4
	xattrListMax = 64 << 10
)

// openat is openat(2) with O_CLOEXEC, retried on EINTR.
func openat(dir int, dirPath, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := syscall.Openat(dir, name, flags|syscall.O_CLOEXEC, mode)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// readlinkat reads the target of the symlink name in dir.
func readlinkat(dir int, dirPath, name string) (string, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return "", err
	}
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, _, e := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(dir), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf[0])), uintptr(size), 0, 0)
		if e == syscall.EINTR {
			size /= 2
			continue
		}
		if e != 0 {
			return "", e
		}
		if int(n) < size {
			return string(buf[:n]), nil
		}
	}
}

// readDirNames lists the directory open as fd (without "." and ".."). buf
// is reused between calls.
func readDirNames(fd int, dirPath string, buf *[]byte) ([]string, error) {
	if *buf == nil {
		*buf = make([]byte, 64<<10)
	}
	var names []string
	for {
		n, err := syscall.ReadDirent(fd, *buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return names, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = syscall.ParseDirent((*buf)[:n], -1, names)
	}
}

// flistxattr returns the names of the extended attributes of the open fd
// (nil when there are none or the file system has none).
func flistxattr(fd int) ([]string, error) {
	var buf [4096]byte
	b := buf[:]
	for {
		n, _, e := syscall.Syscall(syscall.SYS_FLISTXATTR, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			return splitNul(b[:n]), nil
		case syscall.EINTR:
			continue
		case syscall.ERANGE:
			if len(b) >= xattrListMax {
				return nil, e
			}
			b = make([]byte, 2*len(b))
			continue
		case syscall.ENOTSUP:
			return nil, nil
		}
		return nil, e
	}
}

// fgetxattr returns the value of the extended attribute name of fd.
func fgetxattr(fd int, name string) ([]byte, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 256)
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_FGETXATTR, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0)
		switch e {
		case 0:
			return b[:n], nil
		case syscall.EINTR:
			continue
		case syscall.ERANGE:
			if len(b) >= xattrListMax {
				return nil, e
			}
			b = make([]byte, 4*len(b))
			continue
		}
		return nil, e
	}
}

// fsetxattr sets the extended attribute name of fd.
func fsetxattr(fd int, name string, value []byte) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	var v unsafe.Pointer
	if len(value) > 0 {
		v = unsafe.Pointer(&value[0])
	}
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_FSETXATTR, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(v), uintptr(len(value)), 0, 0)
		if e != syscall.EINTR {
			return errnoErr(e)
		}
	}
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// seekDataHole is lseek(2) with SEEK_DATA or SEEK_HOLE.
func seekDataHole(fd int, off int64, whence int) (int64, error) {
	return syscall.Seek(fd, off, whence)
}

// symlinkat creates the symlink name -> target in dir.
func symlinkat(target string, dir int, name string) error {
	t, err := syscall.BytePtrFromString(target)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := syscall.Syscall(syscall.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dir), uintptr(unsafe.Pointer(n)))
	return errnoErr(e)
}

// linkat hard-links oldname in olddir as newname in newdir.
func linkat(olddir int, oldname string, newdir int, newname string) error {
	o, err := syscall.BytePtrFromString(oldname)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(newname)
	if err != nil {
		return err
	}
	_, _, e := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(olddir), uintptr(unsafe.Pointer(o)), uintptr(newdir), uintptr(unsafe.Pointer(n)), 0, 0)
	return errnoErr(e)
}

// lutimesat sets the mtime (and atime) of name in dir without following a
// symlink.
func lutimesat(dir int, name string, mtime time.Time) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	ts := timespecs(mtime)
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(dir), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&ts[0])), atSymlinkNoFollow, 0, 0)
	return errnoErr(e)
}

func statMtime(st *syscall.Stat_t) time.Time {
	return time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec))
}

// statChanged reports whether a file's size, mtime or ctime differ between
// two fstat results (GNU tar's "file changed as we read it").
func statChanged(a, b *syscall.Stat_t) bool {
	return a.Size != b.Size || a.Mtim != b.Mtim || a.Ctim != b.Ctim
}

// isNoAttr reports whether an xattr call failed because the attribute is
// gone (removed between listing and reading).
func isNoAttr(err error) bool { return errors.Is(err, syscall.ENODATA) }
