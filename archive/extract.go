package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	Logger     *slog.Logger
}

// DefaultMaxEntries is used when ExtractOptions.MaxEntries is 0.
const DefaultMaxEntries = 10_000_000

// maxSymlinkTarget bounds the content of zip symlink entries.
const maxSymlinkTarget = 4096

// ExtractFile extracts the archive at path into target (an existing directory). It refuses — with an
// error, and without writing anything outside target — any entry whose name is absolute, contains
// "..", or would be written through a symlink (a symlink entry followed by an entry inside it, or an
// existing symlink inside target), hard links whose target is outside the archive's extracted tree,
// device nodes and fifos (skip with a warning), and strips setuid/setgid bits unless SameOwner.
// Restores modes, mtimes (dirs after their contents), and owners when SameOwner.
//
// Details: the archive is processed in one pass, so on error target may
// hold the entries extracted so far (extract into a staging directory when
// that matters). Existing files at an entry's name are replaced (unlinked
// first, never written through); an existing directory is never replaced
// by a non-directory (error). A hard link must point to a regular file
// extracted earlier by this call. Missing parent directories are created
// with mode 0755. Tar owners are restored by user/group name when the name
// exists on this system, otherwise by numeric id (like GNU tar); zip owners
// come from the Info-ZIP "ux" field. The attributes of target itself are
// never changed. The whole stream is read to the end so that compressor
// checksums are verified; corruption is an error.
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
	if fi, err := os.Stat(root); err != nil {
		return st, fmt.Errorf("archive: extract: target: %w", err)
	} else if !fi.IsDir() {
		return st, fmt.Errorf("archive: extract: target %s is not a directory", root)
	}
	x := &extractor{
		ctx: ctx, root: root, opts: opts, st: &st,
		wn:     &warner{stats: &st, log: loggerOr(opts.Logger)},
		inodes: map[[2]uint64]struct{}{},
		uids:   map[string]int{}, gids: map[string]int{},
		buf: make([]byte, copyBufSize),
	}
	defer x.wn.finish()
	if x.opts.MaxEntries <= 0 {
		x.opts.MaxEntries = DefaultMaxEntries
	}
	for _, p := range opts.Prefixes {
		x.prefixes = append(x.prefixes, EntryName(p))
	}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("archive: extract: %w", err)
	}
	defer f.Close()
	if format == FormatZip {
		err = x.zip(f)
	} else {
		err = x.tar(bufio.NewReaderSize(f, 1<<20), format)
	}
	if err == nil {
		err = x.finishDirs()
	}
	if err != nil {
		return st, fmt.Errorf("archive: extract %s: %w", path, wrapCtx(ctx, err))
	}
	return st, nil
}

type xtype int

const (
	xDir xtype = iota
	xFile
	xSymlink
	xHardlink
	xOther
)

type xentry struct {
	name         string
	typ          xtype
	kind         string // for xOther
	mode         fs.FileMode
	uid, gid     int
	uname, gname string
	hasOwner     bool
	mtime        time.Time
	size         int64
	linkname     string
}

type dirAttr struct {
	path string
	e    xentry
}

type extractor struct {
	ctx      context.Context
	root     string
	opts     ExtractOptions
	st       *Stats
	wn       *warner
	prefixes []string
	entries  int64
	bytes    int64
	inodes   map[[2]uint64]struct{}
	dirs     []dirAttr
	uids     map[string]int
	gids     map[string]int
	buf      []byte
}

func fileMode(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func (x *extractor) tar(r io.Reader, format string) error {
	dr, closeFn, err := newDecompressor(&ctxReader{x.ctx, r}, format)
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
			return fmt.Errorf("reading entry %d: %w", x.entries+1, err)
		}
		e := xentry{name: h.Name, mode: fileMode(h.Mode), uid: h.Uid, gid: h.Gid, uname: h.Uname, gname: h.Gname,
			hasOwner: true, mtime: h.ModTime, size: h.Size, linkname: h.Linkname}
		switch h.Typeflag {
		case tar.TypeDir:
			e.typ = xDir
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			e.typ = xFile
		case tar.TypeSymlink:
			e.typ = xSymlink
		case tar.TypeLink:
			e.typ = xHardlink
		case tar.TypeChar:
			e.typ, e.kind = xOther, "character device"
		case tar.TypeBlock:
			e.typ, e.kind = xOther, "block device"
		case tar.TypeFifo:
			e.typ, e.kind = xOther, "fifo"
		default:
			e.typ, e.kind = xOther, fmt.Sprintf("unsupported tar entry type %q", h.Typeflag)
		}
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

func (x *extractor) zip(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	zr, err := zip.NewReader(f, fi.Size())
	if err != nil {
		return err
	}
	for _, zf := range zr.File {
		m := zf.Mode()
		e := xentry{name: zf.Name, mode: m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), mtime: zf.Modified,
			size: int64(zf.UncompressedSize64)}
		e.uid, e.gid, e.hasOwner = parseUx(zf.Extra)
		switch {
		case m.IsDir() || strings.HasSuffix(zf.Name, "/"):
			e.typ = xDir
		case m.IsRegular():
			e.typ = xFile
		case m&fs.ModeSymlink != 0:
			e.typ = xSymlink
		default:
			e.typ, e.kind = xOther, typeName(m)
		}
		if zf.UncompressedSize64 > 1<<62 {
			return fmt.Errorf("%q: implausible size", zf.Name)
		}
		var rc io.ReadCloser
		if e.typ == xFile || e.typ == xSymlink {
			if rc, err = zf.Open(); err != nil {
				return fmt.Errorf("%q: %w", zf.Name, err)
			}
		}
		if e.typ == xSymlink {
			if e.size > maxSymlinkTarget {
				rc.Close()
				return fmt.Errorf("%q: symlink target too long (%d bytes)", zf.Name, e.size)
			}
			b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
			rc.Close()
			if err != nil {
				return fmt.Errorf("%q: %w", zf.Name, err)
			}
			e.linkname, e.size = string(b), 0
		}
		var content io.Reader = eofReader{}
		if e.typ == xFile {
			content = rc
		}
		err = x.extract(&e, content)
		if rc != nil && e.typ == xFile {
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

func (x *extractor) selected(name string) bool {
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
	x.entries++
	if x.entries > x.opts.MaxEntries {
		return fmt.Errorf("archive has more than %d entries; refusing", x.opts.MaxEntries)
	}
	name, err := cleanName(e.name)
	if err != nil {
		return fmt.Errorf("refusing entry: %w", err)
	}
	if e.typ == xHardlink {
		// Validate before the prefix filter: a hostile name is refused
		// wherever it is.
		if _, err := cleanName(e.linkname); err != nil {
			return fmt.Errorf("refusing hard link %q: %w", e.name, err)
		}
	}
	if !x.selected(name) {
		return nil
	}
	if name == "." {
		if e.typ == xDir {
			return nil // never change target's own attributes
		}
		return fmt.Errorf("refusing non-directory entry %q naming the target itself", e.name)
	}
	if e.typ == xOther {
		x.st.Skipped++
		x.wn.warn("skipping %s: %s", name, e.kind)
		return nil
	}
	if e.mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 && !x.opts.SameOwner {
		x.wn.warn("%s: stripping setuid/setgid bits (owners are not restored)", name)
		e.mode &^= fs.ModeSetuid | fs.ModeSetgid
	}
	dst := filepath.Join(x.root, filepath.FromSlash(name))
	if err := x.mkParents(name); err != nil {
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
		x.dirs = append(x.dirs, dirAttr{dst, *e})
		x.st.Dirs++
	case xFile:
		if x.opts.MaxBytes > 0 && x.bytes+e.size > x.opts.MaxBytes {
			return fmt.Errorf("extracted content would exceed %d bytes at %q; refusing", x.opts.MaxBytes, name)
		}
		if err := x.clearFinal(dst, name); err != nil {
			return err
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
		src := filepath.Join(x.root, filepath.FromSlash(ln))
		if err := x.checkParents(ln); err != nil {
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
	}
	return nil
}

// mkParents creates the missing parent directories of name below root,
// refusing symlinks and non-directories on the way.
func (x *extractor) mkParents(name string) error {
	parts := strings.Split(name, "/")
	cur := x.root
	for _, p := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, p)
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
	}
	return nil
}

// checkParents is mkParents without creating anything.
func (x *extractor) checkParents(name string) error {
	parts := strings.Split(name, "/")
	cur := x.root
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
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	si := statSys(fi)
	x.inodes[[2]uint64{si.dev, si.ino}] = struct{}{}
	// Copy exactly e.size bytes; more (zip) or fewer is an error.
	r := &ctxReader{x.ctx, content}
	n, err := io.CopyBuffer(onlyWriter{f}, onlyReader{io.LimitReader(r, e.size)}, x.buf)
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
		if err := f.Chown(x.uid(e), x.gid(e)); err != nil {
			return err
		}
	}
	if err := f.Chmod(e.mode); err != nil {
		return err
	}
	if err := futimes(f.Fd(), e.mtime); err != nil {
		return fmt.Errorf("setting mtime of %s: %w", dst, err)
	}
	x.st.Files++
	return nil
}

type onlyWriter struct{ io.Writer }

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
