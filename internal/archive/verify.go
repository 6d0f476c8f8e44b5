package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ctxReader makes reads of a long stream honor ctx.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// VerifyFile reads the archive at path completely (decompress, parse every
// entry, read every byte) and returns its stats. Any corruption — truncation,
// bit flips caught by the gzip/xz/bzip2/zstd checksums or zip CRC-32s, zip
// local headers disagreeing with the central directory, unsafe entry names —
// is an error. For zip, Hardlinks is always 0 (zip stores copies).
func VerifyFile(ctx context.Context, path, format string) (Stats, error) {
	var st Stats
	if err := checkFormat(format); err != nil {
		return st, err
	}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("archive: verify: %w", err)
	}
	defer f.Close()
	if format == FormatZip {
		fi, err := f.Stat()
		if err != nil {
			return st, fmt.Errorf("archive: verify: %w", err)
		}
		st, err = verifyZip(ctx, f, fi.Size())
		if err != nil {
			return st, fmt.Errorf("archive: verify %s: %w", path, err)
		}
		return st, nil
	}
	st, err = verifyTar(ctx, bufio.NewReaderSize(f, 1<<20), format)
	if err != nil {
		return st, fmt.Errorf("archive: verify %s: %w", path, err)
	}
	return st, nil
}

// VerifyTar verifies a compressed tar stream (format "tar.*"), like VerifyFile.
func VerifyTar(ctx context.Context, r io.Reader, format string) (Stats, error) {
	if err := checkFormat(format); err != nil || format == FormatZip {
		return Stats{}, fmt.Errorf("archive: VerifyTar: unsupported format %q", format)
	}
	return verifyTar(ctx, r, format)
}

func verifyTar(ctx context.Context, r io.Reader, format string) (st Stats, err error) {
	dr, closeFn, err := newDecompressor(&ctxReader{ctx, r}, format)
	if err != nil {
		return st, err
	}
	defer closeFn()
	return parseTar(ctx, dr)
}

// parseTar reads the tar stream r to its end (entries, content, the
// end-of-archive padding and, when r decompresses, the compressor's
// trailer with its checksums) and counts what it holds.
func parseTar(ctx context.Context, r io.Reader) (st Stats, err error) {
	tr := tar.NewReader(r)
	buf := make([]byte, copyBufSize)
	c := newChecker(0)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, wrapCtx(ctx, fmt.Errorf("reading entry %d: %w", c.n+1, err))
		}
		e := tarEntry(h)
		if _, err := c.checkEntry(&e); err != nil {
			return st, err
		}
		st.count(e.typ)
		n, err := io.CopyBuffer(io.Discard, onlyReader{tr}, buf)
		st.BytesRead += n
		if err != nil {
			return st, wrapCtx(ctx, fmt.Errorf("reading %q: %w", h.Name, err))
		}
	}
	// Read the rest of the stream (end-of-archive padding and the
	// compressor's trailer) so that the final checksums are checked.
	if _, err := io.CopyBuffer(io.Discard, onlyReader{r}, buf); err != nil {
		return st, wrapCtx(ctx, fmt.Errorf("reading end of stream: %w", err))
	}
	return st, nil
}

// count adds one entry of type t, as ExtractFile counts it.
func (s *Stats) count(t xtype) {
	switch t {
	case xDir:
		s.Dirs++
	case xFile:
		s.Files++
	case xSymlink:
		s.Symlinks++
	case xHardlink:
		s.Hardlinks++
	default:
		s.Skipped++
	}
}

func wrapCtx(ctx context.Context, err error) error {
	if ce := ctx.Err(); ce != nil && !errors.Is(err, ce) {
		return fmt.Errorf("%w (%v)", ce, err)
	}
	return err
}

// onlyReader hides WriterTo/ReaderFrom so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

func verifyZip(ctx context.Context, ra io.ReaderAt, size int64) (st Stats, err error) {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return st, err
	}
	buf := make([]byte, copyBufSize)
	c := newChecker(0)
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		e, err := zipEntry(f)
		if err != nil {
			return st, err
		}
		if _, err := c.checkEntry(&e); err != nil {
			return st, err
		}
		if err := checkLocalHeader(ra, f); err != nil {
			return st, err
		}
		st.count(e.typ)
		rc, err := f.Open()
		if err != nil {
			return st, fmt.Errorf("%q: %w", f.Name, err)
		}
		n, err := io.CopyBuffer(io.Discard, onlyReader{&ctxReader{ctx, rc}}, buf)
		rc.Close()
		if e.typ == xFile {
			st.BytesRead += n
		}
		if err != nil {
			return st, wrapCtx(ctx, fmt.Errorf("%q: %w", f.Name, err))
		}
		if uint64(n) != f.UncompressedSize64 {
			return st, fmt.Errorf("%q: read %d bytes, central directory says %d", f.Name, n, f.UncompressedSize64)
		}
	}
	return st, nil
}

// checkLocalHeader cross-checks the local file header of f with its central
// directory record (archive/zip only uses the local header's lengths), so a
// flipped byte in a name, method, time or CRC field is detected.
func checkLocalHeader(ra io.ReaderAt, f *zip.File) error {
	dataOff, err := f.DataOffset()
	if err != nil {
		return fmt.Errorf("%q: %w", f.Name, err)
	}
	// The local header is 30 bytes + name + extra and ends at dataOff. We do
	// not know the local extra length, so search back for the signature in
	// a small window first (our extras are short), then in the largest one.
	for _, back := range []int64{30 + int64(len(f.Name)) + 256, 30 + 0xffff + 0xffff} {
		start := dataOff - back
		if start < 0 {
			start = 0
		}
		win := make([]byte, dataOff-start)
		if _, err := ra.ReadAt(win, start); err != nil {
			return fmt.Errorf("%q: reading local header: %w", f.Name, err)
		}
		if found, err := matchLocalHeader(win, f); found || err != nil {
			return err
		}
		if start == 0 {
			break
		}
	}
	return fmt.Errorf("%q: local file header not found or damaged", f.Name)
}

// matchLocalHeader looks for the local header of f ending at the end of win.
func matchLocalHeader(win []byte, f *zip.File) (bool, error) {
	sig := []byte("PK\x03\x04")
	for i := len(win) - 30; i >= 0; i-- {
		if !bytes.Equal(win[i:i+4], sig) {
			continue
		}
		h := win[i:]
		nameLen := int(binary.LittleEndian.Uint16(h[26:]))
		extraLen := int(binary.LittleEndian.Uint16(h[28:]))
		if i+30+nameLen+extraLen != len(win) {
			continue
		}
		if string(h[30:30+nameLen]) != f.Name {
			return true, fmt.Errorf("%q: local header name %q differs from central directory", f.Name, h[30:30+nameLen])
		}
		flags := binary.LittleEndian.Uint16(h[6:])
		method := binary.LittleEndian.Uint16(h[8:])
		mtime := binary.LittleEndian.Uint16(h[10:])
		mdate := binary.LittleEndian.Uint16(h[12:])
		crc := binary.LittleEndian.Uint32(h[14:])
		if flags != f.Flags || method != f.Method || mtime != f.ModifiedTime || mdate != f.ModifiedDate {
			return true, fmt.Errorf("%q: local header (flags, method or time) differs from central directory", f.Name)
		}
		if flags&0x8 == 0 && crc != f.CRC32 {
			return true, fmt.Errorf("%q: local header CRC differs from central directory", f.Name)
		}
		return true, nil
	}
	return false, nil
}
