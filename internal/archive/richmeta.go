package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Extended attributes, POSIX ACLs and sparse files in tar archives, stored
// the way GNU tar 1.34 stores them with --xattrs --acls --sparse (PAX):
//
//   - every extended attribute NAME of a regular file or directory, read
//     from its open descriptor (flistxattr/fgetxattr), is a PAX record
//     "SCHILY.xattr.NAME" holding the raw value; that includes security.*
//     (SELinux labels, file capabilities), trusted.* (visible to root
//     only) and the ACLs' own system.posix_acl_access/_default (but not
//     XFS's duplicate trusted.SGI_ACL_FILE/_DEFAULT);
//   - a POSIX ACL is also stored as text, "SCHILY.acl.access" and
//     "SCHILY.acl.default": acl_to_text's long form ("user::rw-\n
//     user:alice:r--\ngroup::r--\nmask::r--\nother::r--\n", one entry per
//     line, names where the id has one, else the numeric id), which is
//     what `tar --acls -x` applies;
//   - a regular file with holes (fewer blocks allocated than its size,
//     then SEEK_DATA/SEEK_HOLE) is stored in the PAX sparse format 1.0:
//     records GNU.sparse.major=1, GNU.sparse.minor=0, GNU.sparse.name (the
//     real name) and GNU.sparse.realsize, a ustar name
//     "GNUSparseFile.0/BASENAME", and content made of the sparse map (the
//     number of extents, then offset and length of each, decimal, one per
//     line, padded to 512 bytes) followed by the data extents only. A file
//     ending in a hole gets a last extent (size, 0), as GNU tar writes.
//     GNU tar and Go's archive/tar reader (which returns the full content,
//     holes as zeros) read it.
//
// Symlinks' extended attributes are not stored. Zip keeps none of this:
// no extended attributes, no ACLs, sparse files stored in full.

// extent is a data region of a sparse file.
type extent struct{ off, len int64 }

// maxExtents bounds the sparse map (Go's tar reader refuses maps over
// 1 MiB); a file with more extents is stored in full.
const maxExtents = 20000

// PAX record keys.
const (
	paxXattr      = "SCHILY.xattr."
	paxACLAccess  = "SCHILY.acl.access"
	paxACLDefault = "SCHILY.acl.default"
	xattrACLAcc   = "system.posix_acl_access"
	xattrACLDef   = "system.posix_acl_default"
)

// xfsACLAlias are XFS's on-disk form of the POSIX ACLs, listed to root
// beside system.posix_acl_*: the same ACLs again, meaningless elsewhere.
var xfsACLAlias = map[string]bool{"trusted.SGI_ACL_FILE": true, "trusted.SGI_ACL_DEFAULT": true}

// addXattrs puts the extended attributes (and ACLs as text) of the open
// fd into e.pax. One flistxattr per entry; most files have none.
func (wk *walker) addXattrs(e *entry, fd int, p string) {
	names, err := flistxattr(fd)
	if err != nil {
		wk.wn.warn("%s: cannot list extended attributes: %v", p, err)
		return
	}
	for _, name := range names {
		if xfsACLAlias[name] {
			continue
		}
		v, err := fgetxattr(fd, name)
		if err != nil {
			if !isNoAttr(err) {
				wk.wn.warn("%s: cannot read extended attribute %s: %v", p, name, err)
			}
			continue
		}
		if e.pax == nil {
			e.pax = map[string]string{}
		}
		e.pax[paxXattr+name] = string(v)
		switch name {
		case xattrACLAcc:
			if t, ok := wk.aclText(v); ok {
				e.pax[paxACLAccess] = t
			}
		case xattrACLDef:
			if t, ok := wk.aclText(v); ok {
				e.pax[paxACLDefault] = t
			}
		}
	}
}

// aclText converts a system.posix_acl_* value (version 2, then entries of
// tag u16, perm u16, id u32, little endian) to acl_to_text's long form.
func (wk *walker) aclText(v []byte) (string, bool) {
	if len(v) < 4 || binary.LittleEndian.Uint32(v) != 2 || (len(v)-4)%8 != 0 {
		return "", false
	}
	var sb strings.Builder
	for b := v[4:]; len(b) > 0; b = b[8:] {
		tag, perm, id := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint32(b[4:])
		switch tag {
		case 0x01:
			sb.WriteString("user::")
		case 0x02:
			sb.WriteString("user:" + nameOr(wk.userName(int(id)), id) + ":")
		case 0x04:
			sb.WriteString("group::")
		case 0x08:
			sb.WriteString("group:" + nameOr(wk.groupName(int(id)), id) + ":")
		case 0x10:
			sb.WriteString("mask::")
		case 0x20:
			sb.WriteString("other::")
		default:
			return "", false
		}
		for i, c := range "rwx" {
			if perm&(4>>i) != 0 {
				sb.WriteRune(c)
			} else {
				sb.WriteByte('-')
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String(), true
}

func nameOr(name string, id uint32) string {
	if name == "" {
		return strconv.FormatUint(uint64(id), 10)
	}
	return name
}

// dataExtents returns the data extents of the open regular file fd when it
// has holes (nil otherwise). Only files with fewer blocks allocated than
// their size are probed, so ordinary files cost no extra syscall.
func dataExtents(fd int, st *syscall.Stat_t) []extent {
	size := int64(st.Size)
	if size < 4096 || int64(st.Blocks)*512 >= size {
		return nil
	}
	var ext []extent
	var data int64
	for off := int64(0); off < size; {
		d, err := seekDataHole(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil || d >= size {
			if err != nil {
				return nil
			}
			break
		}
		h, err := seekDataHole(fd, d, seekHole)
		if err != nil {
			return nil
		}
		h = min(h, size)
		ext = append(ext, extent{d, h - d})
		data += h - d
		off = h
		if len(ext) > maxExtents {
			return nil
		}
	}
	if data >= size {
		return nil
	}
	if len(ext) == 0 || ext[len(ext)-1].off+ext[len(ext)-1].len < size {
		ext = append(ext, extent{size, 0})
	}
	return ext
}

// addSparse writes the headers of the sparse file e (PAX sparse format
// 1.0, see above) and its sparse map; the data extents follow through the
// returned writer, then endSparse.
func (s *tarSink) addSparse(e *entry) (io.Writer, error) {
	// Finish the previous entry: what follows bypasses the tar.Writer
	// (it drops GNU.sparse.* records), which only sees whole entries.
	if err := s.tw.Flush(); err != nil {
		return nil, err
	}
	var mp strings.Builder
	mp.WriteString(strconv.Itoa(len(e.sparse)) + "\n")
	for _, x := range e.sparse {
		mp.WriteString(strconv.FormatInt(x.off, 10) + "\n" + strconv.FormatInt(x.len, 10) + "\n")
	}
	for mp.Len()%blockSize != 0 {
		mp.WriteByte(0)
	}
	stored := int64(mp.Len()) + e.dataSize()

	recs := []string{
		paxRecord("GNU.sparse.major", "1"),
		paxRecord("GNU.sparse.minor", "0"),
		paxRecord("GNU.sparse.name", e.name),
		paxRecord("GNU.sparse.realsize", strconv.FormatInt(e.size, 10)),
		paxRecord("mtime", paxTime(e.mtime.Unix(), e.mtime.Nanosecond())),
	}
	if !fitsOctal(int64(e.uid), 8) {
		recs = append(recs, paxRecord("uid", strconv.Itoa(e.uid)))
	}
	if !fitsOctal(int64(e.gid), 8) {
		recs = append(recs, paxRecord("gid", strconv.Itoa(e.gid)))
	}
	if !fitsUstar(e.uname, 32) {
		recs = append(recs, paxRecord("uname", e.uname))
	}
	if !fitsUstar(e.gname, 32) {
		recs = append(recs, paxRecord("gname", e.gname))
	}
	if !fitsOctal(stored, 12) {
		recs = append(recs, paxRecord("size", strconv.FormatInt(stored, 10)))
	}
	keys := make([]string, 0, len(e.pax))
	for k := range e.pax {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		recs = append(recs, paxRecord(k, e.pax[k]))
	}
	pax := strings.Join(recs, "")

	base := path.Base(e.name)
	mtime := e.mtime.Unix()
	var out []byte
	out = append(out, ustarHeader(truncName("PaxHeaders.0/"+base), 0o644, 0, 0, int64(len(pax)), mtime, 'x', "", "")...)
	out = append(out, pax...)
	out = append(out, make([]byte, padding(int64(len(pax))))...)
	out = append(out, ustarHeader(truncName("GNUSparseFile.0/"+base), unixMode(e.mode), e.uid, e.gid, stored, mtime, '0', e.uname, e.gname)...)
	out = append(out, mp.String()...)
	if _, err := s.comp.Write(out); err != nil {
		return nil, err
	}
	s.rawLeft, s.rawPad = e.dataSize(), padding(stored)
	return rawWriter{s}, nil
}

// rawWriter writes a sparse entry's data extents to the compressor.
type rawWriter struct{ s *tarSink }

func (w rawWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > w.s.rawLeft {
		return 0, fmt.Errorf("archive: sparse file content longer than its extents")
	}
	n, err := w.s.comp.Write(b)
	w.s.rawLeft -= int64(n)
	return n, err
}

// endSparse pads a sparse entry that shrank while read (zeros, as the
// declared extents must be complete) and its last block.
func (s *tarSink) endSparse(e *entry, written int64) error {
	if s.zero == nil {
		s.zero = make([]byte, 32<<10)
	}
	for left := s.rawLeft + s.rawPad; left > 0; {
		n := min(left, int64(len(s.zero)))
		if _, err := s.comp.Write(s.zero[:n]); err != nil {
			return err
		}
		left -= n
	}
	s.rawLeft, s.rawPad = 0, 0
	return nil
}

const blockSize = 512

func padding(n int64) int64 { return -n & (blockSize - 1) }

// paxRecord formats one PAX extended header record, "LEN key=value\n",
// where LEN counts the whole record including itself.
func paxRecord(k, v string) string {
	const padding = 3 // ' ', '=' and '\n'
	size := len(k) + len(v) + padding
	size += len(strconv.Itoa(size))
	rec := strconv.Itoa(size) + " " + k + "=" + v + "\n"
	if len(rec) != size { // the length's own digits crossed a power of ten
		size = len(rec)
		rec = strconv.Itoa(size) + " " + k + "=" + v + "\n"
	}
	return rec
}

// paxTime formats a time as PAX does: seconds, and the fraction without
// trailing zeros.
func paxTime(sec int64, nsec int) string {
	if nsec == 0 {
		return strconv.FormatInt(sec, 10)
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", nsec), "0")
	if sec < 0 {
		// -1.5 is sec -2, nsec 5e8: PAX wants the signed decimal.
		return fmt.Sprintf("-%d.%s", -(sec + 1), strings.TrimRight(fmt.Sprintf("%09d", 1e9-nsec), "0"))
	}
	return strconv.FormatInt(sec, 10) + "." + frac
}

func fitsOctal(v int64, width int) bool { return v >= 0 && v < 1<<(3*(width-1)) }

func fitsUstar(s string, width int) bool {
	if len(s) >= width {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == 0 {
			return false
		}
	}
	return true
}

func truncName(s string) string {
	if len(s) > 100 {
		return s[:100]
	}
	return s
}

// ustarHeader builds a ustar header block; values that do not fit are
// left zero/truncated (PAX records carry them).
func ustarHeader(name string, mode int64, uid, gid int, size, mtime int64, typ byte, uname, gname string) []byte {
	b := make([]byte, blockSize)
	copy(b[0:100], name)
	octal(b[100:108], mode)
	octal(b[108:116], int64(uid))
	octal(b[116:124], int64(gid))
	octal(b[124:136], size)
	octal(b[136:148], mtime)
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	if fitsUstar(uname, 32) {
		copy(b[265:297], uname)
	}
	if fitsUstar(gname, 32) {
		copy(b[297:329], gname)
	}
	octal(b[329:337], 0)
	octal(b[337:345], 0)
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func octal(b []byte, v int64) {
	if !fitsOctal(v, len(b)) {
		v = 0
	}
	copy(b, fmt.Sprintf("%0*o", len(b)-1, v))
	b[len(b)-1] = 0
}
