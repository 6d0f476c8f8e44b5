package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/backupgen/backupgen/config"
	"github.com/bmatcuk/doublestar/v4"
)

// Test hooks (nil in production): testHookVisit runs for every walked path
// before it is examined, testHookBeforeOpen right before a regular file is
// opened. Tests use them to make files vanish deterministically.
var (
	testHookVisit      func(path string)
	testHookBeforeOpen func(path string)
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
}

// sink is the archive-format side of Write.
type sink interface {
	hardlinks() bool
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
// A data path that is itself a symlink is resolved (like `find -H`): the
// target's contents are archived under the data path's name. Symlinks below a
// data path are stored, never followed. Hard links are tracked per data path,
// so every data path can be restored on its own. If w is an *os.File that lies
// inside a data path, that file is skipped with a warning.
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

	var out *sysInfo
	if f, ok := w.(*os.File); ok {
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
		bw := bufio.NewWriterSize(w, copyBufSize)
		// Zip has no hard links: a capture for zip stores every file in
		// full, so Convert never has to look one up.
		s = &tarSink{comp: flushCloser{bw}, tw: tar.NewWriter(bw), noLinks: opts.Format == FormatZip}
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

	wk := &walker{ctx: ctx, s: s, st: &st, wn: wn, excl: excl, buf: make([]byte, copyBufSize),
		users: map[int]string{}, groups: map[int]string{}, out: out, prog: opts.Progress}
	for _, r := range roots {
		if err := wk.walk(r.path, r.real); err != nil {
			return st, err
		}
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("archive: %w", err)
	}
	if err := s.close(); err != nil {
		return st, fmt.Errorf("archive: finishing %s archive: %w", opts.Format, err)
	}
	if err := flush(); err != nil {
		return st, fmt.Errorf("archive: writing %s archive: %w", opts.Format, err)
	}
	return st, nil
}

// root is a data path to walk: path is the name it is archived under, real
// the directory or regular file its content is read from.
type root struct{ path, real string }

// sameRoots makes each data path its own source.
func sameRoots(dataPaths []string) []Root {
	roots := make([]Root, len(dataPaths))
	for i, p := range dataPaths {
		roots[i] = Root{Name: p, Dir: p}
	}
	return roots
}

// resolveRoots checks the data paths (absolute, existing, a directory or a
// regular file) and resolves a source that is a symlink, like `find -H`.
func resolveRoots(dataPaths []Root, log *slog.Logger) ([]root, error) {
	if len(dataPaths) == 0 {
		return nil, errors.New("archive: no data paths")
	}
	roots := make([]root, 0, len(dataPaths))
	for _, dp := range dataPaths {
		p := dp.Name
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("archive: data path %q is not absolute", p)
		}
		p = filepath.Clean(p)
		src := p
		if dp.Dir != dp.Name {
			if !filepath.IsAbs(dp.Dir) {
				return nil, fmt.Errorf("archive: source %q of data path %s is not absolute", dp.Dir, p)
			}
			src = filepath.Clean(dp.Dir)
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return nil, fmt.Errorf("archive: data path %s: %w", p, err)
		}
		real := src
		if fi.Mode()&fs.ModeSymlink != 0 {
			if real, err = filepath.EvalSymlinks(src); err != nil {
				return nil, fmt.Errorf("archive: data path %s: resolving symlink: %w", p, err)
			}
			if fi, err = os.Lstat(real); err != nil {
				return nil, fmt.Errorf("archive: data path %s (-> %s): %w", p, real, err)
			}
			log.Info("archive: data path is a symlink; archiving its target under the data path's name", "path", p, "target", real)
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("archive: data path %s is neither a directory nor a regular file (%s)", p, fi.Mode().Type())
		}
		roots = append(roots, root{p, real})
	}
	return roots, nil
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
	excl   []excludePattern
	buf    []byte
	users  map[int]string
	groups map[int]string
	links  map[[2]uint64]string
	out    *sysInfo
	prog   *Progress
}

// walkData walks the data path real (archived as dataPath) for Write and
// Clone: it checks ctx at every entry, applies the excludes, warns about
// and skips entries that vanish while walked (verb says what was being
// done), and calls visit with each entry's slash-separated path relative to
// real ("." for real itself) and its FileInfo.
func walkData(ctx context.Context, dataPath, real, verb string, excl []excludePattern, wn *warner,
	visit func(p, rel string, d fs.DirEntry, fi fs.FileInfo) error) error {
	vanished := func(p string, d fs.DirEntry) error {
		wn.warn("%s vanished while %s", p, verb)
		if d != nil && d.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	return filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if testHookVisit != nil {
			testHookVisit(p)
		}
		if e := ctx.Err(); e != nil {
			return fmt.Errorf("archive: %w", e)
		}
		if err != nil {
			if p == real {
				return fmt.Errorf("archive: data path %s: %w", dataPath, err)
			}
			if errors.Is(err, fs.ErrNotExist) {
				return vanished(p, d)
			}
			return fmt.Errorf("archive: %w", err)
		}
		rel, err := filepath.Rel(real, p)
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		rel = filepath.ToSlash(rel)
		if rel != "." && excluded(excl, rel, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return vanished(p, d)
			}
			return fmt.Errorf("archive: %w", err)
		}
		return visit(p, rel, d, fi)
	})
}

// readlinkWalked reads the target of the symlink p met by walkData. A
// symlink that vanished or was replaced meanwhile is warned about: ok is
// false and err nil.
func readlinkWalked(p, verb string, wn *warner) (target string, ok bool, err error) {
	target, err = os.Readlink(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EINVAL) {
			wn.warn("%s vanished or changed while %s", p, verb)
			return "", false, nil
		}
		return "", false, fmt.Errorf("archive: %w", err)
	}
	return target, true, nil
}

func (wk *walker) walk(dataPath, real string) error {
	wk.links = map[[2]uint64]string{}
	base := EntryName(dataPath)
	return walkData(wk.ctx, dataPath, real, "archiving", wk.excl, wk.wn, func(p, rel string, d fs.DirEntry, fi fs.FileInfo) error {
		name := base
		if rel != "." {
			name = path.Join(base, rel)
		}
		if wk.out != nil {
			if si := statSys(fi); si.ok && si.dev == wk.out.dev && si.ino == wk.out.ino {
				wk.wn.warn("skipping %s: it is the archive being written", p)
				wk.st.Skipped++
				return nil
			}
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			e := wk.newEntry(name+"/", typeDir, fi)
			if _, err := wk.s.add(e); err != nil {
				return fmt.Errorf("archive: %s: %w", p, err)
			}
			wk.st.Dirs++
		case m.IsRegular():
			return wk.file(p, name, fi)
		case m&fs.ModeSymlink != 0:
			target, ok, err := readlinkWalked(p, "archiving", wk.wn)
			if !ok {
				return err
			}
			e := wk.newEntry(name, typeSymlink, fi)
			e.linkname = target
			if _, err := wk.s.add(e); err != nil {
				return fmt.Errorf("archive: %s: %w", p, err)
			}
			wk.st.Symlinks++
		default:
			wk.st.Skipped++
			wk.wn.warn("skipping %s: %s", p, typeName(m))
		}
		return nil
	})
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

func (wk *walker) newEntry(name string, typ entryType, fi fs.FileInfo) *entry {
	si := statSys(fi)
	e := &entry{name: name, typ: typ, mode: fi.Mode(), mtime: fi.ModTime(), uid: si.uid, gid: si.gid}
	if si.ok {
		e.uname = wk.userName(si.uid)
		e.gname = wk.groupName(si.gid)
	} else {
		e.uid, e.gid = 0, 0
	}
	return e
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

func (wk *walker) file(p, name string, fi fs.FileInfo) error {
	si := statSys(fi)
	var linkKey [2]uint64
	track := wk.s.hardlinks() && si.ok && si.nlink > 1
	if track {
		linkKey = [2]uint64{si.dev, si.ino}
		if first, ok := wk.links[linkKey]; ok {
			e := wk.newEntry(name, typeHardlink, fi)
			e.linkname = first
			if _, err := wk.s.add(e); err != nil {
				return fmt.Errorf("archive: %s: %w", p, err)
			}
			wk.st.Hardlinks++
			return nil
		}
	}
	if testHookBeforeOpen != nil {
		testHookBeforeOpen(p)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|oNoFollow|oNonBlock, 0)
	if err != nil {
		if openErrorIsVanished(err) {
			wk.wn.warn("%s vanished or changed type while archiving", p)
			return nil
		}
		return fmt.Errorf("archive: %w", err)
	}
	defer f.Close()
	fi2, err := f.Stat()
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if si2 := statSys(fi2); !fi2.Mode().IsRegular() || (si.ok && (si2.dev != si.dev || si2.ino != si.ino)) {
		wk.wn.warn("%s was replaced while archiving; skipped", p)
		wk.st.Skipped++
		return nil
	}
	e := wk.newEntry(name, typeFile, fi2)
	e.size = fi2.Size()
	cw, err := wk.s.add(e)
	if err != nil {
		return fmt.Errorf("archive: %s: %w", p, err)
	}
	n, err := wk.copy(cw, f, e.size)
	if err != nil {
		return fmt.Errorf("archive: %s: %w", p, err)
	}
	if n < e.size {
		wk.wn.warn("%s shrank while being read (%d of %d bytes); padded with zeros", p, n, e.size)
	} else if fi3, err := f.Stat(); err == nil && (fi3.Size() != e.size || !fi3.ModTime().Equal(e.mtime)) {
		wk.wn.warn("%s changed as we read it", p)
	}
	if err := wk.s.endFile(e, n); err != nil {
		return fmt.Errorf("archive: %s: %w", p, err)
	}
	if track {
		wk.links[linkKey] = name
	}
	wk.st.Files++
	wk.st.BytesRead += n
	wk.prog.addFile()
	return nil
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
	noLinks bool // store hard-linked files in full (a capture for zip)
}

func (s *tarSink) hardlinks() bool { return !s.noLinks }

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
