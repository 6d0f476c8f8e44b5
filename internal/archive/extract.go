package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ExtractOptions configure ExtractFile.
type ExtractOptions struct {
	// Only entries whose (slash-separated, relative) name lies under one of these prefixes are
	// extracted (empty = all). Used to restore only the data paths. Absolute
	// data paths are accepted and mapped with EntryName.
	Prefixes   []string
	SameOwner  bool  // restore uid/gid (true when running as root)
	MaxEntries int64 // refuse archives with more entries (0 = 10 million)
	MaxBytes   int64 // refuse when extracted content would exceed this (0 = no limit)
	// AllowSpecial restores what can hand out privileges: setuid/setgid
	// bits (with SameOwner), device nodes and fifos, and extended
	// attributes outside user.* (security.capability, trusted.*, ...).
	// Without it they are skipped with a warning, as GNU tar does for
	// xattrs outside user.*.
	AllowSpecial bool
	// DefaultOwner owns entries that carry no owner (zip entries without
	// the Info-ZIP "ux" field) when SameOwner; nil leaves them to the
	// extracting user.
	DefaultOwner *Owner
	// Digest, when set, receives every byte of the archive file, which is
	// read to its end, so the caller can check that the bytes extracted
	// are the bytes it verified (the file belongs to the service user, who
	// can rewrite it between the check and the extraction). Zip is read
	// at random; its file is hashed in full after extracting, which proves
	// only that the file held those bytes at the end.
	Digest hash.Hash
	// Decrypt, when set, turns the file's bytes (after Digest saw them)
	// into the archive stream: an encrypted archive is decrypted as it is
	// extracted, and Digest is of the ciphertext. Tar formats only.
	Decrypt func(io.Reader) (io.Reader, error)
	// Roots, when set, extracts the entries under each Root.Path into
	// Root.Dir instead of the target, and nothing else (Prefixes is not
	// used): one pass over the archive stages every data path beside its
	// final place, on its own file system. A hard link across two roots
	// is refused.
	Roots []StageRoot
	// Private: nobody else can write below the target (a fresh 0700
	// staging directory, as restore makes), so a directory this
	// extraction made or checked stays one: parent directories are
	// checked once, not again for every entry below them.
	Private bool
	Logger  *slog.Logger
}

// StageRoot is one data path and the directory its entries go to.
type StageRoot struct {
	Path string
	Dir  *os.File
}

// Owner is a numeric user and group.
type Owner struct{ UID, GID int }

// DefaultMaxEntries is used when ExtractOptions.MaxEntries is 0.
const DefaultMaxEntries = 10_000_000

// maxSymlinkTarget bounds the content of zip symlink entries.
const maxSymlinkTarget = 4096

// ExtractFile extracts the archive at path into target (an existing
// directory). Every entry first passes the rules VerifyFile applies
// (checker.checkEntry: no absolute or ".." names, nothing under an earlier
// symlink or file entry, no duplicates, links and special files only
// inside a directory entry, hard links to earlier files), so an archive
// VerifyFile accepts is one ExtractFile accepts. On top, extraction refuses
// writing through an existing symlink inside target and hard links to
// files it did not extract itself (e.g. not selected by Prefixes).
// Setuid/setgid bits are stripped, device nodes and fifos skipped and
// xattrs outside user.* skipped (all with a warning) unless AllowSpecial.
// Restores modes, mtimes (dirs after their contents), owners when
// SameOwner, user.* xattrs and POSIX ACLs (PAX SCHILY.xattr.* and
// SCHILY.acl.*, as GNU tar --xattrs --acls writes them; failures to set
// them are warnings, as in GNU tar) and the holes of sparse entries.
//
// Details: the archive is processed in one pass, so on error target may
// hold the entries extracted so far (extract into a staging directory when
// that matters). Existing files at an entry's name are replaced (unlinked
// first, never written through); an existing directory is never replaced
// by a non-directory (error). Missing parent directories are created
// with mode 0755. Tar owners are restored by user/group name when the name
// exists on this system, otherwise by numeric id (like GNU tar); zip owners
// come from the Info-ZIP "ux" field, else DefaultOwner. The attributes of
// target itself are never changed. The whole stream is read to the end so
// that compressor checksums are verified; corruption is an error.
func ExtractFile(ctx context.Context, path, format, target string, opts ExtractOptions) (st Stats, err error) {
	if err := checkFormat(format); err != nil {
		return st, err
	}
	root, err := filepath.Abs(target)
	if err != nil {
		return st, fmt.Errorf("archive: extract: %w", err)
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return st, fmt.Errorf("archive: extract: target: %w", err)
	}
	dir, err := os.OpenFile(root, os.O_RDONLY|oDirectory|oNoFollow, 0)
	if err != nil {
		return st, fmt.Errorf("archive: extract: target: %w", err)
	}
	defer dir.Close()
	return ExtractDir(ctx, path, format, dir, opts)
}

// ExtractDir is ExtractFile into an open directory. Every path it touches
// is resolved from that descriptor (/proc/self/fd/N on Linux), never from
// the directory's name, so renaming the directory or replacing its name
// with a symlink while extracting (a staging directory in a parent the
// service user can write) cannot redirect a single write.
func ExtractDir(ctx context.Context, path, format string, dir *os.File, opts ExtractOptions) (st Stats, err error) {
	if err := checkFormat(format); err != nil {
		return st, err
	}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("archive: extract: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("archive: extract: %w", err)
	}
	st, err = extractAt(ctx, f, fi.Size(), format, dir, opts)
	if err != nil {
		return st, fmt.Errorf("archive: extract %s: %w", path, err)
	}
	return st, nil
}

// ExtractAt is ExtractDir for the archive in the first size bytes of ra
// (a local file or a remote object read through its destination). A tar
// format is read once, front to back, so one pass both extracts and
// feeds opts.Digest; zip is read at random, then hashed in full. With
// opts.Roots, dir is not used (it may be nil).
func ExtractAt(ctx context.Context, ra io.ReaderAt, size int64, format string, dir *os.File, opts ExtractOptions) (Stats, error) {
	st, err := extractAt(ctx, ra, size, format, dir, opts)
	if err != nil {
		return st, fmt.Errorf("archive: extract: %w", err)
	}
	return st, nil
}

func extractAt(ctx context.Context, ra io.ReaderAt, size int64, format string, dir *os.File, opts ExtractOptions) (st Stats, err error) {
	if err := checkFormat(format); err != nil {
		return st, err
	}
	if format == FormatZip && opts.Decrypt != nil {
		return st, errors.New("an encrypted zip cannot be extracted")
	}
	x, err := newExtractor(ctx, dir, &st, opts)
	if err != nil {
		return st, err
	}
	defer x.wn.finish()
	if format == FormatZip {
		err = x.zip(ra, size)
		if err == nil && opts.Digest != nil {
			_, err = io.CopyBuffer(opts.Digest, onlyReader{io.NewSectionReader(ra, 0, size)}, x.buf)
		}
	} else {
		err = x.tarStream(io.NewSectionReader(ra, 0, size), format)
	}
	if err == nil {
		err = x.finishDirs()
	}
	if err != nil {
		return st, wrapCtx(ctx, x.shown(err))
	}
	return st, nil
}

// newExtractor prepares extracting into dir, or into opts.Roots.
func newExtractor(ctx context.Context, dir *os.File, st *Stats, opts ExtractOptions) (*extractor, error) {
	x := &extractor{
		ctx: ctx, opts: opts, st: st,
		wn:     &warner{stats: st, log: loggerOr(opts.Logger)},
		check:  newChecker(opts.MaxEntries),
		inodes: map[[2]uint64]struct{}{},
		uids:   map[string]int{}, gids: map[string]int{},
		ids:    idResolver{users: map[string]int{}, groups: map[string]int{}},
		warned: map[string]bool{},
		buf:    make([]byte, copyBufSize),
		okDirs: map[string]bool{},
	}
	dirs := []*os.File{dir}
	if opts.Roots != nil {
		dirs = nil
		for _, r := range opts.Roots {
			dirs = append(dirs, r.Dir)
			x.roots = append(x.roots, xroot{prefix: EntryName(r.Path), dir: dirPath(r.Dir), name: r.Dir.Name()})
		}
	} else {
		x.root = dirPath(dir)
		x.roots = []xroot{{dir: x.root, name: dir.Name()}}
		for _, p := range opts.Prefixes {
			x.prefixes = append(x.prefixes, EntryName(p))
		}
	}
	for _, d := range dirs {
		if fi, err := d.Stat(); err != nil {
			return nil, fmt.Errorf("target: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("target %s is not a directory", d.Name())
		}
	}
	return x, nil
}

// tarStream extracts the (possibly encrypted) compressed tar stream raw,
// reading it to its end so that opts.Digest sees every byte.
func (x *extractor) tarStream(raw io.Reader, format string) error {
	opts := x.opts
	if opts.Digest != nil {
		ra := newReadAhead(raw, opts.Digest)
		defer ra.stop()
		raw = ra
	}
	r := raw
	var err error
	if opts.Decrypt != nil {
		if r, err = opts.Decrypt(bufio.NewReaderSize(raw, 1<<20)); err != nil {
			return err
		}
	}
	// readAhead is already a buffer of 1 MiB blocks: zstd's decoder,
	// which reads whole blocks itself, reads from it directly, one copy of
	// the compressed stream less (gzip's wants an io.ByteReader).
	var br io.Reader = r
	if format != FormatTarZst || opts.Digest == nil || opts.Decrypt != nil {
		br = bufio.NewReaderSize(r, 1<<20)
	}
	if err = x.tar(br, format); err != nil {
		return err
	}
	if opts.Digest == nil {
		return nil
	}
	// The rest of the file (e.g. trailing bytes), and whatever the
	// decryption left unread.
	if _, err = io.CopyBuffer(io.Discard, onlyReader{br}, x.buf); err == nil && opts.Decrypt != nil {
		_, err = io.CopyBuffer(io.Discard, onlyReader{raw}, x.buf)
	}
	return err
}

// shown names the target directories by their names instead of their
// /proc/self/fd paths in err.
func (x *extractor) shown(err error) error {
	for _, r := range x.roots {
		err = shownErr{err, r.dir, r.name}
	}
	return err
}

// shownErr shows the directory's name instead of its /proc/self/fd path.
type shownErr struct {
	err      error
	from, to string
}

func (e shownErr) Error() string { return strings.ReplaceAll(e.err.Error(), e.from, e.to) }
func (e shownErr) Unwrap() error { return e.err }

// xroot is a directory entries under prefix are extracted into (through
// its descriptor path dir; name is for messages).
type xroot struct {
	prefix, dir, name string
}

type dirAttr struct {
	path string
	name string
	e    xentry
}

type extractor struct {
	ctx      context.Context
	root     string  // the target directory ("" with ExtractOptions.Roots)
	roots    []xroot // where entries go: root, or one per ExtractOptions.Roots
	opts     ExtractOptions
	st       *Stats
	wn       *warner
	check    *checker
	prefixes []string
	bytes    int64
	inodes   map[[2]uint64]struct{}
	dirs     []dirAttr
	uids     map[string]int
	gids     map[string]int
	ids      idResolver
	warned   map[string]bool // xattr names already warned about
	buf      []byte
	// okDirs are the directories (full paths) mkParents made or checked,
	// with ExtractOptions.Private only.
	okDirs map[string]bool
}

func (x *extractor) tar(r io.Reader, format string) error {
	dr, closeFn, err := newExtractDecompressor(&ctxReader{x.ctx, r}, format)
	if err != nil {
		return err
	}
	defer closeFn()
	tr := tar.NewReader(dr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading entry %d: %w", x.check.n+1, err)
		}
		e := tarEntry(h)
		if err := x.extract(&e, tr); err != nil {
			return err
		}
	}
	// Verify the compressor's trailer checksums.
	if _, err := io.CopyBuffer(io.Discard, onlyReader{dr}, x.buf); err != nil {
		return fmt.Errorf("reading end of stream: %w", err)
	}
	return nil
}

func (x *extractor) zip(ra io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return err
	}
	for _, zf := range zr.File {
		e, err := zipEntry(zf)
		if err != nil {
			return err
		}
		var rc io.ReadCloser
		if e.typ == xFile {
			if rc, err = zf.Open(); err != nil {
				return fmt.Errorf("%q: %w", zf.Name, err)
			}
		}
		var content io.Reader = eofReader{}
		if e.typ == xFile {
			content = rc
		}
		err = x.extract(&e, content)
		if rc != nil {
			rc.Close()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// parseUx reads uid/gid from an Info-ZIP "ux" (0x7875) extra field.
func parseUx(extra []byte) (uid, gid int, ok bool) {
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		n := int(binary.LittleEndian.Uint16(extra[2:]))
		if len(extra) < 4+n {
			return 0, 0, false
		}
		d := extra[4 : 4+n]
		extra = extra[4+n:]
		if id != 0x7875 || len(d) < 2 || d[0] != 1 {
			continue
		}
		readID := func(b []byte) (int, []byte, bool) {
			if len(b) < 1 {
				return 0, nil, false
			}
			sz := int(b[0])
			if sz > 8 || len(b) < 1+sz {
				return 0, nil, false
			}
			var v uint64
			for i := sz - 1; i >= 0; i-- {
				v = v<<8 | uint64(b[1+i])
			}
			if v > 1<<31 {
				return 0, nil, false
			}
			return int(v), b[1+sz:], true
		}
		var ok1, ok2 bool
		var rest []byte
		uid, rest, ok1 = readID(d[1:])
		if ok1 {
			gid, _, ok2 = readID(rest)
		}
		if ok1 && ok2 {
			return uid, gid, true
		}
		return 0, 0, false
	}
	return 0, 0, false
}

// rootOf returns the directory name is extracted into ("" when it is not
// selected by ExtractOptions.Roots).
func (x *extractor) rootOf(name string) string {
	if x.opts.Roots == nil {
		return x.root
	}
	for _, r := range x.roots {
		if name == r.prefix || strings.HasPrefix(name, r.prefix+"/") {
			return r.dir
		}
	}
	return ""
}

func (x *extractor) selected(name string) bool {
	if x.opts.Roots != nil {
		return x.rootOf(name) != ""
	}
	if len(x.prefixes) == 0 {
		return true
	}
	for _, p := range x.prefixes {
		if p == "." || name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}

func (x *extractor) extract(e *xentry, content io.Reader) error {
	if err := x.ctx.Err(); err != nil {
		return err
	}
	// The rules verify applies too; checked on every entry, selected or
	// not, so a hostile entry is refused wherever it is.
	name, err := x.check.checkEntry(e)
	if err != nil {
		return err
	}
	if !x.selected(name) || name == "." {
		return nil // "." is a directory: never change target's own attributes
	}
	x.restrict(name, e)
	if e.typ == xOther && (e.special == notSpecial || !x.opts.AllowSpecial) {
		x.st.Skipped++
		x.wn.warn("skipping %s: %s", name, e.kind)
		return nil
	}
	root := x.rootOf(name)
	dst := filepath.Join(root, filepath.FromSlash(name))
	if err := x.mkParents(root, name); err != nil {
		return err
	}
	switch e.typ {
	case xDir:
		fi, err := os.Lstat(dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: directory %q is an existing symlink", ErrUnsafeName, name)
		default:
			if err := os.Remove(dst); err != nil {
				return err
			}
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
		}
		x.dirs = append(x.dirs, dirAttr{dst, name, *e})
		x.st.Dirs++
	case xFile:
		if x.opts.MaxBytes > 0 && x.bytes+e.size > x.opts.MaxBytes {
			return fmt.Errorf("extracted content would exceed %d bytes at %q; refusing", x.opts.MaxBytes, name)
		}
		return x.writeFile(dst, name, e, content)
	case xSymlink:
		if err := x.clearFinal(dst, name); err != nil {
			return err
		}
		if err := os.Symlink(e.linkname, dst); err != nil {
			return err
		}
		if x.opts.SameOwner && e.hasOwner {
			if err := os.Lchown(dst, x.uid(e), x.gid(e)); err != nil {
				return err
			}
		}
		if err := lutimes(dst, e.mtime); err != nil {
			return fmt.Errorf("setting mtime of %s: %w", dst, err)
		}
		x.st.Symlinks++
	case xHardlink:
		ln, _ := cleanName(e.linkname)
		if ln == name {
			return fmt.Errorf("refusing hard link %q to itself", name)
		}
		if x.rootOf(ln) != root {
			// Another data path's staging directory (or nothing
			// extracted): a link there could cross file systems, and
			// was never allowed when each data path was extracted alone.
			return fmt.Errorf("%w: hard link %q -> %q: target is not a file extracted from this archive", ErrUnsafeName, name, e.linkname)
		}
		src := filepath.Join(root, filepath.FromSlash(ln))
		if err := x.checkParents(root, ln); err != nil {
			return fmt.Errorf("hard link %q -> %q: %w", name, e.linkname, err)
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return fmt.Errorf("hard link %q -> %q: target not extracted from this archive: %w", name, e.linkname, err)
		}
		si := statSys(fi)
		if _, ok := x.inodes[[2]uint64{si.dev, si.ino}]; !ok || !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: hard link %q -> %q: target is not a file extracted from this archive", ErrUnsafeName, name, e.linkname)
		}
		if err := x.clearFinal(dst, name); err != nil {
			return err
		}
		if err := os.Link(src, dst); err != nil {
			return err
		}
		x.st.Hardlinks++
	case xOther:
		return x.special(dst, name, e)
	}
	return nil
}

// restrict applies the privilege policy: setuid/setgid bits are stripped
// unless AllowSpecial (and owners are restored), and entries without owner
// information get DefaultOwner.
func (x *extractor) restrict(name string, e *xentry) {
	if e.mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 && (!x.opts.SameOwner || !x.opts.AllowSpecial) {
		x.wn.warn("%s: stripping setuid/setgid bits", name)
		e.mode &^= fs.ModeSetuid | fs.ModeSetgid
	}
	if !e.hasOwner && x.opts.DefaultOwner != nil {
		e.uid, e.gid, e.uname, e.gname = x.opts.DefaultOwner.UID, x.opts.DefaultOwner.GID, "", ""
		e.hasOwner = true
	}
}

// special creates a device node or fifo (only with AllowSpecial).
func (x *extractor) special(dst, name string, e *xentry) error {
	if err := x.clearFinal(dst, name); err != nil {
		return err
	}
	if err := mknod(dst, e.special, 0, e.devmajor, e.devminor); err != nil {
		return fmt.Errorf("%q: creating %s: %w", name, e.kind, err)
	}
	if x.opts.SameOwner && e.hasOwner {
		if err := os.Lchown(dst, x.uid(e), x.gid(e)); err != nil {
			return err
		}
	}
	if err := os.Chmod(dst, e.mode); err != nil {
		return err
	}
	if err := lutimes(dst, e.mtime); err != nil {
		return fmt.Errorf("setting mtime of %s: %w", dst, err)
	}
	x.st.Skipped++ // not a file, directory or link: counted like verify does
	return nil
}

// mkParents creates the missing parent directories of name below root,
// refusing symlinks and non-directories on the way.
func (x *extractor) mkParents(root, name string) error {
	parts := strings.Split(name, "/")
	cur := root
	for _, p := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, p)
		if x.okDirs[cur] {
			continue
		}
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if fi, err = os.Lstat(cur); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: %q would be written through the symlink %s", ErrUnsafeName, name, cur)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%q: parent %s is not a directory", name, cur)
		}
		if x.opts.Private {
			// Our own entries never replace a directory (clearFinal,
			// the xDir case), and nobody else writes here.
			x.okDirs[cur] = true
		}
	}
	return nil
}

// checkParents is mkParents without creating anything.
func (x *extractor) checkParents(root, name string) error {
	parts := strings.Split(name, "/")
	cur := root
	for _, p := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory (or is a symlink)", ErrUnsafeName, cur)
		}
	}
	return nil
}

// clearFinal removes an existing non-directory at dst (never following it).
func (x *extractor) clearFinal(dst, name string) error {
	fi, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%q: refusing to replace existing directory %s", name, dst)
	}
	return os.Remove(dst)
}

func (x *extractor) writeFile(dst, name string, e *xentry, content io.Reader) (err error) {
	// Created with its final permissions when nobody else can reach it
	// (Private), so that the fchmod is needed only when the umask or the
	// directory's default ACL gave it something else; otherwise 0600
	// until chown and chmod below.
	perm := uint32(0o600)
	if x.opts.Private {
		perm = uint32(e.mode.Perm())
	}
	// O_EXCL never opens what is there; only when something is there is
	// it looked at and removed (clearFinal), saving a stat per file.
	fd, err := createExcl(dst, perm)
	if errors.Is(err, fs.ErrExist) {
		if err = x.clearFinal(dst, name); err == nil {
			fd, err = createExcl(dst, perm)
		}
	}
	if err != nil {
		return err
	}
	f := rawFile(fd)
	defer func() {
		if cerr := syscall.Close(fd); err == nil && cerr != nil {
			err = &fs.PathError{Op: "close", Path: dst, Err: cerr}
		}
	}()
	// The inode (hard links may only point at files extracted here),
	// and the owner and mode creation gave it: chown and chmod only
	// what differs.
	si, got, err := fstatFd(fd)
	if err != nil {
		return &fs.PathError{Op: "fstat", Path: dst, Err: err}
	}
	x.inodes[[2]uint64{si.dev, si.ino}] = struct{}{}
	// Copy exactly e.size bytes; more (zip) or fewer is an error.
	r := &ctxReader{x.ctx, content}
	var n int64
	if e.sparse {
		n, err = x.copySparse(f, io.LimitReader(r, e.size))
	} else {
		n, err = io.CopyBuffer(onlyWriter{f}, onlyReader{io.LimitReader(r, e.size)}, x.buf)
	}
	x.st.BytesRead += n
	x.bytes += n
	if err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	if n != e.size {
		return fmt.Errorf("%q: content truncated (%d of %d bytes)", name, n, e.size)
	}
	if m, err := r.Read(x.buf[:1]); m > 0 {
		return fmt.Errorf("%q: more content than the declared %d bytes", name, e.size)
	} else if err != nil && err != io.EOF {
		return fmt.Errorf("%q: %w", name, err)
	}
	if x.opts.SameOwner && e.hasOwner {
		if uid, gid := x.uid(e), x.gid(e); uid != si.uid || gid != si.gid {
			if err := ignoringEINTR(func() error { return syscall.Fchown(fd, uid, gid) }); err != nil {
				return &fs.PathError{Op: "chown", Path: dst, Err: err}
			}
		}
	}
	// After the chown, which clears setuid/setgid (a mode with them is
	// always set: creation never gives them).
	if want := uint32(unixMode(e.mode)); want != got || want&0o7000 != 0 {
		if err := ignoringEINTR(func() error { return syscall.Fchmod(fd, want) }); err != nil {
			return &fs.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	// After chown, which would clear security.capability.
	x.setXattrs(uintptr(fd), name, e)
	if err := futimes(uintptr(fd), e.mtime); err != nil {
		return fmt.Errorf("setting mtime of %s: %w", dst, err)
	}
	x.st.Files++
	return nil
}

type onlyWriter struct{ io.Writer }

// createExcl creates the file dst (O_EXCL, never through a symlink) with
// permissions perm (before the umask) and returns its descriptor: no
// *os.File, which would register it with the poller (epoll, O_NONBLOCK
// toggles) or at least fcntl it, system calls wasted per extracted file.
func createExcl(dst string, perm uint32) (int, error) {
	for {
		fd, err := syscall.Open(dst, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|oNoFollow, perm)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: dst, Err: err}
		}
		return fd, nil
	}
}

// finishDirs applies directory attributes after all contents exist,
// deepest (last extracted) first.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		f, err := os.OpenFile(d.path, os.O_RDONLY|oDirectory|oNoFollow, 0)
		if err != nil {
			return err
		}
		if x.opts.SameOwner && d.e.hasOwner {
			if err := f.Chown(x.uid(&d.e), x.gid(&d.e)); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Chmod(d.e.mode); err != nil {
			f.Close()
			return err
		}
		x.setXattrs(f.Fd(), d.name, &d.e)
		if err := futimes(f.Fd(), d.e.mtime); err != nil {
			f.Close()
			return fmt.Errorf("setting mtime of %s: %w", d.path, err)
		}
		f.Close()
	}
	return nil
}

// uid maps an entry's owner to a local uid: by name when the name exists
// here, otherwise the stored numeric id.
func (x *extractor) uid(e *xentry) int {
	if e.uname == "" {
		return e.uid
	}
	id, ok := x.uids[e.uname]
	if !ok {
		id = -1
		if u, err := user.Lookup(e.uname); err == nil {
			if n, err := strconv.Atoi(u.Uid); err == nil {
				id = n
			}
		}
		x.uids[e.uname] = id
	}
	if id < 0 {
		return e.uid
	}
	return id
}

func (x *extractor) gid(e *xentry) int {
	if e.gname == "" {
		return e.gid
	}
	id, ok := x.gids[e.gname]
	if !ok {
		id = -1
		if g, err := user.LookupGroup(e.gname); err == nil {
			if n, err := strconv.Atoi(g.Gid); err == nil {
				id = n
			}
		}
		x.gids[e.gname] = id
	}
	if id < 0 {
		return e.gid
	}
	return id
}

// sparseBlock is the granularity at which zero runs of sparse entries
// become holes (the page and usual file system block size).
const sparseBlock = 4096

// copySparse writes r to f, seeking over all-zero blocks instead of writing
// them, and sets the final size, so a sparse entry's holes stay holes (GNU
// tar --sparse restores them the same way). Reads are buffer-sized, so
// blocks stay aligned to the file offset.
func (x *extractor) copySparse(f rawFile, r io.Reader) (int64, error) {
	var pos int64
	for {
		m, err := io.ReadFull(r, x.buf)
		if m > 0 {
			if werr := writeNonZero(f, x.buf[:m], pos); werr != nil {
				return pos, werr
			}
			pos += int64(m)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return pos, f.Truncate(pos)
		}
		if err != nil {
			return pos, err
		}
	}
}

// writeNonZero writes the blocks of b that are not all zero at off.
func writeNonZero(f rawFile, b []byte, off int64) error {
	start := -1 // start of the current run of data blocks
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		_, err := f.WriteAt(b[start:end], off+int64(start))
		start = -1
		return err
	}
	for i := 0; i < len(b); i += sparseBlock {
		end := min(i+sparseBlock, len(b))
		if !allZero(b[i:end]) {
			if start < 0 {
				start = i
			}
		} else if err := flush(i); err != nil {
			return err
		}
	}
	return flush(len(b))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// setXattrs restores e's extended attributes and POSIX ACLs on f. GNU tar's
// policy: user.* always, ACLs from SCHILY.acl.* (names mapped to local ids;
// the raw system.posix_acl_* xattr only when the text form is absent),
// everything else (security.capability, trusted.*, ...) only with
// AllowSpecial. Failures are warnings, as in GNU tar.
func (x *extractor) setXattrs(fd uintptr, name string, e *xentry) {
	aclNames := [2]string{xattrACLAccess, xattrACLDefault}
	for _, a := range e.xattrs {
		switch {
		case a.name == aclNames[0] && e.acls[0] != nil, a.name == aclNames[1] && e.acls[1] != nil:
			continue // the text form, with names, wins
		case strings.HasPrefix(a.name, "user."), a.name == aclNames[0], a.name == aclNames[1]:
		case !x.opts.AllowSpecial:
			if !x.warned[a.name] {
				x.warned[a.name] = true
				x.wn.warn("%s: not restoring extended attribute %s (only user.* and ACLs are restored by default)", name, a.name)
			}
			continue
		}
		if err := setxattrFd(fd, a.name, []byte(a.value)); err != nil {
			x.wn.warn("%s: cannot restore extended attribute %s: %v", name, a.name, err)
		}
	}
	for i, acl := range e.acls {
		if acl == nil || (i == 1 && e.typ != xDir) {
			continue
		}
		v, err := aclXattr(acl, &x.ids)
		if err == nil {
			err = setxattrFd(fd, aclNames[i], v)
		}
		if err != nil {
			x.wn.warn("%s: cannot restore ACL %s: %v", name, aclNames[i], err)
		}
	}
}
