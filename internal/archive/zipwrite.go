package archive

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/klauspost/compress/flate"
)

// Zip entries are compressed concurrently. The walker cuts each regular
// file into chunks of zipChunkSize bytes (computing the CRC-32 as it goes)
// and queues them in archive order; `threads` workers deflate the chunks,
// each chunk after the first with the previous chunk's last 32 KiB as
// preset dictionary and each but the last ending with a sync flush (like
// pgzip), so the concatenation is the entry's deflate stream; one writer
// goroutine writes the chunks in order: a file's first chunk after its local
// header (zip.Writer.CreateRaw, with a data descriptor), and after the last
// chunk the CRC-32 and sizes go into the header that zip.Writer keeps (it
// writes the data descriptor and the central directory from it).
// Directories and symlinks go through the same queue (zip.Writer.CreateHeader,
// stored). Memory: at most zipWindow(threads) chunks (input and output) are
// in flight, so it is bounded whatever the file sizes.

const (
	zipChunkSize = 1 << 20
	zipDictSize  = 32 << 10
)

// zipWindow is threads+2: every worker busy, one chunk being written and
// one being filled. It was 2*threads+2; at 4 GiB (zip.Writer keeps every
// entry's header until Close, about 25 MB for 80,000 entries) those extra
// MiB-sized chunks put the worker over 64 MiB once the stream check's parse
// runs beside the write (issue 15, bench -targets rss).
func zipWindow(threads int) int { return threads + 2 }

type zipJob struct {
	fh    *zip.FileHeader
	raw   bool // a chunk of a regular file
	first bool
	last  bool
	body  []byte // stored content (symlink target)
	in    *[]byte
	dict  []byte
	out   *bytes.Buffer
	crc   uint32 // last chunk: the file's CRC-32 and size
	size  int64
	done  chan struct{}
}

type zipSink struct {
	zw      *zip.Writer
	level   int
	ordered chan *zipJob
	work    chan *zipJob
	wg      sync.WaitGroup // workers and the writer goroutine
	mu      sync.Mutex
	err     error // first error of the writer goroutine or a worker
	stopped bool

	// the regular file being queued (walker goroutine only)
	cur     *zipJob
	curCRC  uint32
	curSize int64
	tail    []byte

	inPool, outPool sync.Pool
}

func newZipSink(w io.Writer, level, threads int) (*zipSink, error) {
	level, err := config.ResolveLevel(FormatZip, level)
	if err != nil {
		return nil, fmt.Errorf("archive: compression level %w", err)
	}
	if _, err := flate.NewWriter(io.Discard, level); err != nil {
		return nil, fmt.Errorf("archive: zip deflate level %d: %w", level, err)
	}
	threads = hostThreads(threads)
	s := &zipSink{
		zw:      zip.NewWriter(w),
		level:   level,
		ordered: make(chan *zipJob, zipWindow(threads)),
		work:    make(chan *zipJob, zipWindow(threads)),
	}
	s.inPool.New = func() any { b := make([]byte, zipChunkSize); return &b }
	s.outPool.New = func() any { return new(bytes.Buffer) }
	for i := 0; i < threads; i++ {
		s.wg.Add(1)
		go s.compressor()
	}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

func (s *zipSink) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func (s *zipSink) loadErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *zipSink) compressor() {
	defer s.wg.Done()
	fw, _ := flate.NewWriter(io.Discard, s.level) // level validated in newZipSink
	for j := range s.work {
		if s.loadErr() == nil {
			j.out = s.outPool.Get().(*bytes.Buffer)
			j.out.Reset()
			j.out.Grow(len(*j.in) + len(*j.in)/64 + 1024) // deflate's worst case, no regrowth
			// Always ResetDict: Reset would reuse the previous job's
			// dictionary (flate.Writer keeps it for Reset).
			fw.ResetDict(j.out, j.dict)
			_, err := fw.Write((*j.in)[:len(*j.in)])
			if err == nil {
				if j.last {
					err = fw.Close()
				} else {
					err = fw.Flush()
				}
			}
			if err != nil {
				s.setErr(fmt.Errorf("deflate: %w", err))
			}
		}
		close(j.done)
	}
}

func (s *zipSink) writer() {
	defer s.wg.Done()
	var cur io.Writer
	var compressed int64
	for j := range s.ordered {
		<-j.done
		if s.loadErr() == nil {
			if err := s.writeJob(j, &cur, &compressed); err != nil {
				s.setErr(err)
			}
		}
		s.release(j)
	}
}

func (s *zipSink) writeJob(j *zipJob, cur *io.Writer, compressed *int64) error {
	if !j.raw {
		w, err := s.zw.CreateHeader(j.fh)
		if err != nil {
			return err
		}
		if len(j.body) > 0 {
			_, err = w.Write(j.body)
		}
		return err
	}
	if j.first {
		w, err := s.zw.CreateRaw(j.fh)
		if err != nil {
			return err
		}
		*cur, *compressed = w, 0
	}
	if _, err := (*cur).Write(j.out.Bytes()); err != nil {
		return err
	}
	*compressed += int64(j.out.Len())
	if j.last {
		// zip.Writer keeps j.fh (CreateRaw stores its argument) and writes
		// the data descriptor and the central directory entry from it on
		// the next Create*/Close, like it does for CreateHeader entries.
		fh := j.fh
		fh.CRC32 = j.crc
		fh.CompressedSize64 = uint64(*compressed)
		fh.UncompressedSize64 = uint64(j.size)
		// zip.Writer writes the 32-bit sizes of a CreateRaw entry into the
		// central directory as given (it fills them itself only for
		// CreateHeader entries), so they must be set here.
		//lint:ignore SA1019 read by zip.Writer.Close for raw entries
		fh.CompressedSize = uint32(min(fh.CompressedSize64, 0xffffffff))
		//lint:ignore SA1019 read by zip.Writer.Close for raw entries
		fh.UncompressedSize = uint32(min(fh.UncompressedSize64, 0xffffffff))
		if fh.CompressedSize64 >= 0xffffffff || fh.UncompressedSize64 >= 0xffffffff {
			fh.ReaderVersion = 45 // zip64, as zip.Writer sets it for its own entries
		}
		*cur = nil
	}
	return nil
}

func (s *zipSink) release(j *zipJob) {
	if j.in != nil {
		*j.in = (*j.in)[:cap(*j.in)]
		s.inPool.Put(j.in)
		j.in = nil
	}
	if j.out != nil {
		if j.out.Cap() <= 2*zipChunkSize {
			s.outPool.Put(j.out)
		}
		j.out = nil
	}
}

// submit queues a job in archive order (blocking while the window is full).
func (s *zipSink) submit(j *zipJob) error {
	if err := s.loadErr(); err != nil {
		return err
	}
	if j.done == nil {
		j.done = make(chan struct{})
	}
	s.ordered <- j
	if j.raw {
		s.work <- j
	} else {
		close(j.done)
	}
	return nil
}

// uxExtra builds the Info-ZIP "ux" extra field (0x7875): version 1, 4-byte
// uid and gid, which `unzip -X` uses to restore owners.
func uxExtra(uid, gid int) []byte {
	b := make([]byte, 4+11)
	binary.LittleEndian.PutUint16(b[0:], 0x7875)
	binary.LittleEndian.PutUint16(b[2:], 11)
	b[4] = 1
	b[5] = 4
	binary.LittleEndian.PutUint32(b[6:], uint32(uid))
	b[10] = 4
	binary.LittleEndian.PutUint32(b[11:], uint32(gid))
	return b
}

func (s *zipSink) hardlinks() bool { return false }
func (s *zipSink) rich() bool      { return false }

func (s *zipSink) add(e *entry) (io.Writer, error) {
	fh := &zip.FileHeader{Name: e.name, Modified: e.mtime, Method: zip.Deflate}
	fh.SetMode(e.mode)
	fh.Extra = uxExtra(e.uid, e.gid)
	switch e.typ {
	case typeFile:
		prepareRawHeader(fh)
		s.cur = &zipJob{fh: fh, raw: true, first: true}
		s.curCRC, s.curSize, s.tail = 0, 0, nil
		if err := s.loadErr(); err != nil {
			return nil, err
		}
		return zipFileWriter{s}, nil
	case typeSymlink:
		fh.Method = zip.Store
		return io.Discard, s.submit(&zipJob{fh: fh, body: []byte(e.linkname)})
	default:
		fh.Method = zip.Store
		return io.Discard, s.submit(&zipJob{fh: fh})
	}
}

// prepareRawHeader does for a CreateRaw entry what zip.Writer.CreateHeader
// does itself: UTF-8 flag, versions, MS-DOS time and the extended timestamp
// field, data descriptor flag (sizes and CRC follow the data).
func prepareRawHeader(fh *zip.FileHeader) {
	if !isASCII(fh.Name) && utf8.ValidString(fh.Name) {
		fh.Flags |= 0x800
	}
	fh.CreatorVersion = fh.CreatorVersion&0xff00 | 20
	fh.ReaderVersion = 20
	// zip.Writer writes the MS-DOS time fields of a CreateRaw entry as
	// given; only CreateHeader derives them from Modified.
	//lint:ignore SA1019 written as-is by zip.Writer for raw entries
	fh.ModifiedDate, fh.ModifiedTime = msDosTime(fh.Modified)
	var mb [9]byte
	binary.LittleEndian.PutUint16(mb[0:], 0x5455)
	binary.LittleEndian.PutUint16(mb[2:], 5)
	mb[4] = 1
	binary.LittleEndian.PutUint32(mb[5:], uint32(fh.Modified.Unix()))
	fh.Extra = append(fh.Extra, mb[:]...)
	fh.Flags |= 0x8
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func msDosTime(t time.Time) (date, tm uint16) {
	date = uint16(t.Day() + int(t.Month())<<5 + (t.Year()-1980)<<9)
	tm = uint16(t.Second()/2 + t.Minute()<<5 + t.Hour()<<11)
	return
}

type zipFileWriter struct{ s *zipSink }

func (w zipFileWriter) Write(p []byte) (int, error) {
	s := w.s
	n := len(p)
	s.curCRC = crc32.Update(s.curCRC, crc32.IEEETable, p)
	s.curSize += int64(n)
	for len(p) > 0 {
		j := s.cur
		if j.in == nil {
			j.in = s.inPool.Get().(*[]byte)
			*j.in = (*j.in)[:0]
		} else if len(*j.in) == zipChunkSize {
			// Full and more is coming: queue it, start the next chunk.
			s.tail = append(s.tail[:0], (*j.in)[zipChunkSize-zipDictSize:]...)
			if err := s.submit(j); err != nil {
				return 0, err
			}
			s.cur = &zipJob{fh: j.fh, raw: true, dict: append([]byte(nil), s.tail...)}
			continue
		}
		m := copy((*j.in)[len(*j.in):zipChunkSize], p)
		*j.in = (*j.in)[:len(*j.in)+m]
		p = p[m:]
	}
	return n, nil
}

func (s *zipSink) endFile(e *entry, written int64) error {
	j := s.cur
	s.cur = nil
	if j.in == nil {
		j.in = s.inPool.Get().(*[]byte)
		*j.in = (*j.in)[:0]
	}
	j.last, j.crc, j.size = true, s.curCRC, s.curSize
	return s.submit(j)
}

// stop ends the pipeline and waits for it.
func (s *zipSink) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.ordered)
	close(s.work)
	s.wg.Wait()
}

func (s *zipSink) close() error {
	s.stop()
	if err := s.loadErr(); err != nil {
		return err
	}
	return s.zw.Close()
}

func (s *zipSink) abort() {
	s.setErr(errAborted)
	if s.cur != nil && s.cur.in != nil {
		s.release(s.cur)
	}
	s.stop()
}

var errAborted = fmt.Errorf("archive aborted")
