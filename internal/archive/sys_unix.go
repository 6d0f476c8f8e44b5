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
