//go:build !linux

package archive

import "errors"

var errNoXattr = errors.New("extended attributes and device nodes are only restored on Linux")

func setxattrFd(fd uintptr, name string, value []byte) error { return errNoXattr }

func mknod(path string, kind specialKind, perm uint32, major, minor int64) error { return errNoXattr }
