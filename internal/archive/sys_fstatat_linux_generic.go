//go:build linux && !(amd64 || arm64 || riscv64 || ppc64 || ppc64le || s390x || mips64 || mips64le)

package archive

import "syscall"

// fstatat without a raw fstatat(2) whose Stat_t matches syscall.Stat_t
// (32-bit architectures use fstatat64): an O_PATH descriptor of name, not
// following a symlink, and fstat(2) on it.
func fstatat(dir int, dirPath, name string, st *syscall.Stat_t) error {
	const oPath = 0x200000
	fd, err := openat(dir, dirPath, name, oPath|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Fstat(fd, st)
}
