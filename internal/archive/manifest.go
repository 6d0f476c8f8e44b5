package archive

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
)

// A manifest lists every entry of an archive as a restore must reproduce
// it: type, mode, size, the SHA-256 of a regular file's content, a link's
// target. Write and Convert produce it while they write the archive
// (Options.Manifest), from the bytes they read anyway, so it costs one
// SHA-256 of the content and no second read; a restore drill extracts the
// archive and compares the result with it.

// Manifest entry types.
const (
	ManifestDir      = 'd'
	ManifestFile     = 'f'
	ManifestSymlink  = 'l'
	ManifestHardlink = 'h'
)

// ManifestEntry is one archive entry.
type ManifestEntry struct {
	Type byte   // ManifestDir, ManifestFile, ManifestSymlink, ManifestHardlink
	Mode int64  // permission and setuid/setgid/sticky bits, as in a tar header
	Size int64  // regular files: the size a restore gives the file
	Sum  []byte // regular files: SHA-256 of the content (holes and padding as zeros); nil: unknown (it changed while read)
	Name string // the entry's name, directories without the trailing "/"
	Link string // symlink target, or the name a hard link links to
}

// ManifestSink receives the entries of an archive as it is written, in
// archive order. It must not fail the archive: a sink that cannot store an
// entry keeps the error for its owner.
type ManifestSink interface {
	Add(ManifestEntry)
}

// manifestHeader is the first line of a manifest file.
const manifestHeader = "# backupgen manifest v1"

// ManifestWriter writes a manifest file, one line per entry:
// TYPE MODE SIZE SHA256|- QUOTED-NAME [QUOTED-LINK]. Names are Go-quoted,
// so any byte in a name survives and a line cannot be forged by one. It
// keeps nothing per entry in memory.
type ManifestWriter struct {
	w   *bufio.Writer
	err error
	n   int64
}

// NewManifestWriter starts a manifest written to w.
func NewManifestWriter(w io.Writer) *ManifestWriter {
	m := &ManifestWriter{w: bufio.NewWriterSize(w, 64<<10)}
	_, m.err = m.w.WriteString(manifestHeader + "\n")
	return m
}

// Add writes e (errors are kept for Close).
func (m *ManifestWriter) Add(e ManifestEntry) {
	if m.err != nil {
		return
	}
	sum := "-"
	if e.Sum != nil {
		sum = hex.EncodeToString(e.Sum)
	}
	line := fmt.Sprintf("%c %04o %d %s %s", e.Type, e.Mode, e.Size, sum, strconv.Quote(e.Name))
	if e.Type == ManifestSymlink || e.Type == ManifestHardlink {
		line += " " + strconv.Quote(e.Link)
	}
	_, m.err = m.w.WriteString(line + "\n")
	m.n++
}

// Close flushes the manifest and returns the first error met.
func (m *ManifestWriter) Close() error {
	if m.err == nil {
		m.err = m.w.Flush()
	}
	return m.err
}

// Entries is the number of entries added.
func (m *ManifestWriter) Entries() int64 { return m.n }

// ManifestReader reads a manifest file line by line.
type ManifestReader struct {
	s    *bufio.Scanner
	line int
}

// NewManifestReader checks the header of the manifest in r.
func NewManifestReader(r io.Reader) (*ManifestReader, error) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	if !s.Scan() || s.Text() != manifestHeader {
		if err := s.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("not a backupgen manifest (bad first line)")
	}
	return &ManifestReader{s: s, line: 1}, nil
}

// Next returns the next entry; io.EOF at the end.
func (mr *ManifestReader) Next() (ManifestEntry, error) {
	if !mr.s.Scan() {
		if err := mr.s.Err(); err != nil {
			return ManifestEntry{}, err
		}
		return ManifestEntry{}, io.EOF
	}
	mr.line++
	e, err := parseManifestLine(mr.s.Text())
	if err != nil {
		return e, fmt.Errorf("manifest line %d: %w", mr.line, err)
	}
	return e, nil
}

func parseManifestLine(line string) (e ManifestEntry, err error) {
	f := strings.SplitN(line, " ", 5)
	if len(f) != 5 || len(f[0]) != 1 || !strings.ContainsRune("dflh", rune(f[0][0])) {
		return e, errors.New("malformed entry")
	}
	e.Type = f[0][0]
	if e.Mode, err = strconv.ParseInt(f[1], 8, 64); err != nil {
		return e, fmt.Errorf("mode: %w", err)
	}
	if e.Size, err = strconv.ParseInt(f[2], 10, 64); err != nil || e.Size < 0 {
		return e, errors.New("bad size")
	}
	if f[3] != "-" {
		if e.Sum, err = hex.DecodeString(f[3]); err != nil || len(e.Sum) != sha256.Size {
			return e, errors.New("bad SHA-256")
		}
	}
	rest := f[4]
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return e, errors.New("bad name")
	}
	e.Name, _ = strconv.Unquote(q)
	rest = rest[len(q):]
	if e.Type == ManifestSymlink || e.Type == ManifestHardlink {
		if !strings.HasPrefix(rest, " ") {
			return e, errors.New("missing link target")
		}
		if e.Link, err = strconv.Unquote(rest[1:]); err != nil {
			return e, errors.New("bad link target")
		}
	} else if rest != "" {
		return e, errors.New("trailing data")
	}
	return e, nil
}

// fileSum hashes one regular file's content for the manifest as it is
// copied into the archive. A sparse file's holes are hashed as the zeros
// a restore reads there.
type fileSum struct {
	h   hash.Hash
	pos int64
}

func newFileSum() *fileSum { return &fileSum{h: sha256.New()} }

func (f *fileSum) Write(p []byte) (int, error) {
	f.h.Write(p)
	f.pos += int64(len(p))
	return len(p), nil
}

var zeroBlock [32 << 10]byte

// zeroTo hashes zeros up to offset off.
func (f *fileSum) zeroTo(off int64) {
	for f.pos < off {
		n := min(off-f.pos, int64(len(zeroBlock)))
		f.Write(zeroBlock[:n])
	}
}

func (f *fileSum) sum() []byte { return f.h.Sum(nil) }

// manifestName is an entry name as the manifest lists it.
func manifestName(name string) string { return strings.TrimSuffix(name, "/") }

// note adds the entry e (not a regular file's: endSum) to the manifest.
func (wk *walker) note(e *entry, sum []byte) {
	if wk.man == nil {
		return
	}
	me := ManifestEntry{Mode: unixMode(e.mode), Name: manifestName(e.name), Link: e.linkname}
	switch e.typ {
	case typeDir:
		me.Type = ManifestDir
	case typeSymlink:
		me.Type = ManifestSymlink
	case typeHardlink:
		me.Type = ManifestHardlink
	case typeFile:
		me.Type, me.Size, me.Sum = ManifestFile, e.size, sum
	}
	wk.man.Add(me)
}

// startSum starts hashing the content of the next regular file.
func (wk *walker) startSum() {
	if wk.man != nil {
		wk.sum = newFileSum()
	}
}

// endSum adds the regular file e, of which written bytes were read, to
// the manifest. A tar entry keeps the file's size (its holes and any
// padding are zeros); a zip entry holds what was read. The content of a
// file that changed while read is not known for certain: no SHA-256.
func (wk *walker) endSum(e *entry, written int64, changed bool) {
	if wk.sum == nil {
		return
	}
	f := wk.sum
	wk.sum = nil
	if !wk.s.rich() {
		e = &entry{name: e.name, typ: e.typ, mode: e.mode, size: written}
	}
	var sum []byte
	if !changed {
		f.zeroTo(e.size)
		sum = f.sum()
	}
	wk.note(e, sum)
}

// noteHeader adds the entry of a capture's tar header h to man (Convert),
// with sum the SHA-256 of a regular file's content.
func noteHeader(man ManifestSink, h *tar.Header, sum []byte) {
	me := ManifestEntry{Mode: h.Mode & 0o7777, Name: manifestName(h.Name), Link: h.Linkname}
	switch h.Typeflag {
	case tar.TypeDir:
		me.Type = ManifestDir
	case tar.TypeSymlink:
		me.Type = ManifestSymlink
	case tar.TypeLink:
		me.Type = ManifestHardlink
	case tar.TypeReg:
		me.Type, me.Size, me.Sum = ManifestFile, h.Size, sum
	default:
		return
	}
	man.Add(me)
}

func sumOf(f *fileSum) []byte {
	if f == nil {
		return nil
	}
	return f.sum()
}
