package archive

import (
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/pgzip"
)

// newExtractDecompressor is newDecompressor for extraction: gzip is
// decoded by pgzip, a block ahead in its own goroutine (with the CRC in
// another), so decoding overlaps the writing of the files instead of
// alternating with it. zstd already decodes ahead (WithDecoderConcurrency).
func newExtractDecompressor(r io.Reader, format string) (io.Reader, func(), error) {
	if format != FormatTarGz {
		return newDecompressor(r, format)
	}
	zr, err := pgzip.NewReaderN(r, 1<<20, 4)
	if err != nil {
		return nil, nil, fmt.Errorf("archive: gzip: %w", err)
	}
	return zr, func() { zr.Close() }, nil
}

// readAhead reads the raw archive in its own goroutine, a few blocks
// ahead of the decompressor, and feeds every block to the digest there:
// reading (from disk or the network) and hashing overlap decompression
// and extraction instead of adding to them, so verifying costs no
// second pass and almost no time.
type readAhead struct {
	blocks chan []byte // filled blocks, in order
	free   chan []byte // blocks the reader may fill again
	done   chan struct{}
	err    error  // the read error (io.EOF at the end), set before blocks closes
	block  []byte // the block being read from, whole
	cur    []byte // its unread part
}

const (
	readAheadBlock = 1 << 20
	readAheadDepth = 4
)

func newReadAhead(src io.Reader, digest hash.Hash) *readAhead {
	ra := &readAhead{
		blocks: make(chan []byte, readAheadDepth),
		free:   make(chan []byte, readAheadDepth+1),
		done:   make(chan struct{}),
	}
	for range readAheadDepth + 1 {
		ra.free <- make([]byte, readAheadBlock)
	}
	go ra.fill(src, digest)
	return ra
}

func (ra *readAhead) fill(src io.Reader, digest hash.Hash) {
	defer close(ra.blocks)
	for {
		var b []byte
		select {
		case b = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := io.ReadFull(src, b[:cap(b)])
		if n > 0 {
			digest.Write(b[:n])
			select {
			case ra.blocks <- b[:n]:
			case <-ra.done:
				return
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if err != nil {
			ra.err = err
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	if len(ra.cur) == 0 {
		b, ok := <-ra.blocks
		if !ok {
			return 0, ra.err
		}
		ra.block, ra.cur = b, b
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	if len(ra.cur) == 0 {
		ra.free <- ra.block[:cap(ra.block)]
	}
	return n, nil
}

// stop ends the reading goroutine (the extraction is over).
func (ra *readAhead) stop() { close(ra.done) }
