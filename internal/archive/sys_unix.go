//go:build unix

package archive

import (
	"io/fs"
	"syscall"
)

type sysInfo struct {
	dev, ino, nlink uint64
	uid, gid        int
	ok              bool
}

func statSys(fi fs.FileInfo) sysInfo {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return sysInfo{uid: -1, gid: -1}
	}
	return sysInfo{dev: uint64(st.Dev), ino: uint64(st.Ino), nlink: uint64(st.Nlink), uid: int(st.Uid), gid: int(st.Gid), ok: true}
}

const (
	oNoFollow  = syscall.O_NOFOLLOW
	oNonBlock  = syscall.O_NONBLOCK
	oDirectory = syscall.O_DIRECTORY
)

// fstatFd is statSys of an open descriptor, plus its permission and
// special bits (st_mode & 07777).
func fstatFd(fd int) (sysInfo, uint32, error) {
	var st syscall.Stat_t
	if err := ignoringEINTR(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		return sysInfo{}, 0, err
	}
	return sysInfo{dev: uint64(st.Dev), ino: uint64(st.Ino), nlink: uint64(st.Nlink), uid: int(st.Uid), gid: int(st.Gid), ok: true},
		uint32(st.Mode) & 0o7777, nil
}

// rawFile writes to a descriptor with plain system calls: no poller
// registration and no fcntl as os.NewFile would make per file.
type rawFile int

func (f rawFile) Write(b []byte) (int, error) { return writeFull(int(f), b) }

func (f rawFile) WriteAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := syscall.Pwrite(int(f), b[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, syscall.EIO
		}
		n += m
	}
	return n, nil
}

func (f rawFile) Truncate(size int64) error {
	return ignoringEINTR(func() error { return syscall.Ftruncate(int(f), size) })
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != syscall.EINTR {
			return err
		}
	}
}
