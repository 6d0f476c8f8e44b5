package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
)

// Capture writes the data paths to w as an uncompressed PAX tar stream, with
// the same walk, entry names, metadata, excludes and warnings as Write. It
// is the fast first half of a two-step backup (the capture-first mode):
// the data is read at disk speed while the service is stopped, and
// Convert turns the capture into the archive afterwards. opts.Format must be
// the format the capture will be converted to: for "zip" hard-linked files
// are stored in full (zip has no hard links), so Convert never needs an
// earlier entry's content. opts.Level and opts.Threads are not used.
//
// On error the output is incomplete and must be discarded.
func Capture(ctx context.Context, w io.Writer, dataPaths []string, opts Options) (Stats, error) {
	return write(ctx, w, sameRoots(dataPaths), opts, true)
}

// Convert reads an uncompressed tar stream written by Capture from r and
// writes it to w as an archive in opts.Format (Level, Threads and Progress
// apply; Exclude does not: the capture was already filtered). For the tar
// formats the tar stream is compressed byte for byte, so the archive is
// exactly what Write would have produced from the same files; it is parsed
// on the way, which checks the capture and counts the entries. For zip each
// tar entry becomes the zip entry Write would have written. Stats count the
// entries and content bytes of the capture. Cancellation is honoured
// between chunks.
//
// On error the output is incomplete and must be discarded.
func Convert(ctx context.Context, w io.Writer, r io.Reader, opts Options) (st Stats, err error) {
	if err := checkFormat(opts.Format); err != nil {
		return st, err
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	log := loggerOr(opts.Logger)
	out, flush := bufferOutput(w)
	if opts.Format == FormatZip {
		return convertZip(ctx, out, flush, r, opts, threads)
	}
	comp, err := newCompressor(ctx, out, opts.Format, opts.Level, threads, log)
	if err != nil {
		return st, err
	}
	ts := &tarSink{comp: comp}
	defer func() {
		if err != nil {
			ts.abort()
		}
	}()
	// Every byte read from r goes to the compressor unchanged (in 1 MiB
	// writes); the tar reader only looks at it.
	bw := bufio.NewWriterSize(comp, copyBufSize)
	cw := &progressWriter{ctx: ctx, w: bw, prog: opts.Progress}
	tr := tar.NewReader(io.TeeReader(r, cw))
	buf := make([]byte, 64<<10)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, convertErr(ctx, err)
		}
		var sink io.Writer = io.Discard
		var sum *fileSum
		if opts.Manifest != nil && h.Typeflag == tar.TypeReg {
			sum = newFileSum()
			sink = sum
		}
		n, err := io.CopyBuffer(onlyWriter{sink}, onlyReader{tr}, buf)
		if err != nil {
			return st, convertErr(ctx, err)
		}
		if opts.Manifest != nil {
			noteHeader(opts.Manifest, h, sumOf(sum))
		}
		countEntry(&st, h, n, opts.Progress)
	}
	// The end-of-archive blocks (and any padding) after the last entry.
	if _, err := io.CopyBuffer(onlyWriter{cw}, onlyReader{r}, buf); err != nil {
		return st, convertErr(ctx, err)
	}
	if err := bw.Flush(); err != nil {
		return st, convertErr(ctx, err)
	}
	if err := comp.Close(); err != nil {
		return st, fmt.Errorf("archive: finishing %s archive: %w", opts.Format, err)
	}
	st.Tar = tarSumOf(comp)
	if err := flush(); err != nil {
		return st, fmt.Errorf("archive: writing %s archive: %w", opts.Format, err)
	}
	return st, nil
}

func convertZip(ctx context.Context, w io.Writer, flush func() error, r io.Reader, opts Options, threads int) (st Stats, err error) {
	zs, err := newZipSink(w, opts.Level, threads)
	if err != nil {
		return st, err
	}
	defer func() {
		if err != nil {
			zs.abort()
		}
	}()
	tr := tar.NewReader(bufio.NewReaderSize(r, copyBufSize))
	buf := make([]byte, copyBufSize)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, convertErr(ctx, err)
		}
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("archive: %w", err)
		}
		fi := h.FileInfo()
		e := &entry{name: h.Name, mode: fi.Mode(), uid: h.Uid, gid: h.Gid, uname: h.Uname, gname: h.Gname,
			mtime: h.ModTime, linkname: h.Linkname}
		switch h.Typeflag {
		case tar.TypeDir:
			e.typ = typeDir
			if !strings.HasSuffix(e.name, "/") {
				e.name += "/"
			}
			_, err = zs.add(e)
		case tar.TypeSymlink:
			e.typ = typeSymlink
			_, err = zs.add(e)
		case tar.TypeReg:
			e.typ, e.size = typeFile, h.Size
			var cw io.Writer
			if cw, err = zs.add(e); err != nil {
				break
			}
			var sum *fileSum
			if opts.Manifest != nil {
				sum = newFileSum()
				cw = io.MultiWriter(cw, sum)
			}
			var n int64
			n, err = copyCtx(ctx, cw, tr, buf, opts.Progress)
			if err == nil {
				err = zs.endFile(e, n)
			}
			if err == nil && opts.Manifest != nil {
				noteHeader(opts.Manifest, h, sum.sum())
			}
		default:
			err = fmt.Errorf("unexpected tar entry type %q in a capture (hard links are stored in full in a capture for zip)", h.Typeflag)
		}
		if err != nil {
			return st, fmt.Errorf("archive: %s: %w", h.Name, convertErr(ctx, err))
		}
		if opts.Manifest != nil && h.Typeflag != tar.TypeReg {
			noteHeader(opts.Manifest, h, nil)
		}
		countEntry(&st, h, h.Size, opts.Progress)
	}
	if err := zs.close(); err != nil {
		return st, fmt.Errorf("archive: finishing zip archive: %w", err)
	}
	if err := flush(); err != nil {
		return st, fmt.Errorf("archive: writing zip archive: %w", err)
	}
	return st, nil
}

func countEntry(st *Stats, h *tar.Header, n int64, prog *Progress) {
	switch h.Typeflag {
	case tar.TypeDir:
		st.Dirs++
	case tar.TypeSymlink:
		st.Symlinks++
	case tar.TypeLink:
		st.Hardlinks++
	case tar.TypeReg:
		st.Files++
		st.BytesRead += n
		prog.addFile()
	}
}

// convertErr prefers the cancellation over the error it caused.
func convertErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("archive: %w", cerr)
	}
	if strings.HasPrefix(err.Error(), "archive:") {
		return err
	}
	return fmt.Errorf("archive: capture: %w", err)
}

// copyCtx copies r to w with buf, checking ctx between chunks and counting
// the bytes into prog.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, buf []byte, prog *Progress) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			prog.addBytes(int64(m))
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// progressWriter passes writes on, counting them into prog and failing once
// ctx is done.
type progressWriter struct {
	ctx  context.Context
	w    io.Writer
	prog *Progress
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	p.prog.addBytes(int64(n))
	return n, err
}

// flushCloser makes a bufio.Writer the "compressor" of an uncompressed tar.
type flushCloser struct{ *bufio.Writer }

func (f flushCloser) Close() error { return f.Flush() }
