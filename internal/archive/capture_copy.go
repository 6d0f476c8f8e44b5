package archive

import (
	"archive/tar"
	"bufio"
	"errors"
	"io"
	"os"
	"syscall"
)

// The tar capture at the I/O floor. Capture writes every header, padding
// and the end-of-archive blocks in Go (archive/tar and the sparse writer of
// richmeta.go, so the bytes are exactly those Write compresses), through a
// small buffer; the content of each regular file of at least kernelCopyMin
// bytes (each data extent of a sparse file) is then copied from the open
// file into the capture file by the kernel with copy_file_range: no content
// passes through this process (on ext4 and tmpfs the kernel copies the
// pages from one page cache to the other). The copy is limited to the size
// (or data extents) fstat reported, from the descriptor the walk checked,
// so the walk's rules (openat, O_NOFOLLOW, never a path below a data path)
// and the changed-file rules hold unchanged: a file that grows is cut at
// its size, one that shrinks ends the copy early and is padded with zeros.
// A copy_file_range that returns 0 before the end (the file shrank, or a
// file system that copies nothing) is continued with pread, which tells
// the two apart.
//
// When the kernel refuses (EXDEV: data and capture on different file
// systems, since Linux 5.19; EINVAL, EOPNOTSUPP, ENOSYS, EPERM, EBADF: a
// file system or sandbox without it) the content is read and written
// straight to the capture file in directChunk pieces, and the data path's
// device is remembered so its other files go that way at once. Smaller
// files go through the buffer with their headers: one write for many of
// them instead of a flush and a copy per file. File data starts at 512-byte
// offsets in a tar; aligning it to 4096 (padding PAX records) measured no
// faster on ext4, and would make the capture differ from Write's stream.
//
// The capture is not fsynced: it is a private temporary file, worthless
// after a crash, read back from the page cache by Convert; the archive
// made from it is fsynced when it is committed. An fdatasync while the
// units are stopped would lengthen the downtime several times
// (docs/performance.md).

// testHookCaptureChunk, when set, runs after each chunk copied straight
// into the capture file (tests change the file between chunks).
var testHookCaptureChunk func()

// kernelCopyChunk bounds one copy_file_range call, so cancellation and
// progress are seen between chunks.
const kernelCopyChunk = 8 << 20

// directChunk is the read/write size of a file copied through this
// process into the capture file (the kernel refused): small enough to
// stay in the CPU cache between the read and the write. Through the 1 MiB
// buffer the capture used before, the copy took about 3 times the CPU
// (docs/performance.md).
const directChunk = 128 << 10

// captureBufSize is the buffer of headers and small files, for the same
// reason no larger.
const captureBufSize = 256 << 10

// kernelCopyMin is the smallest file (or data extent) whose content is
// copied by the kernel; smaller ones go through the buffer with their
// header.
const kernelCopyMin = 64 << 10

// captureSink is the tar sink of Capture (see above).
type captureSink struct {
	tarSink
	bw      *bufio.Writer
	out     int             // the capture file's descriptor; -1: w is not a regular file
	refused map[uint64]bool // source devices copy_file_range refused
}

// newCaptureSink returns the sink of a capture into w. Zip has no hard
// links: a capture for zip (noLinks) stores every file in full, so Convert
// never has to look one up.
func newCaptureSink(w io.Writer, noLinks bool) *captureSink {
	bw := bufio.NewWriterSize(w, captureBufSize)
	s := &captureSink{tarSink: tarSink{comp: flushCloser{bw}, tw: tar.NewWriter(bw), noLinks: noLinks},
		bw: bw, out: -1, refused: map[uint64]bool{}}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			s.out = int(f.Fd())
		}
	}
	return s
}

// add writes the header of e; a regular file's content follows through
// the returned captureContent (copyFrom), then endFile.
func (s *captureSink) add(e *entry) (io.Writer, error) {
	if e.typ != typeFile {
		return s.tarSink.add(e)
	}
	if e.sparse != nil {
		// Headers and sparse map; rawLeft/rawPad set for the extents.
		if _, err := s.tarSink.add(e); err != nil {
			return nil, err
		}
		return captureContent{s}, nil
	}
	// Finish the previous entry, then write the header with a tar.Writer
	// of its own, dropped before the content: the header's bytes are
	// archive/tar's, as in Write, and the content bypasses it.
	if err := s.tw.Flush(); err != nil {
		return nil, err
	}
	hdr := tarSink{tw: tar.NewWriter(s.bw)}
	if _, err := hdr.add(e); err != nil {
		return nil, err
	}
	s.rawLeft, s.rawPad = e.size, padding(e.size)
	return captureContent{s}, nil
}

// endFile pads a file that shrank while it was copied with zeros, up to
// its declared size (or extents), and ends its last block.
func (s *captureSink) endFile(e *entry, written int64) error {
	return s.tarSink.endSparse(e, written)
}

// captureContent receives one regular file's content.
type captureContent struct{ s *captureSink }

// Write adds content through the buffer, after its header: a small file's,
// or any file's when the capture is not a file.
func (c captureContent) Write(b []byte) (int, error) { return rawWriter{&c.s.tarSink}.Write(b) }

// copyFrom copies the content of the open file fd (fstat st) for entry e:
// the whole file, or its data extents. It returns the bytes copied; fewer
// than e.dataSize() means the file shrank.
func (c captureContent) copyFrom(wk *walker, fd int, st *syscall.Stat_t, e *entry) (int64, error) {
	if e.sparse == nil {
		return c.copyRange(wk, fd, uint64(st.Dev), 0, e.size)
	}
	var total int64
	for _, x := range e.sparse {
		n, err := c.copyRange(wk, fd, uint64(st.Dev), x.off, x.len)
		total += n
		if err != nil || n < x.len {
			return total, err
		}
	}
	return total, nil
}

// copyRange copies n bytes at off of fd into the capture: by the kernel
// while it agrees, otherwise with pread and write straight to the capture
// file (or, for a small file or a capture that is not a file, through the
// buffer).
func (c captureContent) copyRange(wk *walker, fd int, dev uint64, off, n int64) (int64, error) {
	s := c.s
	direct := s.out >= 0 && n >= kernelCopyMin
	if !direct {
		return wk.copy(c, io.NewSectionReader(fdReaderAt(fd), off, n), n)
	}
	if err := s.bw.Flush(); err != nil {
		return 0, err
	}
	kernel := !s.refused[dev]
	var done int64
	for done < n {
		if err := wk.ctx.Err(); err != nil {
			return done, err
		}
		var m int64
		var err error
		if kernel {
			m, err = copyFileRange(fd, off+done, s.out, min(n-done, kernelCopyChunk))
			switch {
			case err != nil && kernelRefused(err):
				s.refused[dev] = true
				kernel = false
				continue
			case err != nil:
				return done, err
			case m == 0:
				kernel = false // EOF or a file system that copies nothing: pread tells
				continue
			}
			wk.st.CopiedInKernel += m
		} else if m, err = c.readWrite(wk, fd, off+done, min(n-done, directChunk)); err != nil || m == 0 {
			return done + m, err
		}
		done += m
		s.rawLeft -= m
		wk.prog.addBytes(m)
		if testHookCaptureChunk != nil {
			testHookCaptureChunk()
		}
	}
	return done, nil
}

// readWrite copies at most n bytes at off of fd to the capture file
// through the walker's buffer; 0 bytes means end of file.
func (c captureContent) readWrite(wk *walker, fd int, off, n int64) (int64, error) {
	m, err := fdReaderAt(fd).ReadAt(wk.buf[:n], off)
	if m == 0 {
		if err == io.EOF {
			err = nil
		}
		return 0, err
	}
	if _, err := writeFull(c.s.out, wk.buf[:m]); err != nil {
		return 0, err
	}
	return int64(m), nil
}

// writeFull writes all of b to fd, retrying short writes and EINTR.
func writeFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := syscall.Write(fd, b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

// kernelRefused reports whether a copy_file_range error means "not here"
// (fall back to read and write) rather than a failed copy.
func kernelRefused(err error) bool {
	for _, e := range []syscall.Errno{syscall.EXDEV, syscall.EINVAL, syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.EPERM, syscall.EBADF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
