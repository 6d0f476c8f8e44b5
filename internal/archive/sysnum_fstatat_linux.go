//go:build linux && (arm64 || riscv64)

package archive

import "syscall"

const sysFstatat = syscall.SYS_FSTATAT
