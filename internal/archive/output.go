package archive

import (
	"bufio"
	"io"
	"os"
)

// outputFile is the archive's output when Write or Convert is given an
// *os.File (the worker's only destination, the bench harness): the Go
// encoders' writes (zip headers, gzip blocks) are gathered into 1 MiB
// writes, and a native compressor is handed the file itself (see
// startNative), so its output is not copied through this process.
type outputFile struct {
	*bufio.Writer
	file *os.File
}

// bufferOutput wraps w in an outputFile when it is an *os.File. flush must
// be called after the last write.
func bufferOutput(w io.Writer) (out io.Writer, flush func() error) {
	f, ok := w.(*os.File)
	if !ok {
		return w, func() error { return nil }
	}
	o := &outputFile{Writer: bufio.NewWriterSize(f, copyBufSize), file: f}
	return o, o.Flush
}

// unbufferedFile returns the file behind w when w is an outputFile holding
// no buffered bytes, nil otherwise. It is called before anything is written
// to w, so the file's offset is where the archive starts.
func unbufferedFile(w io.Writer) *os.File {
	if o, ok := w.(*outputFile); ok && o.Buffered() == 0 {
		return o.file
	}
	return nil
}

// outputFileOf is the file w writes to: w itself, or the file behind a
// StreamCheck; nil when there is none.
func outputFileOf(w io.Writer) *os.File {
	switch o := w.(type) {
	case *os.File:
		return o
	case interface{ OutputFile() *os.File }:
		return o.OutputFile()
	}
	return nil
}
