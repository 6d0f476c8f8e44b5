package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Native compressors. xz and bzip2 in pure Go (ulikunitz/xz, dsnet bzip2) run
// at a few MB/s on one core; the C tools are several times faster and
// multi-threaded, and zstd(1) -T N beats klauspost's streaming zstd encoder
// (which compresses on about one core). So for these formats the tar stream
// is piped through the native tool when it is on PATH; otherwise the pure-Go
// encoder is used (logged once per Write at Info level). gzip stays in Go:
// pgzip (klauspost deflate) is faster than pigz at the same level and size.

// lookPath is exec.LookPath; tests replace it.
var lookPath = exec.LookPath

// testHookNativeStarted (nil in production) receives the pid of every
// native compressor started.
var testHookNativeStarted func(pid int)

// nativeCommand returns the argv of the native compressor for a tar format
// (level already defaulted and validated), or nil with the name of the
// missing tool.
func nativeCommand(format string, level, threads int) (argv []string, missing string) {
	t := strconv.Itoa(threads)
	l := "-" + strconv.Itoa(level)
	switch format {
	case FormatTarXz:
		if p, err := lookPath("xz"); err == nil {
			return []string{p, "-T" + t, "-c", "-q", l}, ""
		}
		return nil, "xz"
	case FormatTarBz2:
		if p, err := lookPath("pbzip2"); err == nil {
			return []string{p, "-p" + t, "-c", "-q", l}, ""
		}
		if p, err := lookPath("bzip2"); err == nil {
			return []string{p, "-c", "-q", l}, ""
		}
		return nil, "pbzip2 or bzip2"
	case FormatTarZst:
		if p, err := lookPath("zstd"); err == nil {
			// --check explicitly: the stream check needs the frame's
			// content checksum, whatever a zstd build's default.
			argv = []string{p, "-T" + t, "-c", "-q", "--check", l}
			if level > 19 {
				argv = append(argv, "--ultra")
			}
			return argv, ""
		}
		return nil, "zstd"
	}
	return nil, ""
}

// nativeCompressor is an io.WriteCloser feeding a compressor process. When
// the archive goes to a file (an *outputFile), the process writes that file
// itself; otherwise its output is copied to the archive writer through a
// pipe.
//
// Failure handling: ctx cancellation kills the process (exec.CommandContext);
// a failing output writer makes the copier close the process's stdout, so
// the process dies of SIGPIPE/EPIPE and our next write to its stdin fails
// instead of blocking; a failing output file (a full disk) makes the process
// exit with an error of its own, reported with its stderr; every error path
// waits for the process (no zombie) and reports, in this order of
// preference, the output writer's error, the cancellation, the process's
// exit status with its stderr, the pipe error.
type nativeCompressor struct {
	ctx    context.Context
	name   string
	cmd    *exec.Cmd
	stdin  *os.File
	bw     *bufio.Writer
	stderr *capBuffer
	copied chan error // the copier's result (nil or *outputError)
	done   bool
	err    error // final result once done
}

type outputError struct{ err error }

func (e *outputError) Error() string { return "writing the archive: " + e.err.Error() }
func (e *outputError) Unwrap() error { return e.err }

const nativePipeSize = 1 << 20

func startNative(ctx context.Context, w io.Writer, argv []string) (*nativeCompressor, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	setPipeSize(inW.Fd(), nativePipeSize)
	c := &nativeCompressor{ctx: ctx, name: argv[0], stdin: inW, stderr: &capBuffer{max: 8 << 10}, copied: make(chan error, 1)}
	c.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.cmd.Stdin = inR
	c.cmd.Stderr = c.stderr
	c.cmd.WaitDelay = 5 * time.Second
	// The output file itself when there is one: then the compressed
	// stream is not copied through a pipe and this process, which on the
	// bench corpus is a tenth of the tar.zst wall time (bench/results.md).
	var outR, outW *os.File
	if f := unbufferedFile(w); f != nil {
		c.cmd.Stdout = f
	} else {
		if outR, outW, err = os.Pipe(); err != nil {
			inR.Close()
			inW.Close()
			return nil, fmt.Errorf("archive: %w", err)
		}
		setPipeSize(outW.Fd(), nativePipeSize)
		c.cmd.Stdout = outW
	}
	err = c.cmd.Start()
	inR.Close()
	if outW != nil {
		outW.Close()
	}
	if err != nil {
		inW.Close()
		if outR != nil {
			outR.Close()
		}
		return nil, fmt.Errorf("archive: starting %s: %w", argv[0], err)
	}
	if testHookNativeStarted != nil {
		testHookNativeStarted(c.cmd.Process.Pid)
	}
	c.bw = bufio.NewWriterSize(inW, 256<<10)
	if outR == nil {
		c.copied <- nil
	} else {
		go c.copyOutput(outR, w)
	}
	return c, nil
}

// copyOutput copies the process's output from the pipe to w.
func (c *nativeCompressor) copyOutput(outR *os.File, w io.Writer) {
	buf := make([]byte, 256<<10)
	var err error
	for {
		n, rerr := outR.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				err = &outputError{werr}
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	// On a write error this makes the compressor fail on its next write
	// (EPIPE/SIGPIPE) instead of blocking forever.
	outR.Close()
	c.copied <- err
}

func (c *nativeCompressor) Write(p []byte) (int, error) {
	if c.done {
		return 0, c.err
	}
	n, err := c.bw.Write(p)
	if err != nil {
		return n, c.finish(err, true)
	}
	return n, nil
}

// Close flushes, ends the input and waits for the process and the copier.
func (c *nativeCompressor) Close() error {
	if c.done {
		return c.err
	}
	return c.finish(c.bw.Flush(), false)
}

// abort kills the process and waits for it.
func (c *nativeCompressor) abort() {
	if !c.done {
		c.finish(errors.New("aborted"), true)
	}
}

func (c *nativeCompressor) finish(pipeErr error, kill bool) error {
	c.done = true
	if kill {
		c.cmd.Process.Kill()
	}
	c.stdin.Close()
	copyErr := <-c.copied
	waitErr := c.cmd.Wait()
	var oe *outputError
	switch {
	case errors.As(copyErr, &oe):
		c.err = oe
	case c.ctx.Err() != nil:
		c.err = fmt.Errorf("%s: %w", c.name, c.ctx.Err())
	case waitErr != nil && !kill:
		c.err = fmt.Errorf("%s: %w%s", c.name, waitErr, c.stderr.suffix())
	case pipeErr != nil:
		c.err = fmt.Errorf("%s: %w", c.name, pipeErr)
		if waitErr != nil {
			c.err = fmt.Errorf("%s: %w (%v%s)", c.name, pipeErr, waitErr, c.stderr.suffix())
		}
	case copyErr != nil:
		c.err = fmt.Errorf("%s: reading its output: %w", c.name, copyErr)
	}
	return c.err
}

// capBuffer keeps the first max bytes written to it (a process's stderr).
type capBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.b); room > 0 {
		b.b = append(b.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *capBuffer) suffix() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(string(b.b))
	if s == "" {
		return ""
	}
	return ": " + s
}

// logNative logs the compressor choice.
func logNative(log *slog.Logger, format string, argv []string, missing string) {
	if argv != nil {
		log.Debug("archive: using native compressor", "format", format, "command", strings.Join(argv, " "))
		return
	}
	if missing != "" {
		goName := map[string]string{FormatTarXz: "xz", FormatTarBz2: "bzip2", FormatTarZst: "zstd"}[format]
		log.Info("archive: native compressor not found, using pure-Go "+goName, "format", format, "missing", missing)
	}
}
