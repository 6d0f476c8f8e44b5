package archive

import (
	"archive/tar"
	"archive/zip"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"
)

// This file holds what VerifyFile and ExtractFile share: the decoding of a
// tar or zip entry into an xentry and the rules every entry must pass
// (checker.checkEntry). Both call the same code, so an archive that
// verifies is one that restore accepts, and one that restore refuses for
// its content fails verification with the same message.

type xtype int

const (
	xDir xtype = iota
	xFile
	xSymlink
	xHardlink
	xOther
)

// xentry is one archive entry, independent of the archive format.
type xentry struct {
	name         string
	typ          xtype
	kind         string // for xOther
	special      specialKind
	devmajor     int64
	devminor     int64
	mode         fs.FileMode
	uid, gid     int
	uname, gname string
	hasOwner     bool
	mtime        time.Time
	size         int64
	linkname     string
	sparse       bool      // a GNU sparse entry: restore its holes as holes
	xattrs       []xattr   // SCHILY.xattr.* records, sorted by name
	aclText      [2]string // SCHILY.acl.access, SCHILY.acl.default (GNU tar --acls)
	acls         [2][]aclEntry
}

type specialKind int

const (
	notSpecial specialKind = iota
	specialChar
	specialBlock
	specialFifo
)

type xattr struct{ name, value string }

// recGNUSparse prefixes the PAX records of a sparse file (format 1.0);
// the xattr and ACL record keys are richmeta.go's pax* constants, shared
// by the writer.
const recGNUSparse = "GNU.sparse."

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

// tarEntry decodes a tar header. Tar always stores an owner.
func tarEntry(h *tar.Header) xentry {
	e := xentry{name: h.Name, mode: fileMode(h.Mode), uid: h.Uid, gid: h.Gid, uname: h.Uname, gname: h.Gname,
		hasOwner: true, mtime: h.ModTime, size: h.Size, linkname: h.Linkname,
		devmajor: h.Devmajor, devminor: h.Devminor}
	switch h.Typeflag {
	case tar.TypeDir:
		e.typ = xDir
	case tar.TypeReg, tar.TypeGNUSparse: // tar.Reader turns the legacy '\x00' type into TypeReg
		e.typ = xFile
		e.sparse = h.Typeflag == tar.TypeGNUSparse
	case tar.TypeSymlink:
		e.typ = xSymlink
	case tar.TypeLink:
		e.typ = xHardlink
	case tar.TypeChar:
		e.typ, e.kind, e.special = xOther, "character device", specialChar
	case tar.TypeBlock:
		e.typ, e.kind, e.special = xOther, "block device", specialBlock
	case tar.TypeFifo:
		e.typ, e.kind, e.special = xOther, "fifo", specialFifo
	default:
		e.typ, e.kind = xOther, fmt.Sprintf("unsupported tar entry type %q", h.Typeflag)
	}
	for k, v := range h.PAXRecords {
		switch {
		case strings.HasPrefix(k, paxXattr):
			e.xattrs = append(e.xattrs, xattr{strings.TrimPrefix(k, paxXattr), v})
		case k == paxACLAccess:
			e.aclText[0] = v
		case k == paxACLDefault:
			e.aclText[1] = v
		case strings.HasPrefix(k, recGNUSparse) && e.typ == xFile:
			e.sparse = true
		}
	}
	sort.Slice(e.xattrs, func(i, j int) bool { return e.xattrs[i].name < e.xattrs[j].name })
	return e
}

// zipEntry decodes a zip entry. Owners come from the Info-ZIP "ux" extra
// field; without it the entry has no owner information.
func zipEntry(zf *zip.File) (xentry, error) {
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
	case m&fs.ModeNamedPipe != 0:
		e.typ, e.kind, e.special = xOther, "fifo", specialFifo
	default:
		e.typ, e.kind = xOther, typeName(m)
	}
	if zf.UncompressedSize64 > 1<<62 {
		return e, fmt.Errorf("%q: implausible size", zf.Name)
	}
	if e.typ == xSymlink {
		// The target is the content; read it here so that verify and
		// restore judge the same entry.
		if e.size > maxSymlinkTarget {
			return e, fmt.Errorf("%q: symlink target too long (%d bytes)", zf.Name, e.size)
		}
		rc, err := zf.Open()
		if err != nil {
			return e, fmt.Errorf("%q: %w", zf.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
		rc.Close()
		if err != nil {
			return e, fmt.Errorf("%q: %w", zf.Name, err)
		}
		e.linkname, e.size = string(b), 0
	}
	return e, nil
}

// checker applies the per-entry rules of one archive pass. It remembers the
// type of every name seen (as a 64-bit hash, so memory stays small for
// millions of entries; a collision could only make a good archive fail).
type checker struct {
	max  int64
	n    int64
	seed maphash.Seed
	seen map[uint64]xtype
	// implicit holds the directories that entries' names imply but no
	// entry of their own declared: extraction creates them, so a later
	// non-directory entry of that name would have to replace a directory.
	implicit map[uint64]bool
}

func newChecker(maxEntries int64) *checker {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &checker{max: maxEntries, seed: maphash.MakeSeed(), seen: map[uint64]xtype{}, implicit: map[uint64]bool{}}
}

func (c *checker) hash(name string) uint64 { return maphash.String(c.seed, name) }

func (c *checker) lookup(name string) (xtype, bool) {
	t, ok := c.seen[c.hash(name)]
	return t, ok
}

// checkEntry validates e against the archive so far and returns its
// cleaned name. The rules (every error wraps ErrUnsafeName except the
// entry limit and malformed ACLs):
//   - at most max entries;
//   - names are relative, without "..", NUL or emptiness (cleanName);
//   - "." (the target itself) may only be a directory;
//   - no entry lies under an earlier entry of the same name that is not a
//     directory (a symlink followed by an entry "through" it, a file used
//     as a directory);
//   - a symlink, hard link, device or fifo lies inside a directory entry
//     of this archive, so a data path's root is always a directory or a
//     regular file (never a symlink such as data -> /etc);
//   - a name appears once (a directory may repeat as a directory);
//   - a hard link points to a regular file earlier in the archive;
//   - SCHILY.acl.* records parse as POSIX ACLs.
func (c *checker) checkEntry(e *xentry) (string, error) {
	c.n++
	if c.n > c.max {
		return "", fmt.Errorf("archive has more than %d entries; refusing", c.max)
	}
	name, err := cleanName(e.name)
	if err != nil {
		return "", fmt.Errorf("refusing entry: %w", err)
	}
	if name == "." && e.typ != xDir {
		return "", fmt.Errorf("%w: non-directory entry %q names the target itself", ErrUnsafeName, e.name)
	}
	if err := c.checkAncestors(name, e); err != nil {
		return "", err
	}
	if e.typ == xHardlink {
		if err := c.checkHardlink(name, e); err != nil {
			return "", err
		}
	}
	h := c.hash(name)
	if prev, ok := c.seen[h]; ok && (prev != xDir || e.typ != xDir) {
		return "", fmt.Errorf("%w: %q appears twice in the archive", ErrUnsafeName, name)
	}
	if e.typ != xDir && c.implicit[h] {
		return "", fmt.Errorf("%w: %q would replace the directory earlier entries of the archive are in", ErrUnsafeName, name)
	}
	for i, text := range e.aclText {
		if e.acls[i], err = parseACL(text); err != nil {
			return "", fmt.Errorf("%q: %s: %w", name, []string{paxACLAccess, paxACLDefault}[i], err)
		}
	}
	c.seen[h] = e.typ
	return name, nil
}

// checkAncestors refuses a name below an earlier non-directory entry, and a
// link or special entry whose parent is not a directory entry.
func (c *checker) checkAncestors(name string, e *xentry) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		t, ok := c.lookup(name[:i])
		if ok && t != xDir {
			return fmt.Errorf("%w: %q would be written through the earlier non-directory entry %q", ErrUnsafeName, name, name[:i])
		}
		if !ok {
			c.implicit[c.hash(name[:i])] = true
		}
	}
	if e.typ == xDir || e.typ == xFile {
		return nil
	}
	parent := "."
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		parent = name[:i]
	}
	if t, ok := c.lookup(parent); !ok || t != xDir {
		return fmt.Errorf("%w: %q (%s) is not inside a directory entry of the archive; a data path's root must be a directory or a regular file",
			ErrUnsafeName, name, e.describe())
	}
	return nil
}

func (c *checker) checkHardlink(name string, e *xentry) error {
	ln, err := cleanName(e.linkname)
	if err != nil {
		return fmt.Errorf("refusing hard link %q: %w", e.name, err)
	}
	if ln == name {
		return fmt.Errorf("%w: hard link %q to itself", ErrUnsafeName, name)
	}
	if t, ok := c.lookup(ln); !ok || (t != xFile && t != xHardlink) {
		return fmt.Errorf("%w: hard link %q -> %q: target is not a file earlier in this archive", ErrUnsafeName, name, e.linkname)
	}
	return nil
}

func (e *xentry) describe() string {
	switch e.typ {
	case xSymlink:
		return "symlink to " + e.linkname
	case xHardlink:
		return "hard link to " + e.linkname
	case xOther:
		return e.kind
	}
	return "entry"
}
