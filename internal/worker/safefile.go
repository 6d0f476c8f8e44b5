package worker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Reading from a destination. The destinations belong to the service user,
// who may put anything under any name there: a FIFO (an open or read would
// block forever), a symlink to /dev/zero or to a root-only file, a huge
// file where a one-line checksum is expected. Every file the worker reads
// from a destination is therefore opened with O_NOFOLLOW|O_NONBLOCK
// (a FIFO opens without a writer and is then refused), checked with fstat
// to be a regular file, and read with a size limit where its size is
// bounded by the protocol.

// maxSideFile bounds a .sha256 or .sig file: one short line.
const maxSideFile = 4 << 10

// errNotRegular: the name in the destination is not a regular file.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path read-only without following a symlink in its last
// component and without blocking on a FIFO or device, and refuses anything
// but a regular file. A missing file is os.ErrNotExist.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if err == unix.ELOOP {
			return nil, nil, fmt.Errorf("%s: a symlink, refused: %w", path, errNotRegular)
		}
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %s, refused: %w", path, fi.Mode().Type(), errNotRegular)
	}
	return f, fi, nil
}

// readSmallFile reads a regular file of at most limit bytes (see
// openRegular).
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, fi, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d expected", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than the %d bytes expected", path, limit)
	}
	return data, nil
}

// hashAt hashes the first size bytes of f (named name in errors) with pread, so the caller's file
// offset is neither used nor moved, honouring cancellation between reads.
// Fewer than size bytes is an error (the file was truncated under us).
func hashAt(ctx context.Context, f io.ReaderAt, name string, size int64) ([]byte, error) {
	h := sha256.New()
	if err := readAllAt(ctx, f, name, size, h); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// readAllAt writes the first size bytes of f (named name in errors) to
// w, read with pread as hashAt does.
func readAllAt(ctx context.Context, f io.ReaderAt, name string, size int64, w io.Writer) error {
	buf := make([]byte, 1<<20)
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		w.Write(buf[:n])
		off += int64(n)
		if err == io.EOF && off < size {
			return fmt.Errorf("%s: shorter than its %d bytes", name, size)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}
