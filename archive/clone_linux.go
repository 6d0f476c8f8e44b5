//go:build linux

package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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
// applies, a data path that is a symlink is resolved, symlinks below it
// are recreated (never followed), hard links are recreated as hard links
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
	c := &cloner{ctx: ctx, st: &st, wn: wn, excl: excl, self: self, prog: opts.Progress, euid: os.Geteuid()}
	for i, r := range roots {
		if err := c.clone(r.path, r.real, filepath.Join(base, strconv.Itoa(i))); err != nil {
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
	return CloneRoots(base, dataPaths), func() { syscall.Close(fd) }, nil
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
	ctx   context.Context
	st    *Stats
	wn    *warner
	excl  []excludePattern
	self  sysInfo // dstDir
	prog  *Progress
	euid  int
	links map[[2]uint64]string // inode of a multiply-linked file -> its first copy
	dirs  []clonedDir          // open directories, outermost first
}

// clonedDir is a copied directory whose attributes are applied once all
// its contents exist (creating them would change its mtime).
type clonedDir struct {
	src, dst string
	fi       fs.FileInfo
}

// clone copies the data path real (archived as dataPath) to dst.
func (c *cloner) clone(dataPath, real, dst string) error {
	c.links = map[[2]uint64]string{}
	c.dirs = c.dirs[:0]
	err := walkData(c.ctx, dataPath, real, "cloning", c.excl, c.wn, func(p, rel string, d fs.DirEntry, fi fs.FileInfo) error {
		// Every directory that is not an ancestor of p is complete.
		if err := c.finishDirs(p); err != nil {
			return err
		}
		target := dst
		if rel != "." {
			target = filepath.Join(dst, filepath.FromSlash(rel))
		}
		if si := statSys(fi); si.ok && si.dev == c.self.dev && si.ino == c.self.ino {
			c.wn.warn("skipping %s: it is the clone being written", p)
			c.st.Skipped++
			return fs.SkipDir
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
			c.dirs = append(c.dirs, clonedDir{src: p, dst: target, fi: fi})
			c.st.Dirs++
		case m.IsRegular():
			return c.file(p, target, fi)
		case m&fs.ModeSymlink != 0:
			link, ok, err := readlinkWalked(p, "cloning", c.wn)
			if !ok {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
			if si := statSys(fi); si.ok {
				if err := c.chown(target, si.uid, si.gid, os.Lchown); err != nil {
					return err
				}
			}
			if err := lutimes(target, fi.ModTime()); err != nil {
				return fmt.Errorf("archive: setting mtime of %s: %w", target, err)
			}
			c.st.Symlinks++
		default:
			c.st.Skipped++
			c.wn.warn("skipping %s: %s", p, typeName(m))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.finishDirs("")
}

// finishDirs applies the attributes of the open directories that are not
// ancestors of the path p about to be copied ("": all of them), innermost
// first.
func (c *cloner) finishDirs(p string) error {
	for len(c.dirs) > 0 {
		d := c.dirs[len(c.dirs)-1]
		if p != "" && isBelow(p, d.src) {
			return nil
		}
		c.dirs = c.dirs[:len(c.dirs)-1]
		fd, err := openRaw(d.dst, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		si := statSys(d.fi)
		err = c.setAttrs(fd, d.dst, si.uid, si.gid, uint32(unixMode(d.fi.Mode())), d.fi.ModTime())
		syscall.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
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

// isBelow reports whether p lies strictly inside dir.
func isBelow(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// file clones the regular file p to target, or links target to the first
// copy of p's inode.
func (c *cloner) file(p, target string, fi fs.FileInfo) error {
	si := statSys(fi)
	var linkKey [2]uint64
	track := si.ok && si.nlink > 1
	if track {
		linkKey = [2]uint64{si.dev, si.ino}
		if first, ok := c.links[linkKey]; ok {
			if err := os.Link(first, target); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
			c.st.Hardlinks++
			return nil
		}
	}
	if testHookBeforeOpen != nil {
		testHookBeforeOpen(p)
	}
	src, err := openRaw(p, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if openErrorIsVanished(err) {
			c.wn.warn("%s vanished or changed type while cloning", p)
			return nil
		}
		return fmt.Errorf("archive: %w", err)
	}
	defer syscall.Close(src)
	var st syscall.Stat_t
	if err := syscall.Fstat(src, &st); err != nil {
		return fmt.Errorf("archive: fstat %s: %w", p, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || (si.ok && (uint64(st.Dev) != si.dev || uint64(st.Ino) != si.ino)) {
		c.wn.warn("%s was replaced while cloning; skipped", p)
		c.st.Skipped++
		return nil
	}
	dst, err := openRaw(target, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer func() {
		if dst >= 0 {
			syscall.Close(dst)
		}
	}()
	if err := ioctlFiclone(uintptr(dst), uintptr(src)); err != nil {
		if cloneUnsupported(err) {
			return fmt.Errorf("archive: %w: FICLONE of %s into %s: %w", ErrCloneUnsupported, p, filepath.Dir(target), err)
		}
		return fmt.Errorf("archive: cloning %s: %w", p, err)
	}
	mtime := time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec))
	var st2 syscall.Stat_t
	if err := syscall.Fstat(src, &st2); err == nil && (st2.Size != st.Size || st2.Mtim != st.Mtim) {
		c.wn.warn("%s changed as we cloned it", p)
	}
	if err := c.setAttrs(dst, target, int(st.Uid), int(st.Gid), st.Mode&0o7777, mtime); err != nil {
		return err
	}
	err = syscall.Close(dst)
	dst = -1
	if err != nil {
		return fmt.Errorf("archive: close %s: %w", target, err)
	}
	if track {
		c.links[linkKey] = target
	}
	c.st.Files++
	c.st.BytesRead += st.Size
	c.prog.addBytes(st.Size)
	c.prog.addFile()
	return nil
}

// setAttrs gives the open copy fd (at path) owner uid:gid, the permission
// and special bits mode and mtime, in the order that keeps setuid/setgid
// bits (chown clears them).
func (c *cloner) setAttrs(fd int, path string, uid, gid int, mode uint32, mtime time.Time) error {
	if err := c.chown(path, uid, gid, func(string, int, int) error { return syscall.Fchown(fd, uid, gid) }); err != nil {
		return err
	}
	if err := syscall.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("archive: chmod %s: %w", path, err)
	}
	if err := futimes(uintptr(fd), mtime); err != nil {
		return fmt.Errorf("archive: setting mtime of %s: %w", path, err)
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
