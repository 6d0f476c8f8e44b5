package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// checkTarSum decodes a tar.zst file with Go's decoder and checks that
// sum is the length and XXH64 of its content: what the archiver summed is
// the tar stream the compressor got.
func checkTarSum(t *testing.T, file string, sum *TarSum) {
	t.Helper()
	f, err := os.Open(file)
	must(t, err)
	defer f.Close()
	zr, err := zstd.NewReader(f)
	must(t, err)
	defer zr.Close()
	h := xxhash.New()
	n, err := io.Copy(h, zr)
	must(t, err)
	if sum == nil || sum.Size != n || sum.XXH64 != h.Sum64() {
		t.Fatalf("the archiver's TarSum is %+v, the archive's content has %d bytes, XXH64 %016x", sum, n, h.Sum64())
	}
}

// zblock is a block of a zstd frame: its type and its body's offset and
// length in the stream.
type zblock struct{ typ, off, size int }

// zstdBlocks lists the blocks of the zstd frame b starts with. It is the
// test's own reading of RFC 8878, independent of frameWalker.
func zstdBlocks(t *testing.T, b []byte) []zblock {
	t.Helper()
	if binary.LittleEndian.Uint32(b) != zstdMagic {
		t.Fatal("not a zstd frame")
	}
	fhd := b[4]
	n := 5
	single := fhd&0x20 != 0
	if !single {
		n++
	}
	n += []int{0, 1, 2, 4}[fhd&3]
	fcs := []int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcs = 1
	}
	n += fcs
	var out []zblock
	for {
		h := int(b[n]) | int(b[n+1])<<8 | int(b[n+2])<<16
		n += 3
		typ, size := h>>1&3, h>>3
		if typ == 1 {
			size = 1
		}
		out = append(out, zblock{typ, n, size})
		n += size
		if h&1 != 0 {
			return out
		}
	}
}

// largestCompressedBlock is the largest compressed block of the frame b
// starts with.
func largestCompressedBlock(t *testing.T, b []byte) zblock {
	t.Helper()
	var best zblock
	for _, blk := range zstdBlocks(t, b) {
		if blk.typ == 2 && blk.size > best.size {
			best = blk
		}
	}
	if best.size < 16 {
		t.Fatal("the frame has no compressed block to damage")
	}
	return best
}

// Crafted frames, built field by field as RFC 8878 describes them.

const (
	fhdChecksum = 1 << 2
	fhdSingle   = 1 << 5
)

func frameHeader(fhd byte, rest ...byte) []byte {
	return append([]byte{0x28, 0xB5, 0x2F, 0xFD, fhd}, rest...)
}

func blockHeader(last bool, typ, size int) []byte {
	h := size<<3 | typ<<1
	if last {
		h |= 1
	}
	return []byte{byte(h), byte(h >> 8), byte(h >> 16)}
}

func rawBlock(last bool, data []byte) []byte {
	return append(blockHeader(last, 0, len(data)), data...)
}

func rleBlock(last bool, c byte, n int) []byte {
	return append(blockHeader(last, 1, n), c)
}

func checksumOf(content []byte) []byte {
	return binary.LittleEndian.AppendUint32(nil, uint32(xxhash.Sum64(content)))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// walkFrame walks b written in pieces of step bytes (0: in one write).
func walkFrame(b []byte, step int) (zstdFrame, error) {
	w := newFrameWalker()
	for len(b) > 0 {
		n := len(b)
		if step > 0 {
			n = min(n, step)
		}
		if _, err := w.Write(b[:n]); err != nil {
			return zstdFrame{}, err
		}
		b = b[n:]
	}
	return w.finish()
}

// zstdTest runs the real `zstd -t -q` on b: nil when zstd accepts it.
func zstdTest(t *testing.T, b []byte) error {
	t.Helper()
	cmd := exec.Command("zstd", "-t", "-q")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("zstd -t: %s", out)
	}
	return err
}

// Valid frames of every header and block kind: the walk accepts them,
// written at once and byte by byte, and finds their content size, window
// size, checksum and block count; the real zstd -t accepts them too, so
// the crafted frames are real zstd.
func TestFrameWalkerAcceptsFrames(t *testing.T) {
	requireTool(t, "zstd")
	hello := []byte("hello, zstd\n")
	c300 := bytes.Repeat([]byte("0123456789"), 30)
	big := cat(bytes.Repeat([]byte{'a'}, 100_000), []byte("tail"))
	w13k := bytes.Repeat([]byte{'w'}, 13<<10)
	real := pseudoRandom(1<<20, 3)
	real = append(real, bytes.Repeat([]byte("compressible "), 100_000)...)
	cmd := exec.Command("zstd", "-c", "-q", "--check", "-3")
	cmd.Stdin = bytes.NewReader(real)
	compressed, err := cmd.Output()
	must(t, err)

	for _, tc := range []struct {
		name    string
		frame   []byte
		content []byte
		fcs     int64
		window  uint64
		blocks  int64
	}{
		{"single segment, 1-byte content size, raw block", cat(frameHeader(fhdChecksum|fhdSingle, byte(len(hello))),
			rawBlock(true, hello), checksumOf(hello)), hello, int64(len(hello)), uint64(len(hello)), 1},
		{"single segment, empty, empty raw block", cat(frameHeader(fhdChecksum|fhdSingle, 0),
			rawBlock(true, nil), checksumOf(nil)), nil, 0, 0, 1},
		{"single segment, 2-byte content size", cat(frameHeader(fhdChecksum|fhdSingle|1<<6, byte(len(c300)-256), 0),
			rawBlock(true, c300), checksumOf(c300)), c300, 300, 300, 1},
		{"window descriptor, 4-byte content size, RLE and raw blocks", cat(
			frameHeader(fhdChecksum|2<<6, 7<<3, 0xA4, 0x86, 0x01, 0x00), // window 2^17, size 100004
			rleBlock(false, 'a', 100_000), rawBlock(true, []byte("tail")), checksumOf(big)), big, 100_004, 128 << 10, 2},
		{"window descriptor, 8-byte content size", cat(
			frameHeader(fhdChecksum|3<<6, 0, byte(len(hello)), 0, 0, 0, 0, 0, 0, 0), // window 1 KiB
			rawBlock(true, hello), checksumOf(hello)), hello, int64(len(hello)), 1 << 10, 1},
		{"window descriptor with mantissa, no content size", cat(
			frameHeader(fhdChecksum, 3<<3|5), // window 8 KiB + 5 KiB
			rawBlock(true, w13k), checksumOf(w13k)), w13k, -1, 13 << 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 7} {
				f, err := walkFrame(tc.frame, step)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				want := zstdFrame{ContentSize: tc.fcs, WindowSize: tc.window, Checksum: uint32(xxhash.Sum64(tc.content)), Blocks: tc.blocks}
				if f != want {
					t.Fatalf("step %d: walked %+v, want %+v", step, f, want)
				}
			}
			if err := zstdTest(t, tc.frame); err != nil {
				t.Fatalf("zstd -t refuses the crafted frame: %v", err)
			}
		})
	}

	t.Run("zstd's own frame of compressed blocks", func(t *testing.T) {
		blocks := zstdBlocks(t, compressed)
		var nCompressed int
		for _, b := range blocks {
			if b.typ == 2 {
				nCompressed++
			}
		}
		if nCompressed < 2 {
			t.Fatalf("zstd wrote %d compressed blocks: the test checks too little", nCompressed)
		}
		for _, step := range []int{0, 1000, 128 << 10} {
			f, err := walkFrame(compressed, step)
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if f.Checksum != uint32(xxhash.Sum64(real)) || f.Blocks != int64(len(blocks)) {
				t.Fatalf("step %d: walked %+v, want checksum %08x and %d blocks", step, f, uint32(xxhash.Sum64(real)), len(blocks))
			}
		}
	})
}

// The walk refuses every stream that is not one complete frame with a
// content checksum and no dictionary: whatever a decoder might make of it.
func TestFrameWalkerRefuses(t *testing.T) {
	hello := []byte("hello, zstd\n")
	good := cat(frameHeader(fhdChecksum, 7<<3), rawBlock(false, hello), rleBlock(false, 'x', 10), rawBlock(true, hello),
		checksumOf(cat(hello, bytes.Repeat([]byte{'x'}, 10), hello)))
	if _, err := walkFrame(good, 0); err != nil {
		t.Fatalf("the intact frame: %v", err)
	}
	skippable := []byte{0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 's', 'k', 'i', 'p'}
	big := make([]byte, 128<<10+1)
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty stream":            {nil, "empty"},
		"not zstd":                {[]byte("garbage, not a frame"), "does not start with a zstd frame"},
		"skippable frame first":   {cat(skippable, good), "skippable frame"},
		"skippable frame after":   {cat(good, skippable), "a skippable frame after the end of the zstd frame"},
		"second frame":            {cat(good, good), "a second zstd frame after the end"},
		"garbage after":           {cat(good, []byte("garbage")), "bytes after the end of the zstd frame"},
		"one byte after":          {cat(good, []byte{0}), "bytes after the end of the zstd frame"},
		"no content checksum":     {cat(frameHeader(0, 7<<3), rawBlock(true, hello)), "no content checksum"},
		"dictionary id":           {cat(frameHeader(fhdChecksum|1, 7<<3, 9), rawBlock(true, hello), checksumOf(hello)), "names a dictionary"},
		"reserved bit":            {cat(frameHeader(fhdChecksum|1<<3, 7<<3), rawBlock(true, hello), checksumOf(hello)), "reserved bit"},
		"reserved block type":     {cat(frameHeader(fhdChecksum, 7<<3), blockHeader(true, 3, 5), hello[:5], checksumOf(hello[:5])), "reserved block type"},
		"block over 128 KiB":      {cat(frameHeader(fhdChecksum, 20<<3), rawBlock(true, big), checksumOf(big)), "more than the frame's block maximum 131072"},
		"block over the window":   {cat(frameHeader(fhdChecksum, 0), rawBlock(true, make([]byte, 1025))), "more than the frame's block maximum 1024"},
		"RLE over the window":     {cat(frameHeader(fhdChecksum|fhdSingle, 10), rleBlock(true, 'x', 11)), "more than the frame's block maximum 10"},
		"content size over range": {cat(frameHeader(fhdChecksum|3<<6, 0, 0, 0, 0, 0, 0, 0, 0, 0x80), rawBlock(true, nil)), "out of range"},
	} {
		for _, step := range []int{0, 1} {
			_, err := walkFrame(tc.b, step)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s (step %d): %v, want %q", name, step, err, tc.want)
			}
		}
	}
	// Cut anywhere, the frame is incomplete.
	for n := 1; n < len(good); n++ {
		if _, err := walkFrame(good[:n], 0); err == nil || !strings.Contains(err.Error(), "ends inside the zstd frame") {
			t.Fatalf("cut after %d of %d bytes: %v", n, len(good), err)
		}
	}
}

// The frame must hold the archiver's tar stream: its checksum is the low
// 32 bits of the stream's XXH64, its content size (when the header has
// one) the stream's length; without the archiver's sum nothing is proven.
func TestFrameMatchesTarSum(t *testing.T) {
	content := []byte("the tar stream")
	sum := &TarSum{Size: int64(len(content)), XXH64: xxhash.Sum64(content)}
	f := zstdFrame{ContentSize: -1, Checksum: uint32(sum.XXH64)}
	if err := f.matches(sum); err != nil {
		t.Fatal(err)
	}
	sized := f
	sized.ContentSize = sum.Size
	if err := sized.matches(sum); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		f    zstdFrame
		sum  *TarSum
		want string
	}{
		"other content":      {f, &TarSum{Size: sum.Size, XXH64: xxhash.Sum64([]byte("the tar streaM"))}, "the frame holds other content"},
		"low bit differs":    {f, &TarSum{Size: sum.Size, XXH64: sum.XXH64 ^ 1}, "other content"},
		"other content size": {zstdFrame{ContentSize: sum.Size - 1, Checksum: f.Checksum}, sum, "the zstd frame holds 13 bytes, the archiver wrote a tar stream of 14"},
		"no archiver sum":    {f, nil, "reported no XXH64"},
	} {
		if err := tc.f.matches(tc.sum); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// A tar.zst stream check by zstd -t refuses a stream whose frame is a
// perfectly good zstd frame of other content than the archiver wrote: the
// frame walk and zstd -t accept it, the checksum compare does not.
func TestStreamCheckZstdOtherContent(t *testing.T) {
	requireTool(t, "zstd")
	dir := t.TempDir()
	paths := streamTree(t, dir)
	wrote, _, _, file := writeChecked(t, dir, FormatTarZst, paths)
	good, err := os.ReadFile(file)
	must(t, err)
	// The same tar stream with one byte changed, compressed by zstd.
	var tarBuf bytes.Buffer
	zr, err := zstd.NewReader(bytes.NewReader(good))
	must(t, err)
	_, err = io.Copy(&tarBuf, zr)
	zr.Close()
	must(t, err)
	tarData := tarBuf.Bytes()
	tarData[len(tarData)/2] ^= 1
	cmd := exec.Command("zstd", "-c", "-q", "--check")
	cmd.Stdin = bytes.NewReader(tarData)
	altered, err := cmd.Output()
	must(t, err)

	for name, b := range map[string][]byte{"intact": good, "other content": altered} {
		c, err := NewStreamCheck(context.Background(), &bytes.Buffer{}, FormatTarZst, 0, false)
		must(t, err)
		_, err = c.Write(b)
		must(t, err)
		err = c.Finish(wrote)
		if name == "intact" {
			if err != nil {
				t.Fatalf("intact: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "the frame holds other content") {
			t.Errorf("%s: %v, want the checksum compare's refusal", name, err)
		}
	}
}

// The walk accepts what zstd(1) writes at every level the config allows
// (1-22; above 19 with --ultra), with the archiver's flags (-T2, --check,
// input from a pipe), and finds the checksum of the content.
func TestFrameWalkerEveryZstdLevel(t *testing.T) {
	requireTool(t, "zstd")
	content := append(pseudoRandom(200<<10, 5), bytes.Repeat([]byte("tar header and text "), 20_000)...)
	want := uint32(xxhash.Sum64(content))
	for level := 1; level <= 22; level++ {
		args := []string{"-T2", "-c", "-q", "--check", "-" + strconv.Itoa(level)}
		if level > 19 {
			args = append(args, "--ultra")
		}
		cmd := exec.Command("zstd", args...)
		cmd.Stdin = bytes.NewReader(content)
		out, err := cmd.Output()
		must(t, err)
		f, err := walkFrame(out, 64<<10)
		if err != nil || f.Checksum != want || f.ContentSize != -1 {
			t.Errorf("level %d: walked %+v, %v; want checksum %08x and no content size", level, f, err, want)
		}
	}
}
