package archive

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"

	"github.com/klauspost/compress/flate"
)

// A zip archive ends with its central directory, so the file cannot be
// opened by archive/zip before it is complete. checkZipStream parses it in
// one pass instead, as it is written: each local header and its data
// (inflated, CRC-32 and sizes checked against the data descriptor), then
// each central directory record, then the end records. What the central
// directory says of each entry (name, flags, method, time, CRC-32, sizes,
// offset) must be what the local part held, in the same order: both sides
// are folded into a SHA-256, so memory does not grow with the entries
// (beyond the checker's names, as for VerifyFile).

const (
	zipSigLocal       = 0x04034b50
	zipSigDescriptor  = 0x08074b50
	zipSigCentral     = 0x02014b50
	zipSigZip64End    = 0x06064b50
	zipSigZip64Locate = 0x07064b50
	zipSigEnd         = 0x06054b50
)

// zipStream is the state of one checkZipStream.
type zipStream struct {
	cr       *countReader
	br       *bufio.Reader
	buf      []byte
	local    hash.Hash
	central  hash.Hash
	nLocal   int64
	nCentral int64
	cdStart  int64 // offset of the first central record, -1 before
	z64End   int64 // offset of the zip64 end record, -1 when none
	z64      zip64End
	c        *checker
	st       Stats
	inflate  io.ReadCloser // reused for every deflated entry
}

type zip64End struct{ entries, cdSize, cdOffset uint64 }

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func checkZipStream(ctx context.Context, r io.Reader) (Stats, error) {
	cr := &countReader{r: &ctxReader{ctx, r}}
	z := &zipStream{cr: cr, br: bufio.NewReaderSize(cr, 64<<10), buf: make([]byte, 32<<10),
		local: sha256.New(), central: sha256.New(), cdStart: -1, z64End: -1, c: newChecker(0)}
	for {
		off := z.pos()
		sig, err := z.u32()
		if err != nil {
			return z.st, wrapCtx(ctx, fmt.Errorf("at offset %d: %w", off, noEOF(err)))
		}
		switch {
		case sig == zipSigLocal && z.cdStart < 0:
			err = z.localEntry(off)
		case sig == zipSigCentral && z.z64End < 0:
			if z.cdStart < 0 {
				z.cdStart = off
			}
			err = z.centralEntry()
		case sig == zipSigZip64End && z.cdStart >= 0 && z.z64End < 0:
			z.z64End = off
			err = z.zip64EndRecord()
		case sig == zipSigZip64Locate && z.z64End >= 0:
			err = z.zip64Locator()
		case sig == zipSigEnd && z.cdStart >= 0:
			return z.st, wrapCtx(ctx, z.end(off))
		default:
			err = fmt.Errorf("unexpected signature %#08x", sig)
		}
		if err != nil {
			return z.st, wrapCtx(ctx, fmt.Errorf("at offset %d: %w", off, noEOF(err)))
		}
	}
}

// noEOF turns a stream that ends early into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// pos is the offset in the stream of the next byte to parse.
func (z *zipStream) pos() int64 { return z.cr.n - int64(z.br.Buffered()) }

func (z *zipStream) read(n int) ([]byte, error) {
	if n > len(z.buf) {
		return nil, fmt.Errorf("field of %d bytes too long", n)
	}
	b := z.buf[:n]
	_, err := io.ReadFull(z.br, b)
	return b, err
}

func (z *zipStream) u32() (uint32, error) {
	b, err := z.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// zipFields is what the local part and the central directory must agree on.
type zipFields struct {
	name                      string
	flags, method, time, date uint16
	crc                       uint32
	csize, usize, offset      uint64
}

func (f *zipFields) fold(h hash.Hash) {
	var b [2*4 + 4 + 3*8 + 8]byte
	binary.LittleEndian.PutUint16(b[0:], f.flags)
	binary.LittleEndian.PutUint16(b[2:], f.method)
	binary.LittleEndian.PutUint16(b[4:], f.time)
	binary.LittleEndian.PutUint16(b[6:], f.date)
	binary.LittleEndian.PutUint32(b[8:], f.crc)
	binary.LittleEndian.PutUint64(b[12:], f.csize)
	binary.LittleEndian.PutUint64(b[20:], f.usize)
	binary.LittleEndian.PutUint64(b[28:], f.offset)
	binary.LittleEndian.PutUint64(b[36:], uint64(len(f.name)))
	h.Write(b[:])
	h.Write([]byte(f.name))
}

// localEntry parses a local header (its signature read) and the entry's
// data and data descriptor.
func (z *zipStream) localEntry(off int64) error {
	h, err := z.read(26)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	f := zipFields{flags: le.Uint16(h[2:]), method: le.Uint16(h[4:]), time: le.Uint16(h[6:]), date: le.Uint16(h[8:]), offset: uint64(off)}
	hcrc, hcsize, husize := le.Uint32(h[10:]), uint64(le.Uint32(h[14:])), uint64(le.Uint32(h[18:]))
	nameLen, extraLen := int(le.Uint16(h[22:])), int(le.Uint16(h[24:]))
	name, err := z.read(nameLen)
	if err != nil {
		return err
	}
	f.name = string(name)
	extra, err := z.read(extraLen)
	if err != nil {
		return err
	}
	if hcsize == 0xffffffff || husize == 0xffffffff {
		husize, hcsize, _ = zip64Sizes(extra, husize, hcsize, 0)
	}
	dd := f.flags&0x8 != 0
	if err := z.entryData(&f, dd, hcsize); err != nil {
		return fmt.Errorf("%q: %w", f.name, err)
	}
	if dd {
		err = z.descriptor(&f)
	} else if hcrc != f.crc || hcsize != f.csize || husize != f.usize {
		err = errors.New("local header CRC-32 or sizes differ from the data")
	}
	if err != nil {
		return fmt.Errorf("%q: %w", f.name, err)
	}
	f.fold(z.local)
	z.nLocal++
	return nil
}

// entryData reads the entry's data and sets its CRC-32 and sizes.
func (z *zipStream) entryData(f *zipFields, dd bool, csize uint64) error {
	start := z.pos()
	crc := crc32.NewIEEE()
	var n int64
	var err error
	switch {
	case f.method == zip.Deflate:
		// A *bufio.Reader is an io.ByteReader: the inflater reads
		// exactly the deflate stream, which ends itself.
		if z.inflate == nil {
			z.inflate = flate.NewReader(z.br)
		} else if err = z.inflate.(flate.Resetter).Reset(z.br, nil); err != nil {
			break
		}
		n, err = io.CopyBuffer(crc, onlyReader{z.inflate}, z.buf)
	case f.method == zip.Store && !dd:
		n, err = io.CopyBuffer(crc, onlyReader{io.LimitReader(z.br, int64(csize))}, z.buf)
		if err == nil && uint64(n) != csize {
			err = io.ErrUnexpectedEOF
		}
	case f.method == zip.Store:
		n, err = z.storedUntilDescriptor(crc)
	default:
		err = fmt.Errorf("unsupported compression method %d", f.method)
	}
	if err != nil {
		return noEOF(err)
	}
	f.crc, f.usize, f.csize = crc.Sum32(), uint64(n), uint64(z.pos()-start)
	return nil
}

// storedUntilDescriptor reads stored data whose length only its data
// descriptor gives (zip.Writer's symlinks): up to the first descriptor
// whose CRC-32 and sizes match the bytes before it. Such entries are
// symlink targets, so the search stops at maxSymlinkTarget.
func (z *zipStream) storedUntilDescriptor(crc hash.Hash32) (int64, error) {
	var n int64
	for ; n <= maxSymlinkTarget; n++ {
		p, err := z.br.Peek(16)
		if err != nil {
			return n, err
		}
		le := binary.LittleEndian
		if le.Uint32(p) == zipSigDescriptor && le.Uint32(p[4:]) == crc.Sum32() &&
			int64(le.Uint32(p[8:])) == n && int64(le.Uint32(p[12:])) == n {
			return n, nil
		}
		b, _ := z.br.ReadByte()
		crc.Write([]byte{b})
	}
	return n, errors.New("stored entry without a data descriptor")
}

// descriptor reads a data descriptor (signature optional; zip64 sizes when
// either size needs them, as zip.Writer writes it) and checks it.
func (z *zipStream) descriptor(f *zipFields) error {
	p, err := z.br.Peek(4)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(p) == zipSigDescriptor {
		z.br.Discard(4)
	}
	le := binary.LittleEndian
	var crc uint32
	var csize, usize uint64
	if f.csize >= 0xffffffff || f.usize >= 0xffffffff {
		b, err := z.read(20)
		if err != nil {
			return err
		}
		crc, csize, usize = le.Uint32(b), le.Uint64(b[4:]), le.Uint64(b[12:])
	} else {
		b, err := z.read(12)
		if err != nil {
			return err
		}
		crc, csize, usize = le.Uint32(b), uint64(le.Uint32(b[4:])), uint64(le.Uint32(b[8:]))
	}
	if crc != f.crc || csize != f.csize || usize != f.usize {
		return fmt.Errorf("data descriptor (CRC-32 %08x, %d/%d bytes) differs from the data (CRC-32 %08x, %d/%d bytes)",
			crc, csize, usize, f.crc, f.csize, f.usize)
	}
	return nil
}

// zip64Sizes reads the zip64 extended information field (0x0001) of extra:
// each value that is 0xffffffff in the record is there, in this order.
func zip64Sizes(extra []byte, usize, csize, offset uint64) (uint64, uint64, uint64) {
	le := binary.LittleEndian
	for len(extra) >= 4 {
		tag, size := le.Uint16(extra), int(le.Uint16(extra[2:]))
		if size > len(extra)-4 {
			break
		}
		if tag == 0x0001 {
			d := extra[4 : 4+size]
			for _, v := range []*uint64{&usize, &csize, &offset} {
				if *v == 0xffffffff && len(d) >= 8 {
					*v, d = le.Uint64(d), d[8:]
				}
			}
			break
		}
		extra = extra[4+size:]
	}
	return usize, csize, offset
}

// centralEntry parses a central directory record (its signature read),
// checks the entry as VerifyFile does and counts it.
func (z *zipStream) centralEntry() error {
	h, err := z.read(42)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	fh := zip.FileHeader{CreatorVersion: le.Uint16(h[0:]), ExternalAttrs: le.Uint32(h[34:])}
	f := zipFields{flags: le.Uint16(h[4:]), method: le.Uint16(h[6:]), time: le.Uint16(h[8:]), date: le.Uint16(h[10:]),
		crc: le.Uint32(h[12:]), csize: uint64(le.Uint32(h[16:])), usize: uint64(le.Uint32(h[20:])), offset: uint64(le.Uint32(h[38:]))}
	nameLen, extraLen, commentLen := int(le.Uint16(h[24:])), int(le.Uint16(h[26:])), int(le.Uint16(h[28:]))
	name, err := z.read(nameLen)
	if err != nil {
		return err
	}
	f.name = string(name)
	extra, err := z.read(extraLen)
	if err != nil {
		return err
	}
	f.usize, f.csize, f.offset = zip64Sizes(extra, f.usize, f.csize, f.offset)
	if _, err := z.read(commentLen); err != nil {
		return err
	}
	f.fold(z.central)
	z.nCentral++
	if z.nCentral > z.nLocal {
		return fmt.Errorf("%q: central directory record without a local entry", f.name)
	}
	fh.Name = f.name
	return z.count(&fh, f.usize)
}

// count applies the entry rules (checker) to a central record and counts
// it, as verifyZip does.
func (z *zipStream) count(fh *zip.FileHeader, size uint64) error {
	m := fh.Mode()
	e := xentry{name: fh.Name, size: int64(size)}
	switch {
	case m.IsDir() || (len(fh.Name) > 0 && fh.Name[len(fh.Name)-1] == '/'):
		e.typ = xDir
	case m.IsRegular():
		e.typ = xFile
	case m&fs.ModeSymlink != 0:
		e.typ = xSymlink
		if size > maxSymlinkTarget {
			return fmt.Errorf("%q: symlink target too long (%d bytes)", fh.Name, size)
		}
		e.size = 0
	default:
		e.typ, e.kind = xOther, typeName(m)
	}
	if _, err := z.c.checkEntry(&e); err != nil {
		return err
	}
	z.st.count(e.typ)
	if e.typ == xFile {
		z.st.BytesRead += int64(size)
	}
	return nil
}

// zip64EndRecord parses the zip64 end of central directory record.
func (z *zipStream) zip64EndRecord() error {
	b, err := z.read(8)
	if err != nil {
		return err
	}
	size := binary.LittleEndian.Uint64(b)
	if size < 44 || size > 1<<16 {
		return fmt.Errorf("zip64 end record of %d bytes", size)
	}
	r, err := z.read(int(size))
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	z.z64 = zip64End{entries: le.Uint64(r[20:]), cdSize: le.Uint64(r[28:]), cdOffset: le.Uint64(r[36:])}
	return nil
}

// zip64Locator parses the zip64 end locator: it must point at the record.
func (z *zipStream) zip64Locator() error {
	b, err := z.read(16)
	if err != nil {
		return err
	}
	if off := binary.LittleEndian.Uint64(b[4:]); off != uint64(z.z64End) {
		return fmt.Errorf("zip64 locator points at %d, the record is at %d", off, z.z64End)
	}
	return nil
}

// end parses the end of central directory record (its signature read at
// off) and checks the directory as a whole against the local part.
func (z *zipStream) end(off int64) error {
	b, err := z.read(18)
	if err != nil {
		return fmt.Errorf("end record: %w", noEOF(err))
	}
	le := binary.LittleEndian
	entries, cdSize, cdOffset := uint64(le.Uint16(b[6:])), uint64(le.Uint32(b[8:])), uint64(le.Uint32(b[12:]))
	if _, err := z.read(int(le.Uint16(b[16:]))); err != nil {
		return fmt.Errorf("end record comment: %w", noEOF(err))
	}
	if _, err := z.br.ReadByte(); err != io.EOF {
		return errors.New("bytes after the end record")
	}
	cdEnd := off
	if z.z64End >= 0 {
		cdEnd = z.z64End
		if entries == 0xffff {
			entries = z.z64.entries
		}
		if cdSize == 0xffffffff {
			cdSize = z.z64.cdSize
		}
		if cdOffset == 0xffffffff {
			cdOffset = z.z64.cdOffset
		}
	}
	switch {
	case z.nCentral != z.nLocal:
		return fmt.Errorf("%d local entries, %d central directory records", z.nLocal, z.nCentral)
	case entries != uint64(z.nCentral):
		return fmt.Errorf("end record counts %d entries, the central directory has %d", entries, z.nCentral)
	case cdOffset != uint64(z.cdStart) || cdSize != uint64(cdEnd-z.cdStart):
		return fmt.Errorf("end record places the central directory at %d (%d bytes), it is at %d (%d bytes)", cdOffset, cdSize, z.cdStart, cdEnd-z.cdStart)
	case !bytes.Equal(z.local.Sum(nil), z.central.Sum(nil)):
		return errors.New("the central directory differs from the local headers")
	}
	return nil
}
