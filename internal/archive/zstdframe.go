package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The zstd frame format (RFC 8878, section 3.1.1), walked without decoding:
// the stream check of a tar.zst archive (streamcheck_native.go) reads the
// frame's header, every block header and the content checksum from the
// chunks it hands to `zstd -t`, skipping the block bodies, which zstd -t
// decodes. The walk accepts exactly what our compressor must have written:
// one zstd frame, with a content checksum and no dictionary, and nothing
// before or after it (no skippable frame, no second frame).

const (
	zstdMagic        = 0xFD2FB528
	zstdSkippableMin = 0x184D2A50 // ... to 0x184D2A5F
	zstdBlockMax     = 128 << 10  // Block_Maximum_Size's upper bound
)

// zstdFrame is what the walk of a frame found.
type zstdFrame struct {
	ContentSize int64  // Frame_Content_Size; -1 when the header has none
	WindowSize  uint64 // Window_Size (single segment: the content size)
	Checksum    uint32 // Content_Checksum: the low 32 bits of the content's XXH64
	Blocks      int64
}

// frameWalker walks one zstd frame in a stream written to it in pieces of
// any size. Its memory is the frame header's 18 bytes at most.
type frameWalker struct {
	state    walkState
	buf      [18]byte // the field being collected
	have     int      // bytes of it collected
	need     int      // its length
	skip     int64    // block body bytes still to skip
	last     bool     // the current block is the last one
	single   bool     // Single_Segment_flag
	fcsLen   int      // Frame_Content_Size field length
	blockMax int64    // Block_Maximum_Size
	off      int64    // stream bytes walked
	f        zstdFrame
	err      error
}

type walkState int

const (
	walkMagic walkState = iota
	walkDescriptor
	walkHeader // Window_Descriptor, Dictionary_ID, Frame_Content_Size
	walkBlockHeader
	walkBlockBody
	walkChecksum
	walkDone
)

func newFrameWalker() *frameWalker {
	return &frameWalker{state: walkMagic, need: 4}
}

// Write walks p. It fails, and keeps failing, once the stream is not the
// one frame the walk accepts.
func (w *frameWalker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && w.err == nil {
		switch w.state {
		case walkDone:
			// Whatever follows is refused; its first 4 bytes say what
			// it is (finish refuses fewer).
			m := copy(w.buf[w.have:4], p)
			w.have += m
			p = p[m:]
			if w.have == 4 {
				w.err = w.trailer()
			}
		case walkBlockBody:
			m := int(min(int64(len(p)), w.skip))
			w.skip -= int64(m)
			w.off += int64(m)
			p = p[m:]
			if w.skip == 0 {
				w.endBlock()
			}
		default:
			m := copy(w.buf[w.have:w.need], p)
			w.have += m
			w.off += int64(m)
			p = p[m:]
			if w.have == w.need {
				w.field(w.buf[:w.need])
			}
		}
	}
	if w.err != nil {
		return 0, w.err
	}
	return n, nil
}

// trailer is the error for the bytes after the frame (w.buf[:w.have]),
// named by their first 4 bytes.
func (w *frameWalker) trailer() error {
	what := "bytes"
	if w.have == 4 {
		switch m := binary.LittleEndian.Uint32(w.buf[:4]); {
		case m == zstdMagic:
			what = "a second zstd frame"
		case m&^0xF == zstdSkippableMin:
			what = "a skippable frame"
		}
	}
	return fmt.Errorf("%s after the end of the zstd frame (offset %d)", what, w.off)
}

// expect makes the next n bytes the field to collect in state s.
func (w *frameWalker) expect(s walkState, n int) {
	w.state, w.have, w.need = s, 0, n
}

// field handles a complete field.
func (w *frameWalker) field(b []byte) {
	switch w.state {
	case walkMagic:
		switch m := binary.LittleEndian.Uint32(b); {
		case m == zstdMagic:
			w.expect(walkDescriptor, 1)
		case m&^0xF == zstdSkippableMin:
			w.err = errors.New("the stream starts with a skippable frame, not a zstd frame")
		default:
			w.err = fmt.Errorf("the stream does not start with a zstd frame (magic %08x)", m)
		}
	case walkDescriptor:
		w.descriptor(b[0])
	case walkHeader:
		w.header(b)
	case walkBlockHeader:
		w.blockHeader(b)
	case walkChecksum:
		w.f.Checksum = binary.LittleEndian.Uint32(b)
		w.expect(walkDone, 0)
	}
}

// descriptor reads the Frame_Header_Descriptor: a frame we wrote has a
// content checksum and no dictionary.
func (w *frameWalker) descriptor(d byte) {
	fcsFlag, didFlag := d>>6, d&3
	w.single = d&(1<<5) != 0
	switch {
	case d&(1<<3) != 0:
		w.err = errors.New("the zstd frame header's reserved bit is set")
		return
	case d&(1<<2) == 0:
		w.err = errors.New("the zstd frame has no content checksum")
		return
	case didFlag != 0:
		w.err = errors.New("the zstd frame names a dictionary")
		return
	}
	w.fcsLen = [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && w.single {
		w.fcsLen = 1
	}
	n := w.fcsLen
	if !w.single {
		n++ // Window_Descriptor
	}
	w.expect(walkHeader, n) // at least 1: a single segment has a content size
}

// header reads the Window_Descriptor (unless single segment) and the
// Frame_Content_Size.
func (w *frameWalker) header(b []byte) {
	if !w.single {
		exp, mant := uint(b[0]>>3), uint64(b[0]&7)
		base := uint64(1) << (10 + exp)
		w.f.WindowSize = base + base/8*mant
		b = b[1:]
	}
	var fcs uint64
	switch w.fcsLen {
	case 0:
		w.f.ContentSize = -1
	case 1:
		fcs = uint64(b[0])
	case 2:
		fcs = uint64(binary.LittleEndian.Uint16(b)) + 256
	case 4:
		fcs = uint64(binary.LittleEndian.Uint32(b))
	case 8:
		fcs = binary.LittleEndian.Uint64(b)
	}
	if w.fcsLen > 0 {
		if fcs > 1<<62 {
			w.err = fmt.Errorf("the zstd frame's content size %d is out of range", fcs)
			return
		}
		w.f.ContentSize = int64(fcs)
	}
	if w.single {
		w.f.WindowSize = fcs
	}
	w.blockMax = int64(min(w.f.WindowSize, zstdBlockMax))
	w.expect(walkBlockHeader, 3)
}

// blockHeader reads a block's 3-byte header: Last_Block, Block_Type and
// Block_Size, and skips the body (RLE: one byte; raw and compressed:
// Block_Size bytes).
func (w *frameWalker) blockHeader(b []byte) {
	h := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
	w.last = h&1 != 0
	size := int64(h >> 3)
	w.f.Blocks++
	if size > w.blockMax {
		w.err = fmt.Errorf("zstd block %d has %d bytes, more than the frame's block maximum %d", w.f.Blocks, size, w.blockMax)
		return
	}
	switch (h >> 1) & 3 {
	case 0, 2: // Raw_Block, Compressed_Block
	case 1: // RLE_Block: Block_Size is the size it regenerates
		size = 1
	case 3:
		w.err = fmt.Errorf("zstd block %d has the reserved block type", w.f.Blocks)
		return
	}
	w.skip = size
	if size == 0 {
		w.endBlock()
		return
	}
	w.state = walkBlockBody
}

func (w *frameWalker) endBlock() {
	if w.last {
		w.expect(walkChecksum, 4)
	} else {
		w.expect(walkBlockHeader, 3)
	}
}

// finish ends the walk at the end of the stream: the frame must be
// complete.
func (w *frameWalker) finish() (zstdFrame, error) {
	if w.err != nil {
		return zstdFrame{}, w.err
	}
	if w.state == walkDone && w.have > 0 {
		w.err = w.trailer()
		return zstdFrame{}, w.err
	}
	if w.state != walkDone {
		if w.off == 0 {
			return zstdFrame{}, errors.New("the stream is empty: no zstd frame")
		}
		return zstdFrame{}, fmt.Errorf("the stream ends inside the zstd frame (after %d bytes, in %s)", w.off, w.state)
	}
	return w.f, nil
}

func (s walkState) String() string {
	return [...]string{"the magic number", "the frame header", "the frame header", "a block header",
		"a block", "the content checksum", "nothing"}[s]
}

// matches reports whether the frame holds the tar stream the archiver
// reported writing: its content checksum is the low 32 bits of the
// stream's XXH64 (the checksum zstd -t verified the decoded content
// against), and its content size, when the header has one, is the
// stream's length.
func (f zstdFrame) matches(tar *TarSum) error {
	switch {
	case tar == nil:
		return errors.New("the archiver reported no XXH64 of its tar stream to compare the zstd frame's checksum with")
	case f.ContentSize >= 0 && f.ContentSize != tar.Size:
		return fmt.Errorf("the zstd frame holds %d bytes, the archiver wrote a tar stream of %d", f.ContentSize, tar.Size)
	case f.Checksum != uint32(tar.XXH64):
		return fmt.Errorf("the zstd frame's content checksum is %08x, the archiver's tar stream has %08x (XXH64 %016x of %d bytes): the frame holds other content",
			f.Checksum, uint32(tar.XXH64), tar.XXH64, tar.Size)
	}
	return nil
}
