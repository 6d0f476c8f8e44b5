package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// StreamCheck is the writer an archive stream goes through on its way to
// its destination: it passes the stream on in 128 KiB writes and, in a
// goroutine of its own, parses it completely as it goes (every entry, every
// byte, every checksum of the compression format, the zip central
// directory against the local headers), the check a read-back of the
// written file would make, without reading the file again. Finish ends it
// and compares what the parse found with the producer's Stats (the
// counts: CheckCounts; a tar.zst checked by zstd(1): the frame's content
// checksum and size against the producer's TarSum, see
// streamcheck_native.go) and, when hashing was asked for, Digest is the
// stream's SHA-256, CRC-64 and length, which the copy on disk must have.
//
// Memory is bounded: streamCheckBuffers chunks of streamCheckChunk bytes,
// handed from the producer to the parse without a copy, plus the
// decompressor's window. The producer waits for the parse when it falls
// that far behind.
type StreamCheck struct {
	out    io.Writer
	format string
	decode []string  // the native decompressor's argv; nil: Go's decoder
	framed bool      // tar.zst checked by zstd -t and the frame walk
	frame  zstdFrame // ... what the walk found, set before done closes
	hash   *Digester // nil: not hashed
	free   chan []byte
	full   chan []byte
	cur    []byte
	done   chan struct{} // closed when the parse has ended
	st     Stats         // the parse's counts, set before done closes
	err    error         // the parse's verdict, set before done closes
	werr   error         // the first error writing out
	closed bool
}

const (
	streamCheckChunk   = 128 << 10
	streamCheckBuffers = 4
)

// NewStreamCheck starts the parse of a format archive written to out.
// threads caps a native decompressor's (0: every core; see
// streamcheck_native.go). hashed: also compute the stream's SHA-256 (Sum).
func NewStreamCheck(ctx context.Context, out io.Writer, format string, threads int, hashed bool) (*StreamCheck, error) {
	if err := checkFormat(format); err != nil {
		return nil, err
	}
	c := &StreamCheck{out: out, format: format, free: make(chan []byte, streamCheckBuffers),
		full: make(chan []byte, streamCheckBuffers), done: make(chan struct{}), decode: nativeDecoder(format, threads)}
	c.framed = format == FormatTarZst && c.decode != nil
	if hashed {
		c.hash = NewDigester()
	}
	for range streamCheckBuffers {
		c.free <- make([]byte, 0, streamCheckChunk)
	}
	c.cur = <-c.free
	go c.parse(ctx, &chunkReader{full: c.full, free: c.free})
	return c, nil
}

// OutputFile is the file the stream goes to when out is one, so that the
// archiver can skip it should it lie inside a data path.
func (c *StreamCheck) OutputFile() *os.File { return outputFileOf(c.out) }

func (c *StreamCheck) parse(ctx context.Context, r *chunkReader) {
	defer close(c.done)
	switch {
	case c.format == FormatZip:
		c.st, c.err = checkZipStream(ctx, r)
	case c.framed:
		c.frame, c.err = checkZstdFrame(ctx, r, c.decode)
	case c.decode != nil:
		c.st, c.err = checkNative(ctx, r, c.decode)
	default:
		c.st, c.err = verifyTar(ctx, r, c.format)
	}
	if c.err == nil {
		// The parse ends at the compressor's (zip: the central
		// directory's) end; anything after it would be in the file too.
		if n, _ := io.Copy(io.Discard, r); n > 0 {
			c.err = fmt.Errorf("%d bytes after the end of the archive", n)
		}
	}
	r.release()
}

// Write buffers p; every full chunk is written to out, hashed and handed to
// the parse. It fails once writing to out has failed.
func (c *StreamCheck) Write(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("archive: stream check: write after close")
	}
	n := len(p)
	for len(p) > 0 {
		m := copy(c.cur[len(c.cur):cap(c.cur)], p)
		c.cur = c.cur[:len(c.cur)+m]
		p = p[m:]
		if len(c.cur) == cap(c.cur) {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush passes the current chunk on and takes a free one. Once the parse
// has ended early (it failed), chunks are only written: the producer's
// own error, if it has one, is the one to report, and Close reports the
// parse's.
func (c *StreamCheck) flush() error {
	if c.werr != nil {
		return c.werr
	}
	if len(c.cur) == 0 {
		return nil
	}
	if _, err := c.out.Write(c.cur); err != nil {
		c.werr = err
		return err
	}
	if c.hash != nil {
		c.hash.Write(c.cur)
	}
	select {
	case c.full <- c.cur:
		c.cur = c.take()
	case <-c.done:
		c.cur = c.cur[:0]
	}
	return nil
}

// take returns a free chunk. After the parse ended, the chunks it left in
// the queue are free too.
func (c *StreamCheck) take() []byte {
	select {
	case b := <-c.free:
		return b[:0]
	case <-c.done:
	}
	select {
	case b := <-c.free:
		return b[:0]
	case b := <-c.full:
		return b[:0]
	}
}

// Finish ends the check after the producer succeeded (wrote: its Stats):
// the stream must be a complete, well-formed archive (Close), and hold
// what the producer wrote: the entries and content bytes it counted
// (CheckCounts) or, for a tar.zst checked by zstd -t, its tar stream
// itself (the frame's content checksum and size against wrote.Tar).
func (c *StreamCheck) Finish(wrote Stats) error {
	parsed, err := c.Close()
	if err != nil {
		return err
	}
	if c.framed {
		if err := c.frame.matches(wrote.Tar); err != nil {
			return fmt.Errorf("archive: %s stream check: %w", c.format, err)
		}
		return nil
	}
	return CheckCounts(wrote, parsed)
}

// Close writes what is buffered, ends the stream and waits for the parse.
// It returns the parse's counts (none for a tar.zst checked by zstd -t,
// which does not parse the tar: use Finish), or why the stream is not a
// complete, well-formed archive. Call it once, after the producer
// succeeded.
func (c *StreamCheck) Close() (Stats, error) {
	if c.closed {
		return c.st, errors.New("archive: stream check closed twice")
	}
	err := c.flush()
	c.closed = true
	close(c.full)
	<-c.done
	if err != nil {
		return c.st, err
	}
	if c.err != nil {
		return c.st, fmt.Errorf("archive: %s stream check: %w", c.format, c.err)
	}
	return c.st, nil
}

// Abort ends the parse after a failed producer and waits for it.
func (c *StreamCheck) Abort() {
	if !c.closed {
		c.closed = true
		close(c.full)
		<-c.done
	}
}

// Digest is the stream's Digest (ok false when not hashed). Call it after
// Close.
func (c *StreamCheck) Digest() (d Digest, ok bool) {
	if c.hash == nil {
		return d, false
	}
	return c.hash.Digest(), true
}

// Sum is the SHA-256 of the stream (nil when not hashed). Call it after Close.
func (c *StreamCheck) Sum() []byte {
	d, _ := c.Digest()
	return d.SHA256
}

// CheckCounts compares what the producer wrote (wrote: its Stats) with
// what the parse of the stream found (parsed): the same number of files,
// directories, symlinks and hard links, nothing else, and the same content
// bytes (zero bytes that were not read — the padding of a file that shrank,
// the holes of a sparse file — included).
func CheckCounts(wrote, parsed Stats) error {
	type count struct {
		what      string
		want, got int64
	}
	for _, c := range []count{
		{"files", wrote.Files, parsed.Files},
		{"directories", wrote.Dirs, parsed.Dirs},
		{"symlinks", wrote.Symlinks, parsed.Symlinks},
		{"hard links", wrote.Hardlinks, parsed.Hardlinks},
		{"other entries", 0, parsed.Skipped},
		{"content bytes", wrote.BytesRead + wrote.ZeroFill, parsed.BytesRead},
	} {
		if c.want != c.got {
			return fmt.Errorf("archive: the stream holds %d %s, the archiver wrote %d", c.got, c.what, c.want)
		}
	}
	return nil
}

// chunkReader reads the chunks a StreamCheck hands over, returning each to
// the free list once read.
type chunkReader struct {
	full <-chan []byte
	free chan<- []byte
	cur  []byte // unread part of buf
	buf  []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		r.release()
		b, ok := <-r.full
		if !ok {
			return 0, io.EOF
		}
		r.buf, r.cur = b, b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *chunkReader) release() {
	if r.buf != nil {
		r.free <- r.buf[:0]
		r.buf, r.cur = nil, nil
	}
}
