//go:build linux

package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ficlone is the FICLONE ioctl (_IOW(0x94, 9, int)): make the file dst
// share all of src's extents (a reflink copy). Btrfs, XFS (reflink=1),
// bcachefs, OCFS2 and a few others support it; no data is copied.
const ficlone = 0x40049409

// testHookFiclone, when set, replaces the FICLONE ioctl (tests).
var testHookFiclone func(dst, src uintptr) error

func ioctlFiclone(dst, src uintptr) error {
	if testHookFiclone != nil {
		return testHookFiclone(dst, src)
	}
	for {
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, dst, ficlone, src)
		switch e {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return e
	}
}

// cloneUnsupported reports whether a FICLONE error means "no reflink copy
// here" rather than a failure of this one file.
func cloneUnsupported(err error) bool {
	for _, e := range []syscall.Errno{syscall.EOPNOTSUPP, syscall.EXDEV, syscall.EINVAL, syscall.ENOTTY, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Clone makes a private copy of the data paths in dstDir in which every
// regular file is a reflink clone of the original (FICLONE: the copy shares
// the original's blocks, so it costs almost no space or time until either
// side is modified; content is never copied byte by byte). It is the fast
// capture of the capture-first mode: the data is frozen in an instant while
// the service is stopped, and WriteTree(ctx, w, CloneRoots(dstDir,
// dataPaths), opts) archives it afterwards under the original names.
//
// dstDir must not exist; it is created with mode 0700, so nothing inside
// it is reachable by other users whatever the copied modes are. Data path
// i is copied to dstDir/i (CloneRoots). The walk is Write's: opts.Exclude
// and opts.SkipDirs apply, a data path reached through a symlink follows
// Write's rule, symlinks below it are recreated (never followed), extended
// attributes and ACLs are copied, hard links are recreated as hard links
// within each data path's copy, empty directories are kept, sockets, fifos
// and devices are skipped with a warning, files that vanish are warned
// about. Every copy gets its original's owner (lchown), permission and
// special bits, and mtime (directories after their contents). A directory
// that is dstDir itself (a staging destination inside a data path) is
// skipped with a warning. Stats count what was copied (BytesRead: the
// regular files' sizes); opts.Progress is advanced per file.
//
// When a file cannot be cloned because this file system (or this pair of
// mounts) does not support it, or an owner cannot be given (not root), the
// error wraps ErrCloneUnsupported. On any error the partial copy is removed.
func Clone(ctx context.Context, dstDir string, dataPaths []string, opts Options) (st Stats, err error) {
	log := loggerOr(opts.Logger)
	wn := &warner{stats: &st, log: log}
	defer wn.finish()
	excl, err := compileExcludes(opts.Exclude)
	if err != nil {
		return st, err
	}
	if !filepath.IsAbs(dstDir) {
		return st, fmt.Errorf("archive: clone directory %q is not absolute", dstDir)
	}
	roots, err := resolveRoots(sameRoots(dataPaths), log)
	if err != nil {
		return st, err
	}
	defer closeRoots(roots)
	dstDir = filepath.Clean(dstDir)
	if err := os.Mkdir(dstDir, 0o700); err != nil {
		return st, fmt.Errorf("archive: create clone directory: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := RemoveTree(dstDir); rerr != nil {
				log.Error("archive: cannot remove the partial clone", "path", dstDir, "error", rerr)
			}
		}
	}()
	// Everything below is created through the open directory: whoever may
	// rename entries of dstDir's parent (a destination belongs to the
	// archives' owner) cannot redirect the copy by replacing dstDir.
	fd, base, self, err := openPrivateDir(dstDir, true)
	if err != nil {
		return st, err
	}
	defer syscall.Close(fd)
	c := &cloner{st: &st, wn: wn, prog: opts.Progress, euid: os.Geteuid(), root: fd}
	fw := &fsWalker{ctx: ctx, excl: excl, wn: wn, st: &st, verb: "cloning", visit: c.visit, leave: c.leave,
		skip: append(slices.Clone(opts.SkipDirs), SkipDir{Dev: self.dev, Ino: self.ino, Why: "it is the clone being written"})}
	for i := range roots {
		c.links = map[[2]uint64]string{}
		c.rootName = strconv.Itoa(i)
		c.rootPath = filepath.Join(base, c.rootName)
		err := fw.walkRoot(&roots[i])
		for _, d := range c.dirs {
			syscall.Close(d)
		}
		c.dirs = c.dirs[:0]
		if err != nil {
			return st, renameErr(err, base, dstDir)
		}
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("archive: %w", err)
	}
	return st, nil
}

// openPrivateDir opens dir (not following a symlink), checks that it is a
// directory owned by the caller — with create, one it has just created:
// made exactly 0700 now, whatever the umask; otherwise it must be 0700
// already — and returns the descriptor, the path that reaches the
// directory through it (/proc/self/fd/N, immune to renames of dir), and
// its identity.
func openPrivateDir(dir string, create bool) (fd int, base string, id sysInfo, err error) {
	fd, err = openRaw(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return -1, "", id, fmt.Errorf("archive: %w", err)
	}
	defer func() {
		if err != nil {
			syscall.Close(fd)
		}
	}()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return -1, "", id, fmt.Errorf("archive: fstat %s: %w", dir, err)
	}
	if create {
		if err := syscall.Fchmod(fd, 0o700); err != nil {
			return -1, "", id, fmt.Errorf("archive: chmod %s: %w", dir, err)
		}
		st.Mode = st.Mode&^0o7777 | 0o700
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o7777 != 0o700 {
		return -1, "", id, fmt.Errorf("archive: %s is not a private clone directory (owner %d, mode %#o)", dir, st.Uid, st.Mode&0o7777)
	}
	base = "/proc/self/fd/" + strconv.Itoa(fd)
	var pst syscall.Stat_t
	if err := syscall.Stat(base, &pst); err != nil || pst.Dev != st.Dev || pst.Ino != st.Ino {
		return -1, "", id, fmt.Errorf("archive: %w: needs /proc to reach %s through its descriptor", ErrCloneUnsupported, dir)
	}
	return fd, base, sysInfo{dev: uint64(st.Dev), ino: uint64(st.Ino), ok: true}, nil
}

// OpenClone opens the copy Clone made in dstDir for WriteTree. It checks
// that dstDir is (not a symlink to) a directory owned by the caller with
// mode 0700, so that nobody else can have changed what is inside, and
// returns the roots (as CloneRoots) reached through the open directory, so
// that renaming or replacing dstDir afterwards cannot redirect the walk.
// Call release when the walk is done.
func OpenClone(dstDir string, dataPaths []string) (roots []Root, release func(), err error) {
	fd, base, _, err := openPrivateDir(dstDir, false)
	if err != nil {
		return nil, nil, err
	}
	roots = CloneRoots(base, dataPaths)
	cb := &cloneBase{fd: fd}
	for i := range roots {
		roots[i].at, roots[i].rel = cb, strconv.Itoa(i)
	}
	return roots, func() { syscall.Close(fd) }, nil
}

// renamedError shows an error with the descriptor path base replaced by
// the directory's name; errors.Is and As see the original.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

func renameErr(err error, base, name string) error {
	return &renamedError{strings.ReplaceAll(err.Error(), base, name), err}
}

type cloner struct {
	st       *Stats
	wn       *warner
	prog     *Progress
	euid     int
	root     int                  // descriptor of the clone directory
	rootName string               // the copy of the current data path in it: "0", "1", ...
	rootPath string               // ... and its path through /proc/self/fd, for messages
	links    map[[2]uint64]string // inode of a multiply-linked file -> its first copy, relative to root
	dirs     []int                // descriptors of the copies of the open source directories, outermost first
}

// where returns the directory descriptor and name the copy of n is
// created as, its path relative to the clone directory, and its path for
// messages.
func (c *cloner) where(n *walkNode) (dir int, name, rel, display string) {
	if n.rel == "." {
		return c.root, c.rootName, c.rootName, c.rootPath
	}
	return c.dirs[len(c.dirs)-1], n.name, c.rootName + "/" + n.rel, c.rootPath + "/" + n.rel
}

// visit copies one entry; a directory's attributes follow in leave, once
// its contents exist (creating them would change its mtime, and a default
// ACL set earlier would be inherited by the copies).
func (c *cloner) visit(n *walkNode) error {
	dir, name, rel, target := c.where(n)
	switch {
	case n.isDir():
		if err := syscall.Mkdirat(dir, name, 0o700); err != nil {
			return fmt.Errorf("archive: mkdir %s: %w", target, err)
		}
		fd, err := openat(dir, "", name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("archive: open %s: %w", target, err)
		}
		c.dirs = append(c.dirs, fd)
		c.st.Dirs++
	case n.isRegular():
		return c.file(n, dir, name, rel, target)
	case n.isSymlink():
		link, err := readlinkat(n.dir, "", n.name)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) {
				c.wn.warn("%s vanished or changed while cloning", n.path)
				return nil
			}
			return fmt.Errorf("archive: readlink %s: %w", n.path, err)
		}
		if err := symlinkat(link, dir, name); err != nil {
			return fmt.Errorf("archive: symlink %s: %w", target, err)
		}
		uid, gid := int(n.st.Uid), int(n.st.Gid)
		if err := c.chown(target, uid, gid, func(string, int, int) error {
			return syscall.Fchownat(dir, name, uid, gid, atSymlinkNoFollow)
		}); err != nil {
			return err
		}
		if err := lutimesat(dir, name, statMtime(&n.st)); err != nil {
			return fmt.Errorf("archive: setting mtime of %s: %w", target, err)
		}
		c.st.Symlinks++
	default:
		c.st.Skipped++
		c.wn.warn("skipping %s: %s", n.path, typeName(statMode(uint32(n.st.Mode))))
	}
	return nil
}

// leave gives the copy of the directory n its attributes.
func (c *cloner) leave(n *walkNode) error {
	_, _, _, target := c.where(n)
	fd := c.dirs[len(c.dirs)-1]
	c.dirs = c.dirs[:len(c.dirs)-1]
	defer syscall.Close(fd)
	return c.setAttrs(fd, n.fd, target, &n.st)
}

// openRaw is open(2) with O_CLOEXEC, retried on EINTR, with os.Open's
// error. Plain descriptors skip what an *os.File costs per file (poller
// registration, blocking-mode switches): a clone is a few syscalls per
// file, so that overhead would be a large part of it.
func openRaw(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := syscall.Open(path, flags|syscall.O_CLOEXEC, mode)
		if err == nil {
			return fd, nil
		}
		if err != syscall.EINTR {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// file clones the regular file n to name in dir, or links it to the first
// copy of its inode.
func (c *cloner) file(n *walkNode, dir int, name, rel, target string) error {
	var linkKey [2]uint64
	track := n.st.Nlink > 1
	if track {
		linkKey = [2]uint64{uint64(n.st.Dev), uint64(n.st.Ino)}
		if first, ok := c.links[linkKey]; ok {
			if err := linkat(c.root, first, dir, name); err != nil {
				if errors.Is(err, syscall.ENAMETOOLONG) {
					return fmt.Errorf("archive: %w: hard link %s: %w", ErrCloneUnsupported, target, err)
				}
				return fmt.Errorf("archive: link %s: %w", target, err)
			}
			c.st.Hardlinks++
			return nil
		}
	}
	var st syscall.Stat_t
	src, ok, err := openForRead(n, &st, c.wn, c.st, "cloning")
	if !ok {
		return err
	}
	defer syscall.Close(src)
	dst, err := openat(dir, "", name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("archive: create %s: %w", target, err)
	}
	defer func() {
		if dst >= 0 {
			syscall.Close(dst)
		}
	}()
	if err := ioctlFiclone(uintptr(dst), uintptr(src)); err != nil {
		if cloneUnsupported(err) {
			return fmt.Errorf("archive: %w: FICLONE of %s into %s: %w", ErrCloneUnsupported, n.path, filepath.Dir(target), err)
		}
		return fmt.Errorf("archive: cloning %s: %w", n.path, err)
	}
	var st2 syscall.Stat_t
	if err := syscall.Fstat(src, &st2); err == nil && statChanged(&st, &st2) {
		noteChanged(c.st, c.wn, n.path, "%s: file changed as we cloned it", n.path)
	}
	if err := c.setAttrs(dst, src, target, &st); err != nil {
		return err
	}
	err = syscall.Close(dst)
	dst = -1
	if err != nil {
		return fmt.Errorf("archive: close %s: %w", target, err)
	}
	if track {
		c.links[linkKey] = rel
	}
	c.st.Files++
	c.st.BytesRead += st.Size
	c.prog.addBytes(st.Size)
	c.prog.addFile()
	return nil
}

// setAttrs gives the open copy fd (at path) the owner, extended
// attributes (ACLs included), permission and special bits and mtime of
// the original src (stat st), in the order that keeps them all: chown
// clears setuid/setgid bits and file capabilities.
func (c *cloner) setAttrs(fd, src int, path string, st *syscall.Stat_t) error {
	uid, gid := int(st.Uid), int(st.Gid)
	if err := c.chown(path, uid, gid, func(string, int, int) error { return syscall.Fchown(fd, uid, gid) }); err != nil {
		return err
	}
	if err := copyXattrs(src, fd, path); err != nil {
		return err
	}
	if err := syscall.Fchmod(fd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("archive: chmod %s: %w", path, err)
	}
	if err := futimes(uintptr(fd), statMtime(st)); err != nil {
		return fmt.Errorf("archive: setting mtime of %s: %w", path, err)
	}
	return nil
}

// copyXattrs copies every extended attribute of src to dst. One that
// cannot be set means the copy cannot stand in for the data:
// ErrCloneUnsupported (the tar capture keeps them).
func copyXattrs(src, dst int, path string) error {
	names, err := flistxattr(src)
	if err != nil {
		return fmt.Errorf("archive: listing extended attributes for %s: %w", path, err)
	}
	for _, name := range names {
		v, err := fgetxattr(src, name)
		if isNoAttr(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("archive: reading extended attribute %s for %s: %w", name, path, err)
		}
		if err := fsetxattr(dst, name, v); err != nil {
			return fmt.Errorf("archive: %w: setting extended attribute %s of %s: %w", ErrCloneUnsupported, name, path, err)
		}
	}
	return nil
}

// chown gives the copy at path the owner uid:gid. Not being allowed to
// (not root) means the copy cannot stand in for the data:
// ErrCloneUnsupported.
func (c *cloner) chown(path string, uid, gid int, chown func(string, int, int) error) error {
	err := chown(path, uid, gid)
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrPermission) && c.euid != 0 {
		return fmt.Errorf("archive: %w: cannot give %s the owner %d:%d of the original without root: %w",
			ErrCloneUnsupported, path, uid, gid, err)
	}
	return fmt.Errorf("archive: chown %s: %w", path, err)
}
