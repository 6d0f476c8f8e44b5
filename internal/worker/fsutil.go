package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/hashicorp/go-multierror"
	"golang.org/x/sys/unix"
)

// randomSuffix returns 8 random hex characters for private temp names.
func randomSuffix() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// syncDir fsyncs a directory so a rename or unlink in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		// EINVAL: the file system does not support fsync on directories.
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// listErr is errs as the user sees a list (one line each, as
// config.Validate's), or nil when empty. Every list of errors in the worker
// is a go-multierror made into an error here or with config.ListFormat.
func listErr(errs *multierror.Error) error {
	if errs == nil {
		return nil
	}
	errs.ErrorFormat = config.ListFormat
	return errs
}

// owner is a resolved uid/gid pair; -1 means "leave as is".
type owner struct {
	uid, gid int
}

// lookupOwner resolves user and group names (or numeric ids) with os/user.
func lookupOwner(userName, groupName string) (owner, error) {
	o := owner{uid: -1, gid: -1}
	var errs *multierror.Error
	if userName != "" {
		if id, err := strconv.Atoi(userName); err == nil && id >= 0 {
			o.uid = id
		} else if u, err := user.Lookup(userName); err == nil {
			o.uid, _ = strconv.Atoi(u.Uid)
		} else {
			errs = multierror.Append(errs, fmt.Errorf("user %q: %w", userName, err))
		}
	}
	if groupName != "" {
		if id, err := strconv.Atoi(groupName); err == nil && id >= 0 {
			o.gid = id
		} else if g, err := user.LookupGroup(groupName); err == nil {
			o.gid, _ = strconv.Atoi(g.Gid)
		} else {
			errs = multierror.Append(errs, fmt.Errorf("group %q: %w", groupName, err))
		}
	}
	return o, listErr(errs)
}

// setOwnerMode applies owner and mode to an open file. chown is skipped when
// the file already has the wanted ids, so an unprivileged worker writing its
// own archives does not need CAP_CHOWN.
func setOwnerMode(f *os.File, o owner, mode os.FileMode) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid := o.uid, o.gid
		if uid == int(st.Uid) {
			uid = -1
		}
		if gid == int(st.Gid) {
			gid = -1
		}
		if uid != -1 || gid != -1 {
			if err := f.Chown(uid, gid); err != nil {
				return err
			}
		}
	}
	return f.Chmod(mode)
}

// linkFile gives the open file f the name final in directory dirf without
// ever replacing an existing file (linkat fails with EEXIST where rename
// would overwrite). It links the descriptor, not the temp name tmp, so
// whatever the destination's owner did to tmp meanwhile, the committed
// file is the one the worker wrote: linkat(AT_EMPTY_PATH) where the worker
// has CAP_DAC_READ_SEARCH (root), else through /proc/self/fd. A file
// system without hard links gets an exclusive rename of tmp
// (RENAME_NOREPLACE), then the new name is checked to be f's inode; if it
// is not, what the rename moved is not ours and is unlinked again.
func linkFile(dirf, f *os.File, tmp, final string) error {
	dfd := int(dirf.Fd())
	err := unix.Linkat(int(f.Fd()), "", dfd, final, unix.AT_EMPTY_PATH)
	if err == unix.ENOENT || err == unix.EPERM {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), dfd, final, unix.AT_SYMLINK_FOLLOW)
	}
	if err == nil {
		return nil
	}
	if err == unix.EEXIST {
		return fmt.Errorf("%s already exists; not replacing it", filepath.Join(dirf.Name(), final))
	}
	if err != unix.EPERM && err != unix.EOPNOTSUPP && err != unix.EMLINK {
		return &os.LinkError{Op: "link", Old: f.Name(), New: filepath.Join(dirf.Name(), final), Err: err}
	}
	if err := unix.Renameat2(dfd, tmp, dfd, final, unix.RENAME_NOREPLACE); err != nil {
		if err == unix.EEXIST {
			return fmt.Errorf("%s already exists; not replacing it", filepath.Join(dirf.Name(), final))
		}
		return &os.LinkError{Op: "rename", Old: f.Name(), New: filepath.Join(dirf.Name(), final), Err: err}
	}
	var want, got unix.Stat_t
	if unix.Fstat(int(f.Fd()), &want) != nil || unix.Fstatat(dfd, final, &got, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		want.Dev != got.Dev || want.Ino != got.Ino {
		unix.Unlinkat(dfd, final, 0)
		return fmt.Errorf("%s: the temp name no longer held the file written; not committed", f.Name())
	}
	return nil
}

// syncDirFile fsyncs an open directory.
func syncDirFile(d *os.File) error {
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", d.Name(), err)
	}
	return nil
}

// writeFileAtomic writes data to path via a private temp file in the same
// directory: create 0600, write, fsync, chown/chmod, rename, fsync dir. A
// reader sees the old file or the new one, never a partial one.
func writeFileAtomic(path string, data []byte, mode os.FileMode, o owner) (err error) {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+randomSuffix())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = setOwnerMode(f, o, mode); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// fileDevice returns the device number of the file system holding f.
func fileDevice(f *os.File) (uint64, bool) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Dev), true
}

// pathDevice returns the device number of the file system holding path
// (symlinks followed).
func pathDevice(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return uint64(st.Dev), nil
}

// openDir opens a destination directory for the *at calls. The configured
// path itself is the admin's (it may be a symlink to a mount); everything
// inside it is the service user's and is only reached through this
// descriptor.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// createAt creates a new private file name in dirf: O_EXCL|O_NOFOLLOW, so
// an existing name (a symlink planted by the user included) is an error,
// never followed; read-write, so it can be verified through the same
// descriptor.
func createAt(dirf *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dirf.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: filepath.Join(dirf.Name(), name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dirf.Name(), name)), nil
}

// copyAt copies bytes [off, size) from src to dst with pread/pwrite.
func copyAt(ctx context.Context, dst *os.File, src io.ReaderAt, off, size int64) error {
	buf := make([]byte, 1<<20)
	for off < size {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		n, err := src.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err == io.EOF && off < size {
			return fmt.Errorf("source ended at %d of %d bytes", off, size)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// dupFile returns an independent descriptor of f's open file (dup(2)): a
// copy reads the primary's temp file through it, whatever becomes of the
// primary's own descriptor or of the temp name.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// writeSideTemp creates name in dirf (root's, 0600) with data, fsynced, and
// returns it open for commit.
func writeSideTemp(dirf *os.File, name string, data []byte) (string, *os.File, error) {
	f, err := createAt(dirf, name)
	if err != nil {
		return "", nil, err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		unix.Unlinkat(int(dirf.Fd()), name, 0)
		return "", nil, err
	}
	return name, f, nil
}
