package archive

import (
	"io"

	"github.com/cespare/xxhash/v2"
)

// TarSum is the length and XXH64 (seed 0) of the tar stream the archiver
// fed its compressor. A zstd frame's Content_Checksum is the low 32 bits of
// the XXH64 of its content, so the stream check of a tar.zst archive can
// prove, with zstd -t, that the frame decodes to exactly this stream
// (StreamCheck.Finish).
type TarSum struct {
	Size  int64
	XXH64 uint64
}

// summingCompressor is a compressor that sums (TarSum) every byte it
// accepts.
type summingCompressor struct {
	io.WriteCloser
	h *xxhash.Digest
	n int64
}

func newSummingCompressor(c io.WriteCloser) *summingCompressor {
	return &summingCompressor{WriteCloser: c, h: xxhash.New()}
}

func (s *summingCompressor) Write(p []byte) (int, error) {
	n, err := s.WriteCloser.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}

// abort is the compressor's abort (tarSink.abort), else its Close.
func (s *summingCompressor) abort() {
	if a, ok := s.WriteCloser.(interface{ abort() }); ok {
		a.abort()
		return
	}
	s.WriteCloser.Close()
}

func (s *summingCompressor) sum() *TarSum {
	return &TarSum{Size: s.n, XXH64: s.h.Sum64()}
}

// tarSumOf is the TarSum of what went through comp when it sums (tar.zst),
// else nil.
func tarSumOf(comp io.WriteCloser) *TarSum {
	if s, ok := comp.(*summingCompressor); ok {
		return s.sum()
	}
	return nil
}
