package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The stream check of a tar.xz or tar.bz2 archive decompresses with the
// native tool when it is on PATH (the one the archive was compressed with,
// started with -d), and parses the tar stream it prints in Go. Profiled on
// the bench corpus (docs/performance.md, "Stream check with the native
// decompressors"): Go's compress/bzip2 needs about 2.3 times the CPU of
// bzip2(1) and, single-threaded, became the pace of the whole run while
// pbzip2 held both cores; ulikunitz/xz decodes several times slower than
// xz(1), which also decodes xz -T's blocks in parallel. The verdict is the
// tool's exit status (each one checks its format's checksums and refuses a
// truncated stream or bytes after its end) and the parse of its output.
//
// A tar.zst archive is checked without printing the tar stream at all
// (docs/performance.md, "zstdcheck"): zstd writing 1 GiB of decoded tar
// into a pipe and the worker reading and parsing it cost about 0.6 CPU-s
// per GiB on top of the decode (medians of 6 runs beside the compressor on
// 2 cores). Instead:
//   - the archiver sums the exact tar stream it feeds zstd (TarSum: XXH64
//     and length; tarsum.go), and starts zstd with --check;
//   - the check walks the zstd frame format on the chunks it already has
//     (zstdframe.go): exactly one frame, with a content checksum, no
//     dictionary, no skippable frame, nothing after it;
//   - it feeds the same chunks to `zstd -t -q`, which decodes every block
//     and checks the decoded content against the frame's checksum,
//     writing nothing;
//   - the verdict (StreamCheck.Finish): zstd -t exits 0, the walk is clean,
//     and the frame's checksum is the low 32 bits of the producer's XXH64
//     (and its content size, if the header has one, the producer's
//     length).
// So the file decodes to the tar stream the archiver wrote (well-formed by
// construction, its entries counted by the archiver): at least what the
// parse and the count compare proved (which accepted other content with
// the same entries and sizes, several frames, a skippable frame, a frame
// without checksum), for less CPU.
//
// Without the tool the Go decoder checks the stream (the archive was then
// compressed in Go too), parses it and compares the counts: the check is
// never skipped. A tool that is found but cannot be started fails the
// check.
//
// Only the stream check runs a native decoder: it sees the stream our own
// compressor is producing. verify, restore and drills read archives from
// destinations the service user (or a bucket's other users) can write, and
// decode them with Go's memory-safe decoders, never a C decoder as root.

// nativeDecoder returns the argv of the native decompressor that checks a
// format's stream, nil when there is none on PATH. bzip2(1) is not used:
// it exits 0 on bytes after the end of the stream (pbzip2 refuses them).
func nativeDecoder(format string, threads int) []string {
	t := strconv.Itoa(hostThreads(threads))
	tool, args := "", []string(nil)
	switch format {
	case FormatTarZst:
		tool, args = "zstd", []string{"-t", "-q"} // checkZstdFrame
	case FormatTarXz:
		tool, args = "xz", []string{"-d", "-c", "-q", "-T" + t}
	case FormatTarBz2:
		tool, args = "pbzip2", []string{"-d", "-c", "-q", "-p" + t}
	default:
		return nil
	}
	p, err := lookPath(tool)
	if err != nil {
		return nil
	}
	return append([]string{p}, args...)
}

// checkNative feeds the compressed stream (r) to the decompressor argv and
// parses its output. The decompressor's own memory is its own; ours stays
// the chunks plus a read buffer.
func checkNative(ctx context.Context, r *chunkReader, argv []string) (Stats, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return Stats{}, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return Stats{}, err
	}
	setPipeSize(inW.Fd(), nativePipeSize)
	setPipeSize(outW.Fd(), nativePipeSize)
	stderr := &capBuffer{max: 8 << 10}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return Stats{}, fmt.Errorf("starting the decompressor %s: %w", argv[0], err)
	}
	if testHookNativeStarted != nil {
		testHookNativeStarted(cmd.Process.Pid)
	}
	fed := make(chan error, 1)
	go func() {
		_, err := r.WriteTo(inW)
		inW.Close()
		fed <- err
	}()
	st, perr := parseTar(ctx, bufio.NewReaderSize(outR, streamCheckChunk))
	// After a failed parse the decompressor dies of SIGPIPE on its next
	// write, or has exited already with its own verdict, which must not
	// be lost to a kill (a cut zstd stream: its output ends, then it
	// exits 1).
	outR.Close()
	ferr := <-fed
	werr := cmd.Wait()
	return st, nativeVerdict(ctx, argv[0], perr, ferr, werr, stderr)
}

// nativeVerdict is the check's error: the cancellation, else the
// decompressor's refusal (it exited with an error of its own), else the
// parse's, else that the decompressor stopped reading before the end of
// the stream.
func nativeVerdict(ctx context.Context, tool string, perr, ferr, werr error, stderr *capBuffer) error {
	var exit *exec.ExitError
	refused := errors.As(werr, &exit) && exit.Exited()
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case refused && perr != nil:
		return fmt.Errorf("%s -d: %w%s (tar: %v)", tool, werr, stderr.suffix(), perr)
	case refused || (werr != nil && perr == nil):
		return fmt.Errorf("%s -d: %w%s", tool, werr, stderr.suffix())
	case perr != nil:
		return perr
	case ferr != nil:
		return fmt.Errorf("%s -d stopped reading before the end of the stream: %w", tool, ferr)
	}
	return nil
}

// WriteTo writes the remaining chunks to w as they come, without a copy,
// returning each to the free list once written. After a failed write it
// stops: the parse ends, and the producer hands no more chunks over.
func (r *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		if len(r.cur) == 0 {
			r.release()
			b, ok := <-r.full
			if !ok {
				return n, nil
			}
			r.buf, r.cur = b, b
		}
		m, err := w.Write(r.cur)
		n += int64(m)
		r.cur = r.cur[m:]
		if err != nil {
			return n, err
		}
	}
}

// checkZstdFrame walks the zstd frame in the stream (r) and feeds the same
// chunks to `zstd -t -q` (argv), which decodes it and checks its content
// checksum without writing anything. It returns the frame the walk found;
// StreamCheck.Finish compares it with the archiver's TarSum.
func checkZstdFrame(ctx context.Context, r *chunkReader, argv []string) (zstdFrame, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return zstdFrame{}, err
	}
	setPipeSize(inW.Fd(), nativePipeSize)
	stderr := &capBuffer{max: 8 << 10}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stderr = inR, stderr // Stdout: /dev/null (-t writes nothing)
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Start()
	inR.Close()
	if err != nil {
		inW.Close()
		return zstdFrame{}, fmt.Errorf("starting the decompressor %s: %w", argv[0], err)
	}
	if testHookNativeStarted != nil {
		testHookNativeStarted(cmd.Process.Pid)
	}
	walk := newFrameWalker()
	_, ferr := r.WriteTo(walkThenFeed{walk, inW})
	inW.Close()
	werr := cmd.Wait()
	frame, err := walk.finish()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return zstdFrame{}, context.Cause(ctx)
	case err != nil:
		// The walk's refusal first: it is exact, where zstd -t then
		// only sees a stream that ends early.
		return zstdFrame{}, err
	case werr != nil:
		if errors.As(werr, &exit) && exit.Exited() {
			return zstdFrame{}, fmt.Errorf("zstd -t: %w%s", werr, stderr.suffix())
		}
		return zstdFrame{}, fmt.Errorf("zstd -t: %w", werr)
	case ferr != nil:
		return zstdFrame{}, fmt.Errorf("zstd -t stopped reading before the end of the stream: %w", ferr)
	}
	return frame, nil
}

// walkThenFeed writes each chunk to the frame walk, then, if the walk
// accepts it, to zstd -t.
type walkThenFeed struct {
	walk *frameWalker
	in   io.Writer
}

func (w walkThenFeed) Write(p []byte) (int, error) {
	if _, err := w.walk.Write(p); err != nil {
		return 0, err
	}
	return w.in.Write(p)
}
