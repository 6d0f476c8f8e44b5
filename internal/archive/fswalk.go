package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// The walk of the data paths (Write, Capture, Clone) goes through directory
// descriptors only. Every entry below a data path is examined with
// fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) and opened with
// openat(dirfd, name, O_NOFOLLOW|...) relative to its parent directory's
// descriptor; a path string below a data path is never resolved again. So:
//   - a directory swapped for a symlink during the walk is not followed
//     (the open fails with ELOOP/ENOTDIR, or the descriptor's identity no
//     longer matches what was listed: the entry is skipped with a warning);
//   - a regular file is opened O_NONBLOCK and checked with fstat to be the
//     regular file that was listed: a FIFO or device swapped in is never
//     read (and never blocks the walk);
//   - the depth of the tree is not limited by PATH_MAX (4096 bytes), only
//     by the number of open descriptors (one per directory level).
//
// The data path itself is opened by openRoot (see its rule for symlinks).

// walkNode is one entry met by the walk.
type walkNode struct {
	dir  int    // descriptor of the parent directory; -1 for a data path root
	name string // name in dir
	path string // for messages and test hooks: the root's path joined with rel
	rel  string // slash-separated path relative to the root, "." for the root
	st   syscall.Stat_t
	fd   int // an open descriptor (directories, a root that is a file); -1 otherwise
}

func (n *walkNode) isDir() bool     { return n.st.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (n *walkNode) isRegular() bool { return n.st.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (n *walkNode) isSymlink() bool { return n.st.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// statMode converts st_mode to an fs.FileMode as os.Lstat does.
func statMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFBLK:
		mode |= fs.ModeDevice
	case syscall.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		mode |= fs.ModeDir
	case syscall.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		mode |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&syscall.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&syscall.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// SkipDir identifies a directory (device and inode, as fstat reports them)
// that the walk leaves out wherever it meets it, for example a destination
// reachable inside a data path through a bind mount or a symlinked parent.
type SkipDir struct {
	Dev, Ino uint64
	Why      string // for the warning, e.g. "it is the destination /backup"
}

// DirIdentity opens dir as a directory (following symlinks: the identity
// of what the path names now) and returns its SkipDir.
func DirIdentity(dir, why string) (SkipDir, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return SkipDir{}, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return SkipDir{}, &fs.PathError{Op: "fstat", Path: dir, Err: err}
	}
	return SkipDir{Dev: uint64(st.Dev), Ino: uint64(st.Ino), Why: why}, nil
}

// fsWalker walks data paths for Write and Clone.
type fsWalker struct {
	ctx  context.Context
	excl []excludePattern
	wn   *warner
	st   *Stats
	verb string // "archiving", "cloning"
	skip []SkipDir
	// visit is called for every entry; for a directory before its
	// contents (returning fs.SkipDir leaves them out), with n.fd open.
	visit func(n *walkNode) error
	// leave, if set, is called for a directory after its contents, with
	// n.fd still open.
	leave func(n *walkNode) error
	buf   []byte // getdents buffer
}

// walkRoot walks one data path, opened by openRoot.
func (w *fsWalker) walkRoot(r *root) error {
	n := r.n
	r.n = nil
	if !n.isDir() {
		defer syscall.Close(n.fd)
		return w.visit(n)
	}
	return w.walkDir(n)
}

// walkDir visits the directory n (its descriptor open; closed here) and
// everything below it.
func (w *fsWalker) walkDir(n *walkNode) error {
	defer syscall.Close(n.fd)
	for _, s := range w.skip {
		if uint64(n.st.Dev) == s.Dev && uint64(n.st.Ino) == s.Ino {
			w.wn.warn("skipping %s: %s", n.path, s.Why)
			w.st.Skipped++
			return nil
		}
	}
	if err := w.visit(n); err != nil {
		if err == fs.SkipDir {
			return nil
		}
		return err
	}
	names, err := readDirNames(n.fd, n.path, &w.buf)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			w.wn.warn("%s vanished while %s", n.path, w.verb)
			return nil
		}
		return fmt.Errorf("archive: reading directory %s: %w", n.path, err)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := w.child(n, name); err != nil {
			return err
		}
	}
	if w.leave != nil {
		return w.leave(n)
	}
	return nil
}

// child examines the entry name of the directory parent.
func (w *fsWalker) child(parent *walkNode, name string) error {
	c := &walkNode{dir: parent.fd, name: name, fd: -1, path: joinPath(parent.path, name), rel: name}
	if parent.rel != "." {
		c.rel = parent.rel + "/" + name
	}
	if testHookVisit != nil {
		testHookVisit(c.path)
	}
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := fstatat(parent.fd, parent.path, name, &c.st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			w.wn.warn("%s vanished while %s", c.path, w.verb)
			return nil
		}
		return fmt.Errorf("archive: lstat %s: %w", c.path, err)
	}
	if excluded(w.excl, c.rel, c.isDir()) {
		return nil
	}
	if !c.isDir() {
		return w.visit(c)
	}
	fd, err := openat(parent.fd, parent.path, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			w.wn.warn("%s vanished while %s", c.path, w.verb)
			return nil
		case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR):
			w.wn.warn("%s was replaced while %s (now not a directory); skipped", c.path, w.verb)
			w.st.Skipped++
			return nil
		}
		return fmt.Errorf("archive: open %s: %w", c.path, err)
	}
	listed := c.st
	if err := syscall.Fstat(fd, &c.st); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("archive: fstat %s: %w", c.path, err)
	}
	if c.st.Dev != listed.Dev || c.st.Ino != listed.Ino {
		syscall.Close(fd)
		w.wn.warn("%s was replaced while %s; skipped", c.path, w.verb)
		w.st.Skipped++
		return nil
	}
	c.fd = fd
	return w.walkDir(c)
}

func joinPath(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// What openNode found.
const (
	nodeOpen     = iota
	nodeVanished // gone, or replaced by a symlink
	nodeReplaced // no longer the regular file that was listed
)

// openForRead opens the listed regular file n (openNode) and reports a
// file that vanished or was replaced since the listing the same way for
// every reader: a warning, and a skipped count for a replaced one. doing
// completes "while …" in the warning. fd is valid only when ok.
func openForRead(n *walkNode, st *syscall.Stat_t, wn *warner, stats *Stats, doing string) (fd int, ok bool, err error) {
	if testHookBeforeOpen != nil {
		testHookBeforeOpen(n.path)
	}
	fd, state, err := openNode(n, st)
	switch {
	case err != nil:
		return -1, false, fmt.Errorf("archive: open %s: %w", n.path, err)
	case state == nodeVanished:
		wn.warn("%s vanished or changed type while %s", n.path, doing)
		return -1, false, nil
	case state == nodeReplaced:
		wn.warn("%s was replaced while %s; skipped", n.path, doing)
		stats.Skipped++
		return -1, false, nil
	}
	return fd, true, nil
}

// openNode opens the regular file n for reading (O_NOFOLLOW, O_NONBLOCK:
// a FIFO or device swapped in neither follows nor blocks) and checks with
// fstat that it is the regular file that was listed. st receives the fstat
// result. The descriptor is only valid with state nodeOpen.
func openNode(n *walkNode, st *syscall.Stat_t) (fd, state int, err error) {
	if n.fd >= 0 {
		if fd, err = syscall.Dup(n.fd); err != nil {
			return -1, 0, err
		}
		syscall.CloseOnExec(fd)
	} else {
		fd, err = openat(n.dir, "", n.name, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err != nil {
			if openErrorIsVanished(err) {
				return -1, nodeVanished, nil
			}
			return -1, 0, err
		}
	}
	if err := syscall.Fstat(fd, st); err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Dev != n.st.Dev || st.Ino != n.st.Ino {
		syscall.Close(fd)
		return -1, nodeReplaced, nil
	}
	return fd, nodeOpen, nil
}

// openRoot opens the data path r for the walk. The rule for symlinks:
//
//   - Below the data path, nothing is ever followed (see above).
//   - On the way to the data path (its parents, and the data path itself),
//     each component is looked at with fstatat relative to the directory
//     opened before it. A symlink is followed only when nobody but root
//     can have made it: the symlink and the directory holding it belong to
//     root (or to the user running the walk) and that directory is not
//     writable by group or others. /var/lib -> /data/var/lib made by the
//     admin is followed; a data path /var/lib/app/data replaced by a
//     symlink to /etc in /var/lib/app, which the service user owns, is an
//     error naming the path and this rule, before anything is read. A
//     followed symlink's target is resolved by the same rule.
//   - The data path must then be a directory or a regular file.
//
// A root from OpenClone is opened relative to the clone directory's
// descriptor, without following anything.
func openRoot(r *root) (*walkNode, error) {
	n := &walkNode{dir: -1, path: r.real, rel: ".", fd: -1}
	var fd int
	var err error
	if r.at != nil {
		fd, err = openat(r.at.fd, r.real, r.rel, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err != nil {
			err = fmt.Errorf("archive: data path %s: %w", r.path, &fs.PathError{Op: "open", Path: r.real, Err: err})
		}
	} else {
		fd, err = resolveTrusted(r.path, r.real)
	}
	if err != nil {
		return nil, err
	}
	if err := syscall.Fstat(fd, &n.st); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("archive: data path %s: fstat: %w", r.path, err)
	}
	if !n.isDir() && !n.isRegular() {
		syscall.Close(fd)
		return nil, fmt.Errorf("archive: data path %s is neither a directory nor a regular file (%s)", r.path, statMode(uint32(n.st.Mode)).Type())
	}
	n.fd = fd
	return n, nil
}

// maxSymlinks bounds the symlinks followed on the way to a data path (as
// the kernel's ELOOP limit).
const maxSymlinks = 40

// resolveTrusted opens the absolute path p (data path dataPath) component
// by component, following only symlinks that only root can have made (see
// openRoot). The final component is opened O_RDONLY|O_NONBLOCK.
func resolveTrusted(dataPath, p string) (int, error) {
	fail := func(err error) (int, error) {
		return -1, fmt.Errorf("archive: data path %s: %w", dataPath, err)
	}
	cur, err := openat(atFdCwd, "", "/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fail(err)
	}
	curPath := "/"
	closeCur := func() { syscall.Close(cur) }
	todo := splitPath(p)
	links := 0
	for len(todo) > 0 {
		comp := todo[0]
		todo = todo[1:]
		last := len(todo) == 0
		if comp == ".." {
			next, err := openat(cur, curPath, "..", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
			closeCur()
			if err != nil {
				return fail(err)
			}
			cur, curPath = next, path.Dir(curPath)
			if last {
				return cur, nil
			}
			continue
		}
		var st syscall.Stat_t
		if err := fstatat(cur, curPath, comp, &st); err != nil {
			closeCur()
			return fail(&fs.PathError{Op: "lstat", Path: joinPath(curPath, comp), Err: err})
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			var dst syscall.Stat_t
			if err := syscall.Fstat(cur, &dst); err != nil {
				closeCur()
				return fail(err)
			}
			if why := untrustedLink(&dst, &st); why != "" {
				closeCur()
				return fail(fmt.Errorf("%s is a symlink and %s: refusing to follow it "+
					"(a symlink on the way to a data path is followed only when only root can have made it; "+
					"point the data path at the real directory)", joinPath(curPath, comp), why))
			}
			links++
			if links > maxSymlinks {
				closeCur()
				return fail(&fs.PathError{Op: "open", Path: p, Err: syscall.ELOOP})
			}
			target, err := readlinkat(cur, curPath, comp)
			if err != nil {
				closeCur()
				return fail(err)
			}
			todo = append(splitPath(target), todo...)
			if strings.HasPrefix(target, "/") {
				closeCur()
				if cur, err = openat(atFdCwd, "", "/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0); err != nil {
					return fail(err)
				}
				curPath = "/"
			}
			if len(todo) == 0 {
				// A link to "/" (or "."): the directory itself.
				return cur, nil
			}
			continue
		}
		flags := syscall.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_NOCTTY
		if !last {
			flags |= syscall.O_DIRECTORY
		}
		next, err := openat(cur, curPath, comp, flags, 0)
		closeCur()
		if err != nil {
			return fail(&fs.PathError{Op: "open", Path: joinPath(curPath, comp), Err: err})
		}
		cur, curPath = next, joinPath(curPath, comp)
	}
	return cur, nil
}

// untrustedLink says why the symlink link in the directory dir may have
// been made by someone other than root ("" if it cannot).
func untrustedLink(dir, link *syscall.Stat_t) string {
	euid := uint32(syscall.Geteuid())
	switch {
	case link.Uid != 0 && link.Uid != euid:
		return fmt.Sprintf("belongs to uid %d", link.Uid)
	case dir.Uid != 0 && dir.Uid != euid:
		return fmt.Sprintf("its directory belongs to uid %d", dir.Uid)
	case dir.Mode&0o022 != 0:
		return fmt.Sprintf("its directory is writable by group or others (mode %#o)", dir.Mode&0o7777)
	}
	return ""
}

// splitPath splits a path into its non-empty, non-"." components.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(filepath.ToSlash(p), "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
