package archive

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// ErrCloneUnsupported is wrapped by Clone's error when a reflink copy cannot
// be made here: the file system does not support FICLONE (EOPNOTSUPP,
// EINVAL, ENOTTY, EPERM), source and staging directory are on different
// file systems or mounts (EXDEV), the platform is not Linux or has no
// /proc, or the clone could not be given the owners of the data (not
// running as root). The caller can fall back to Capture.
var ErrCloneUnsupported = errors.New("reflink copy not supported")

// Root is one data path to archive from another place: Name is the absolute
// data path the entries are named after (as Write names them), Dir the
// directory (or regular file) whose content and metadata are archived under
// that name, for example the copy Clone made of it.
type Root struct {
	Name string
	Dir  string

	// OpenClone: Dir is reached as rel relative to the open clone
	// directory, never by its path.
	at  *cloneBase
	rel string
}

// cloneBase is an open clone directory (OpenClone).
type cloneBase struct{ fd int }

// CloneRoots returns where Clone(ctx, dstDir, dataPaths, ...) puts each data
// path: dstDir/0, dstDir/1, ... in the order of dataPaths, named after the
// data paths. Pass it to WriteTree; when others may rename entries of
// dstDir's parent, use OpenClone instead, which reads through an open
// descriptor of dstDir.
func CloneRoots(dstDir string, dataPaths []string) []Root {
	roots := make([]Root, len(dataPaths))
	for i, p := range dataPaths {
		roots[i] = Root{Name: p, Dir: filepath.Join(dstDir, strconv.Itoa(i))}
	}
	return roots
}

// WriteTree is Write with each data path read from another place: every
// root's Dir is walked exactly as Write walks a data path (excludes,
// symlinks stored, hard links, special files skipped) and archived under
// the root's Name. An archive written from a Clone of the data paths is,
// entry by entry, the archive Write would have written from the data paths
// when Clone ran: same names, order, types, modes, owners, mtimes, link
// targets and contents.
//
// On error the output is incomplete and must be discarded.
func WriteTree(ctx context.Context, w io.Writer, roots []Root, opts Options) (Stats, error) {
	return write(ctx, w, roots, opts, false)
}

// RemoveTree removes dir and everything below it, like os.RemoveAll (which
// never follows symlinks). When that fails for lack of permission and the
// caller is not root (a clone of a read-only directory is read-only too),
// the directories below dir are made writable by their owner and the
// removal is tried once more. A missing dir is not an error.
func RemoveTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) || os.Geteuid() == 0 {
		return err
	}
	// WalkDir calls the function for a directory before reading it, so a
	// directory is made readable just before its listing is needed.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, werr error) error {
		if werr == nil && d.IsDir() {
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o700 != 0o700 {
				os.Chmod(p, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
	return os.RemoveAll(dir)
}
