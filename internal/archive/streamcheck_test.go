package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// streamCheckFormats are the formats with each compressor the worker can
// use: the native tools and the pure-Go encoders.
var streamCheckFormats = []struct{ name, format string }{
	{"tar.gz", FormatTarGz},
	{"tar.zst native", FormatTarZst},
	{"tar.zst Go", FormatTarZst},
	{"tar.xz native", FormatTarXz},
	{"tar.xz Go", FormatTarXz},
	{"tar.bz2 native", FormatTarBz2},
	{"tar.bz2 Go", FormatTarBz2},
	{"zip", FormatZip},
}

// withoutNative makes the pure-Go encoders run for the test's duration.
func withoutNative(t *testing.T) {
	old := lookPath
	lookPath = func(string) (string, error) { return "", exec.ErrNotFound }
	t.Cleanup(func() { lookPath = old })
}

// streamTree is buildTree plus a sparse file (holes: ZeroFill for tar).
func streamTree(t *testing.T, dir string) []string {
	src, single := buildTree(t, dir)
	must(t, os.Remove(filepath.Join(src, "a/fifo")))
	f, err := os.Create(filepath.Join(src, "sparse.img"))
	must(t, err)
	_, err = f.WriteAt(pseudoRandom(8192, 9), 4<<20)
	must(t, err)
	must(t, f.Truncate(16<<20))
	must(t, f.Close())
	return []string{src, single}
}

// writeChecked writes the tree through a StreamCheck into a file, ends
// the check (Finish: its verdict against the producer's stats) and
// returns the producer's stats, the parse's (none for a tar.zst checked
// by zstd -t, which walks the frame instead: c.frame), the stream's Digest
// and the archive file.
func writeChecked(t *testing.T, dir, format string, paths []string) (wrote, parsed Stats, sum Digest, file string) {
	wrote, parsed, _, sum, file = writeCheckedFrame(t, dir, format, paths)
	return wrote, parsed, sum, file
}

func writeCheckedFrame(t *testing.T, dir, format string, paths []string) (wrote, parsed Stats, c *StreamCheck, sum Digest, file string) {
	t.Helper()
	file = filepath.Join(dir, "out."+format)
	f, err := os.Create(file)
	must(t, err)
	defer f.Close()
	c, err = NewStreamCheck(context.Background(), f, format, 0, true)
	must(t, err)
	wrote, err = Write(context.Background(), c, paths, Options{Format: format, Logger: quietLogger})
	if err != nil {
		c.Abort()
		t.Fatalf("Write: %v", err)
	}
	if err := c.Finish(wrote); err != nil {
		t.Fatalf("StreamCheck.Finish: %v", err)
	}
	sum, ok := c.Digest()
	if !ok {
		t.Fatal("a hashed StreamCheck has no Digest")
	}
	return wrote, c.st, c, sum, file
}

// The parse of the stream counts what the archiver wrote and what a
// read-back of the file counts, in every format and with each compressor
// (a tar.zst checked by zstd -t: the frame's checksum is the low 32 bits
// of the archiver's XXH64 of its tar stream, which is the XXH64 and length
// of the file's decoded content), and the stream's digest (SHA-256,
// CRC-64, length) is the file's.
func TestStreamCheckAgreesWithFile(t *testing.T) {
	for _, tc := range streamCheckFormats {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasSuffix(tc.name, " Go") {
				withoutNative(t)
			} else if tool := compressorTool(tc.format); strings.HasSuffix(tc.name, " native") {
				requireTool(t, tool)
			}
			dir := t.TempDir()
			paths := streamTree(t, dir)
			wrote, parsed, c, sum, file := writeCheckedFrame(t, dir, tc.format, paths)
			if c.framed != (tc.name == "tar.zst native") {
				t.Fatalf("framed %v: the zstd -t check runs exactly for the native tar.zst", c.framed)
			}
			if c.framed {
				if parsed.Files+parsed.Dirs+parsed.BytesRead != 0 || c.frame.Checksum != uint32(wrote.Tar.XXH64) {
					t.Fatalf("frame %+v, parsed %+v, archiver's tar %+v", c.frame, parsed, wrote.Tar)
				}
				parsed = Stats{Files: wrote.Files, Dirs: wrote.Dirs, Symlinks: wrote.Symlinks, Hardlinks: wrote.Hardlinks,
					BytesRead: wrote.BytesRead + wrote.ZeroFill} // compared with VerifyFile's below
			} else if err := CheckCounts(wrote, parsed); err != nil {
				t.Fatal(err)
			}
			if tc.format == FormatTarZst {
				checkTarSum(t, file, wrote.Tar)
			} else if wrote.Tar != nil {
				t.Errorf("%s: the archiver summed its tar stream: %+v", tc.format, wrote.Tar)
			}
			if wrote.Files < 10 || wrote.Symlinks != 2 || (tc.format != FormatZip && (wrote.Hardlinks != 1 || wrote.ZeroFill < 15<<20)) {
				t.Fatalf("the tree is not what the test expects: %+v", wrote)
			}
			data, err := os.ReadFile(file)
			must(t, err)
			if want := sha256.Sum256(data); !bytes.Equal(sum.SHA256, want[:]) {
				t.Errorf("Digest SHA-256 %x, the file's %x", sum.SHA256, want)
			}
			if crc := NewCRC64(); sum.Size != int64(len(data)) || sum.CRC64 != func() uint64 { crc.Write(data); return crc.Sum64() }() {
				t.Errorf("Digest has %d bytes and CRC-64 %016x, the file %d and %016x", sum.Size, sum.CRC64, len(data), crc.Sum64())
			}
			vst, err := VerifyFile(context.Background(), file, tc.format)
			must(t, err)
			if vst.Files != parsed.Files || vst.Dirs != parsed.Dirs || vst.Symlinks != parsed.Symlinks ||
				vst.Hardlinks != parsed.Hardlinks || vst.BytesRead != parsed.BytesRead {
				t.Errorf("stream check counted %+v, VerifyFile %+v", parsed, vst)
			}
		})
	}
}

// feed passes data through a StreamCheck and returns its verdict.
func feed(format string, data []byte) error {
	c, err := NewStreamCheck(context.Background(), &bytes.Buffer{}, format, 0, false)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 100_000) // many writes, across chunk boundaries
		if _, err := c.Write(data[:n]); err != nil {
			c.Abort()
			return err
		}
		data = data[n:]
	}
	_, err = c.Close()
	return err
}

// A stream with a flipped bit, cut short, with bytes after its end, or
// (zip) with a central directory that disagrees with its local headers is
// not a complete, well-formed archive.
func TestStreamCheckCatchesDamage(t *testing.T) {
	for _, tc := range streamCheckFormats {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasSuffix(tc.name, " Go") {
				withoutNative(t)
			} else if strings.HasSuffix(tc.name, " native") {
				requireTool(t, compressorTool(tc.format))
			}
			dir := t.TempDir()
			_, _, _, file := writeChecked(t, dir, tc.format, streamTree(t, dir))
			good, err := os.ReadFile(file)
			must(t, err)
			if err := feed(tc.format, good); err != nil {
				t.Fatalf("intact stream: %v", err)
			}
			damaged := map[string][]byte{
				"truncated":      good[:len(good)*2/3],
				"end cut":        good[:len(good)-1],
				"trailing bytes": append(bytes.Clone(good), "garbage"...),
			}
			for _, frac := range []int{3, 2} {
				b := bytes.Clone(good)
				b[len(b)/frac] ^= 0x10
				damaged["bit flipped at 1/"+string(rune('0'+frac))] = b
			}
			if tc.format == FormatZip {
				// A name in the central directory (the last record's).
				b := bytes.Clone(good)
				i := bytes.LastIndex(b, []byte("single.conf"))
				b[i] = 'S'
				damaged["central directory name"] = b
				b = bytes.Clone(good)
				i = bytes.LastIndex(b, []byte("PK\x01\x02"))
				b[i+16] ^= 1 // its CRC-32
				damaged["central directory CRC"] = b
			}
			for name, b := range damaged {
				if err := feed(tc.format, b); err == nil {
					t.Errorf("%s: stream check passed", name)
				}
			}
		})
	}
}

// CheckCounts refuses a stream that holds other entries or other content
// bytes than the archiver wrote.
func TestCheckCounts(t *testing.T) {
	wrote := Stats{Files: 3, Dirs: 2, Symlinks: 1, Hardlinks: 1, BytesRead: 100, ZeroFill: 20}
	if err := CheckCounts(wrote, Stats{Files: 3, Dirs: 2, Symlinks: 1, Hardlinks: 1, BytesRead: 120}); err != nil {
		t.Fatal(err)
	}
	for name, parsed := range map[string]Stats{
		"file missing":   {Files: 2, Dirs: 2, Symlinks: 1, Hardlinks: 1, BytesRead: 120},
		"dir missing":    {Files: 3, Dirs: 1, Symlinks: 1, Hardlinks: 1, BytesRead: 120},
		"symlink extra":  {Files: 3, Dirs: 2, Symlinks: 2, Hardlinks: 1, BytesRead: 120},
		"hard link lost": {Files: 3, Dirs: 2, Symlinks: 1, BytesRead: 120},
		"fifo":           {Files: 3, Dirs: 2, Symlinks: 1, Hardlinks: 1, Skipped: 1, BytesRead: 120},
		"bytes short":    {Files: 3, Dirs: 2, Symlinks: 1, Hardlinks: 1, BytesRead: 100},
	} {
		if err := CheckCounts(wrote, parsed); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// More than 65535 entries: zip.Writer adds the zip64 end records, which
// the one-pass zip parse reads instead of the 16-bit count.
func TestStreamCheckZip64EndRecords(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "many")
	must(t, os.Mkdir(src, 0o755))
	for i := range 66000 {
		f, err := os.Create(filepath.Join(src, "f"+strconv.Itoa(i)))
		must(t, err)
		f.Close()
	}
	wrote, parsed, _, file := writeChecked(t, dir, FormatZip, []string{src})
	if err := CheckCounts(wrote, parsed); err != nil || parsed.Files != 66000 {
		t.Fatalf("%d files: %v", parsed.Files, err)
	}
	good, err := os.ReadFile(file)
	must(t, err)
	if !bytes.Contains(good[len(good)-200:], []byte("PK\x06\x06")) {
		t.Fatal("no zip64 end record: the test checks nothing")
	}
	b := bytes.Clone(good)
	i := bytes.LastIndex(b, []byte("PK\x06\x06"))
	b[i+32] ^= 1 // the record's total entry count
	if err := feed(FormatZip, b); err == nil {
		t.Error("a wrong zip64 entry count passed")
	}
}

// The archive file behind a StreamCheck is still recognised, and skipped,
// when it lies inside a data path.
func TestStreamCheckArchiveInsideDataPath(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "data.txt"), []byte("data\n"), 0o644)
	f, err := os.Create(filepath.Join(dir, "out.tar.gz"))
	must(t, err)
	defer f.Close()
	c, err := NewStreamCheck(context.Background(), f, FormatTarGz, 0, false)
	must(t, err)
	st, err := Write(context.Background(), c, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger})
	must(t, err)
	parsed, err := c.Close()
	must(t, err)
	if st.Skipped != 1 || parsed.Files != 1 || !strings.Contains(strings.Join(st.Warnings, "\n"), "it is the archive being written") {
		t.Errorf("wrote %+v, parsed %+v", st, parsed)
	}
}

// nativeDecoders are the formats whose stream check decompresses with the
// native tool, and that tool.
var nativeDecoders = []struct{ format, tool string }{
	{FormatTarZst, "zstd"}, {FormatTarXz, "xz"}, {FormatTarBz2, "pbzip2"},
}

// With the tool on PATH the native decompressor checks the stream, and
// its refusal is the verdict: a real stream from the real compressor with
// bytes after its end (the tar inside is complete, so only the
// decompressor can object) or cut short fails with the tool's own
// error, and the intact stream passes. tar.zst: the frame walk refuses
// the bytes after the frame and the cut end (exactly, before zstd -t sees
// the stream end), and zstd -t a bit flipped inside a compressed block,
// which the walk skips.
func TestStreamCheckNativeDecoderRefuses(t *testing.T) {
	for _, tc := range nativeDecoders {
		t.Run(tc.format, func(t *testing.T) {
			requireTool(t, tc.tool)
			dir := t.TempDir()
			_, _, _, file := writeChecked(t, dir, tc.format, streamTree(t, dir))
			good, err := os.ReadFile(file)
			must(t, err)
			if err := feed(tc.format, good); err != nil {
				t.Fatalf("intact stream: %v", err)
			}
			type damage struct {
				b    []byte
				want string // in the error
			}
			refusal := tc.tool + " -d: exit status"
			damaged := map[string]damage{
				"trailing bytes": {append(bytes.Clone(good), "garbage"...), refusal},
				"end cut":        {good[:len(good)-1], refusal},
			}
			if tc.format == FormatTarZst {
				damaged["trailing bytes"] = damage{damaged["trailing bytes"].b, "bytes after the end of the zstd frame"}
				damaged["end cut"] = damage{damaged["end cut"].b, "the stream ends inside the zstd frame"}
				b := bytes.Clone(good)
				blk := largestCompressedBlock(t, b)
				b[blk.off+blk.size/2] ^= 0x10
				damaged["bit flipped in a compressed block"] = damage{b, "zstd -t: exit status"}
			}
			for name, d := range damaged {
				err := feed(tc.format, d.b)
				if err == nil || !strings.Contains(err.Error(), d.want) {
					t.Errorf("%s: %v, want %q", name, err, d.want)
				}
			}
		})
	}
}

// A native decompressor that is found but cannot be started (removed
// after the lookup) fails the check with that reason: the stream is never
// taken as checked without a decoder.
func TestStreamCheckNativeDecoderMissing(t *testing.T) {
	for _, tc := range nativeDecoders {
		t.Run(tc.format, func(t *testing.T) {
			requireTool(t, tc.tool)
			dir := t.TempDir()
			_, _, _, file := writeChecked(t, dir, tc.format, streamTree(t, dir))
			good, err := os.ReadFile(file)
			must(t, err)
			gone := filepath.Join(t.TempDir(), tc.tool)
			old := lookPath
			lookPath = func(string) (string, error) { return gone, nil }
			t.Cleanup(func() { lookPath = old })
			err = feed(tc.format, good)
			if err == nil || !strings.Contains(err.Error(), "starting the decompressor "+gone) {
				t.Fatalf("got %v, want the decompressor's start failure", err)
			}
		})
	}
}
