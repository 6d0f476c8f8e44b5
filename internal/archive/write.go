package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os/user"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/bmatcuk/doublestar/v4"
)

// Test hooks (nil in production): testHookVisit runs for every walked path
// before it is examined, testHookBeforeOpen right before a regular file is
// opened. Tests use them to make files vanish deterministically.
var (
	testHookVisit      func(path string)
	testHookBeforeOpen func(path string)
	testHookAfterOpen  func(path string) // a regular file was opened and fstat'ed
)

const copyBufSize = 1 << 20

type entryType byte

const (
	typeDir entryType = iota
	typeFile
	typeSymlink
	typeHardlink
)

type entry struct {
	name     string // archive name; directories end in "/"
	typ      entryType
	mode     fs.FileMode
	uid, gid int
	uname    string
	gname    string
	mtime    time.Time
	size     int64  // regular files
	linkname string // symlink target or hard-link target entry name
	// tar only (sink.rich): PAX records of the extended attributes and
	// ACLs (SCHILY.xattr.NAME, SCHILY.acl.access, SCHILY.acl.default),
	// and the data extents of a sparse file (nil: not sparse).
	pax    map[string]string
	sparse []extent
}

// dataSize is the number of content bytes stored for e: its size, or the
// sum of its data extents when it is sparse.
func (e *entry) dataSize() int64 {
	if e.sparse == nil {
		return e.size
	}
	var n int64
	for _, x := range e.sparse {
		n += x.len
	}
	return n
}

// sink is the archive-format side of Write.
type sink interface {
	hardlinks() bool
	// rich reports whether the format keeps extended attributes, ACLs and
	// holes of sparse files (tar: yes, zip: no).
	rich() bool
	// add writes the header of e; for regular files it returns the writer
	// the content goes to, followed by a call to endFile.
	add(e *entry) (io.Writer, error)
	// endFile completes a regular file of which written bytes were written.
	endFile(e *entry, written int64) error
	// close writes the archive trailer and closes the compressor.
	close() error
	// abort releases resources after an error (output is garbage then).
	abort()
}

// Write streams one archive of all dataPaths (absolute paths to directories
// or files) to w. Memory stays bounded whatever the data size (one copy
// buffer, the compressor's window and blocks, one directory listing at a time,
// and a map of multiply-linked inodes of the current data path). It honors
// ctx cancellation between entries and inside large copies and then returns
// an error wrapping ctx.Err().
//
// The walk goes through directory descriptors (see fswalk.go): symlinks
// below a data path are stored, never followed, and no path below a data
// path is resolved again (paths may exceed PATH_MAX). A data path reached
// through a symlink (itself or a parent) is followed only when only root
// can have made that symlink (openRoot); its target's contents are then
// archived under the data path's name; any other symlink on the way is an
// error. Hard links are tracked per data path, so every data path can be
// restored on its own. If w is an *os.File that lies inside a data path,
// that file is skipped with a warning; so is every directory in
// opts.SkipDirs. Files that change while read are counted in
// Stats.Changed. Tar archives keep xattrs, POSIX ACLs and holes
// (richmeta.go).
//
// On error the output is incomplete and must be discarded.
func Write(ctx context.Context, w io.Writer, dataPaths []string, opts Options) (st Stats, err error) {
	return write(ctx, w, sameRoots(dataPaths), opts, false)
}

// write is Write (or Capture when capture is set) of the data paths, each
// given as a Root whose Dir is the data path itself or, for WriteTree, the
// tree holding its content.
func write(ctx context.Context, w io.Writer, dataPaths []Root, opts Options, capture bool) (st Stats, err error) {
	if err := checkFormat(opts.Format); err != nil {
		return st, err
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	log := loggerOr(opts.Logger)
	wn := &warner{stats: &st, log: log}
	defer wn.finish()

	excl, err := compileExcludes(opts.Exclude)
	if err != nil {
		return st, err
	}
	roots, err := resolveRoots(dataPaths, log)
	if err != nil {
		return st, err
	}
	defer closeRoots(roots)

	var out *sysInfo
	if f := outputFileOf(w); f != nil {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			si := statSys(fi)
			if si.ok {
				out = &si
			}
		}
	}

	var s sink
	dst, flush := w, func() error { return nil }
	if !capture {
		dst, flush = bufferOutput(w)
	}
	switch {
	case capture:
		s = newCaptureSink(w, opts.Format == FormatZip) // capture_copy.go
	case opts.Format == FormatZip:
		if s, err = newZipSink(dst, opts.Level, threads); err != nil {
			return st, err
		}
	default:
		comp, err := newCompressor(ctx, dst, opts.Format, opts.Level, threads, log)
		if err != nil {
			return st, err
		}
		s = &tarSink{comp: comp, tw: tar.NewWriter(comp)}
	}
	defer func() {
		if err != nil {
			s.abort()
		}
	}()

	wk := &walker{ctx: ctx, s: s, st: &st, wn: wn, buf: make([]byte, copyBufSize),
		users: map[int]string{}, groups: map[int]string{}, out: out, prog: opts.Progress}
	if !capture {
		wk.man = opts.Manifest // a capture's manifest comes from Convert
	}
	fw := &fsWalker{ctx: ctx, excl: excl, wn: wn, st: &st, verb: "archiving", skip: opts.SkipDirs, visit: wk.visit}
	for i := range roots {
		wk.links = map[[2]uint64]string{}
		wk.base = EntryName(roots[i].path)
		if err := fw.walkRoot(&roots[i]); err != nil {
			return st, err
		}
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("archive: %w", err)
	}
	if err := s.close(); err != nil {
		return st, fmt.Errorf("archive: finishing %s archive: %w", opts.Format, err)
	}
	if ts, ok := s.(*tarSink); ok {
		st.Tar = tarSumOf(ts.comp)
	}
	if err := flush(); err != nil {
		return st, fmt.Errorf("archive: writing %s archive: %w", opts.Format, err)
	}
	return st, nil
}

// root is a data path to walk: path is the name it is archived under, real
// the directory or regular file its content is read from (relative to at
// when at is set: OpenClone), n its open node until the walk takes it.
type root struct {
	path, real string
	at         *cloneBase
	rel        string
	n          *walkNode
}

// sameRoots makes each data path its own source.
func sameRoots(dataPaths []string) []Root {
	roots := make([]Root, len(dataPaths))
	for i, p := range dataPaths {
		roots[i] = Root{Name: p, Dir: p}
	}
	return roots
}

// resolveRoots checks the data paths (absolute, existing, a directory or a
// regular file) and opens each (openRoot: a symlink on the way is followed
// only when only root can have made it). Call closeRoots when done.
func resolveRoots(dataPaths []Root, log *slog.Logger) (roots []root, err error) {
	if len(dataPaths) == 0 {
		return nil, errors.New("archive: no data paths")
	}
	defer func() {
		if err != nil {
			closeRoots(roots)
		}
	}()
	for _, dp := range dataPaths {
		p := dp.Name
		if !filepath.IsAbs(p) {
			return roots, fmt.Errorf("archive: data path %q is not absolute", p)
		}
		p = filepath.Clean(p)
		r := root{path: p, real: p, at: dp.at, rel: dp.rel}
		if dp.Dir != dp.Name {
			if !filepath.IsAbs(dp.Dir) {
				return roots, fmt.Errorf("archive: source %q of data path %s is not absolute", dp.Dir, p)
			}
			r.real = filepath.Clean(dp.Dir)
		}
		if r.n, err = openRoot(&r); err != nil {
			return roots, err
		}
		roots = append(roots, r)
	}
	return roots, nil
}

// closeRoots closes the roots the walk has not taken.
func closeRoots(roots []root) {
	for i := range roots {
		if roots[i].n != nil {
			syscall.Close(roots[i].n.fd)
			roots[i].n = nil
		}
	}
}

type excludePattern struct {
	pat     string
	base    bool // no '/': match the base name at any depth
	dirOnly bool // trailing '/': directories only
}

// compileExcludes parses the patterns with config.ParseExclude, the rule
// check-config applies, so a pattern the config accepts is one the walk takes.
func compileExcludes(pats []string) ([]excludePattern, error) {
	var out []excludePattern
	for _, p := range pats {
		e, err := config.ParseExclude(p)
		if err != nil {
			return nil, fmt.Errorf("archive: exclude pattern %q: %w", p, err)
		}
		out = append(out, excludePattern{pat: e.Pattern, base: e.Base, dirOnly: e.DirOnly})
	}
	return out, nil
}

func excluded(excl []excludePattern, rel string, isDir bool) bool {
	for _, e := range excl {
		if e.dirOnly && !isDir {
			continue
		}
		s := rel
		if e.base {
			s = path.Base(rel)
		}
		if ok, _ := doublestar.Match(e.pat, s); ok {
			return true
		}
	}
	return false
}

type walker struct {
	ctx    context.Context
	s      sink
	st     *Stats
	wn     *warner
	buf    []byte
	users  map[int]string
	groups map[int]string
	links  map[[2]uint64]string
	out    *sysInfo
	prog   *Progress
	base   string       // entry name of the data path being walked
	man    ManifestSink // nil: no manifest (manifest.go)
	sum    *fileSum     // the content hash of the file being copied, for man
}

func (wk *walker) changed(p, msg string, args ...any) { noteChanged(wk.st, wk.wn, p, msg, args...) }

// visit archives one entry met by the walk.
func (wk *walker) visit(n *walkNode) error {
	name := wk.base
	if n.rel != "." {
		name = path.Join(wk.base, n.rel)
	}
	if wk.out != nil && uint64(n.st.Dev) == wk.out.dev && uint64(n.st.Ino) == wk.out.ino {
		wk.wn.warn("skipping %s: it is the archive being written", n.path)
		wk.st.Skipped++
		return nil
	}
	switch {
	case n.isDir():
		e := wk.newEntry(name+"/", typeDir, &n.st)
		if wk.s.rich() {
			wk.addXattrs(e, n.fd, n.path)
		}
		if _, err := wk.s.add(e); err != nil {
			return fmt.Errorf("archive: %s: %w", n.path, err)
		}
		wk.note(e, nil)
		wk.st.Dirs++
	case n.isRegular():
		return wk.file(n, name)
	case n.isSymlink():
		target, err := readlinkat(n.dir, "", n.name)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) {
				wk.wn.warn("%s vanished or changed while archiving", n.path)
				return nil
			}
			return fmt.Errorf("archive: readlink %s: %w", n.path, err)
		}
		e := wk.newEntry(name, typeSymlink, &n.st)
		e.linkname = target
		if _, err := wk.s.add(e); err != nil {
			return fmt.Errorf("archive: %s: %w", n.path, err)
		}
		wk.note(e, nil)
		wk.st.Symlinks++
	default:
		wk.st.Skipped++
		wk.wn.warn("skipping %s: %s", n.path, typeName(statMode(uint32(n.st.Mode))))
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "unsupported file type " + m.Type().String()
}

func (wk *walker) newEntry(name string, typ entryType, st *syscall.Stat_t) *entry {
	uid, gid := int(st.Uid), int(st.Gid)
	return &entry{name: name, typ: typ, mode: statMode(uint32(st.Mode)), mtime: statMtime(st),
		uid: uid, gid: gid, uname: wk.userName(uid), gname: wk.groupName(gid)}
}

func (wk *walker) userName(uid int) string {
	n, ok := wk.users[uid]
	if !ok {
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			n = u.Username
		}
		wk.users[uid] = n
	}
	return n
}

func (wk *walker) groupName(gid int) string {
	n, ok := wk.groups[gid]
	if !ok {
		if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
			n = g.Name
		}
		wk.groups[gid] = n
	}
	return n
}

// openErrorIsVanished classifies an error opening a listed file: true when
// the file vanished (or was replaced by a symlink) and should only be
// warned about; false for real errors such as permission denied.
func openErrorIsVanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP)
}

func (wk *walker) file(n *walkNode, name string) error {
	var linkKey [2]uint64
	track := wk.s.hardlinks() && n.st.Nlink > 1
	if track {
		linkKey = [2]uint64{uint64(n.st.Dev), uint64(n.st.Ino)}
		if first, ok := wk.links[linkKey]; ok {
			e := wk.newEntry(name, typeHardlink, &n.st)
			e.linkname = first
			if _, err := wk.s.add(e); err != nil {
				return fmt.Errorf("archive: %s: %w", n.path, err)
			}
			wk.note(e, nil)
			wk.st.Hardlinks++
			return nil
		}
	}
	var st syscall.Stat_t
	fd, ok, err := openForRead(n, &st, wk.wn, wk.st, "archiving")
	if !ok {
		return err
	}
	defer syscall.Close(fd)
	if testHookAfterOpen != nil {
		testHookAfterOpen(n.path)
	}
	e := wk.newEntry(name, typeFile, &st)
	e.size = st.Size
	if wk.s.rich() {
		wk.addXattrs(e, fd, n.path)
		e.sparse = dataExtents(fd, &st)
	}
	cw, err := wk.s.add(e)
	if err != nil {
		return fmt.Errorf("archive: %s: %w", n.path, err)
	}
	changed := wk.st.Changed
	wk.startSum()
	written, err := wk.copyFile(cw, fd, &st, e)
	if err != nil {
		return fmt.Errorf("archive: %s: %w", n.path, err)
	}
	var st2 syscall.Stat_t
	if want := e.dataSize(); written < want {
		wk.changed(n.path, "%s: file changed as we read it (shrank: %d of %d bytes read; padded with zeros)", n.path, written, want)
	} else if err := syscall.Fstat(fd, &st2); err == nil && statChanged(&st, &st2) {
		wk.changed(n.path, "%s: file changed as we read it", n.path)
	}
	if err := wk.s.endFile(e, written); err != nil {
		return fmt.Errorf("archive: %s: %w", n.path, err)
	}
	wk.endSum(e, written, wk.st.Changed != changed)
	if track {
		wk.links[linkKey] = name
	}
	wk.st.Files++
	wk.st.BytesRead += written
	if _, tar := wk.s.(*tarSink); tar && e.size > written {
		// A tar entry holds the file's size: holes and padding are zeros.
		wk.st.ZeroFill += e.size - written
	}
	wk.prog.addFile()
	return nil
}

// copyFile copies the content of the open file fd for entry e to w: the
// whole file, or only its data extents (sparse). It returns the bytes
// copied; fewer than e.dataSize() means the file shrank.
func (wk *walker) copyFile(w io.Writer, fd int, st *syscall.Stat_t, e *entry) (int64, error) {
	if c, ok := w.(captureContent); ok {
		return c.copyFrom(wk, fd, st, e) // the capture: copy_file_range
	}
	if len(e.sparse) == 0 {
		return wk.copy(w, fdReader(fd), e.size)
	}
	var total int64
	for _, x := range e.sparse {
		if wk.sum != nil {
			wk.sum.zeroTo(x.off)
		}
		n, err := wk.copy(w, io.NewSectionReader(fdReaderAt(fd), x.off, x.len), x.len)
		total += n
		if err != nil || n < x.len {
			return total, err
		}
	}
	return total, nil
}

// fdReader reads a descriptor without an *os.File (no poller registration
// per file).
type fdReader int

func (r fdReader) Read(b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(r), b)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

type fdReaderAt int

func (r fdReaderAt) ReadAt(b []byte, off int64) (int, error) {
	for {
		n, err := syscall.Pread(int(r), b, off)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// copy copies at most size bytes from r to w with the walker's fixed buffer,
// checking ctx between chunks. It returns the bytes copied; a short count
// without error means r ended early.
func (wk *walker) copy(w io.Writer, r io.Reader, size int64) (int64, error) {
	var n int64
	for n < size {
		if err := wk.ctx.Err(); err != nil {
			return n, err
		}
		chunk := wk.buf
		if rem := size - n; rem < int64(len(chunk)) {
			chunk = chunk[:rem]
		}
		m, rerr := r.Read(chunk)
		if m > 0 {
			if _, err := w.Write(chunk[:m]); err != nil {
				return n, err
			}
			if wk.sum != nil {
				wk.sum.Write(chunk[:m])
			}
			n += int64(m)
			wk.prog.addBytes(int64(m))
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
	return n, nil
}

// unixMode converts an fs.FileMode's permission and special bits to the
// octal mode stored in tar headers.
func unixMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// ---- tar ----

type tarSink struct {
	comp    io.WriteCloser
	tw      *tar.Writer
	zero    []byte
	noLinks bool  // store hard-linked files in full (a capture for zip)
	rawLeft int64 // sparse entry being written: content bytes still due
	rawPad  int64 // ... and the zero bytes that end its last block
}

func (s *tarSink) hardlinks() bool { return !s.noLinks }
func (s *tarSink) rich() bool      { return true }

func (s *tarSink) add(e *entry) (io.Writer, error) {
	h := &tar.Header{
		Name:    e.name,
		Mode:    unixMode(e.mode),
		Uid:     e.uid,
		Gid:     e.gid,
		Uname:   e.uname,
		Gname:   e.gname,
		ModTime: e.mtime,
		Format:  tar.FormatPAX,
	}
	if len(e.pax) > 0 {
		h.PAXRecords = e.pax
	}
	if e.typ == typeFile && e.sparse != nil {
		return s.addSparse(e)
	}
	switch e.typ {
	case typeDir:
		h.Typeflag = tar.TypeDir
	case typeFile:
		h.Typeflag = tar.TypeReg
		h.Size = e.size
	case typeSymlink:
		h.Typeflag = tar.TypeSymlink
		h.Linkname = e.linkname
	case typeHardlink:
		h.Typeflag = tar.TypeLink
		h.Linkname = e.linkname
	}
	if err := s.tw.WriteHeader(h); err != nil {
		return nil, err
	}
	return s.tw, nil
}

func (s *tarSink) endFile(e *entry, written int64) error {
	if e.sparse != nil {
		return s.endSparse(e, written)
	}
	for written < e.size {
		if s.zero == nil {
			s.zero = make([]byte, 32<<10)
		}
		chunk := s.zero
		if rem := e.size - written; rem < int64(len(chunk)) {
			chunk = chunk[:rem]
		}
		n, err := s.tw.Write(chunk)
		written += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *tarSink) close() error {
	if err := s.tw.Close(); err != nil {
		s.comp.Close()
		return err
	}
	return s.comp.Close()
}

func (s *tarSink) abort() {
	if a, ok := s.comp.(interface{ abort() }); ok {
		a.abort()
		return
	}
	s.comp.Close()
}

// noteChanged records a file that changed while it was read: counted and
// listed in Stats (the worker turns it into a warning result) and warned
// about, like GNU tar's "file changed as we read it".
func noteChanged(st *Stats, wn *warner, p, msg string, args ...any) {
	st.Changed++
	if len(st.ChangedFiles) < maxWarnings {
		st.ChangedFiles = append(st.ChangedFiles, p)
	}
	wn.warn(msg, args...)
}

// CheckDataPaths opens each data path as Write will (absolute, a directory
// or a regular file, reached through no symlink that someone other than
// root can have made: see openRoot) and closes it again. The worker calls
// it before stopping anything, so that a refused data path fails the run
// early.
func CheckDataPaths(dataPaths []string) error {
	roots, err := resolveRoots(sameRoots(dataPaths), nil)
	closeRoots(roots)
	return err
}
