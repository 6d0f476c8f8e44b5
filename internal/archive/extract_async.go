package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"
	"time"
)

// A private extraction (restore's staging directories) hands each small
// plain file, its content already read from the stream and checked, to
// one goroutine that creates and writes it, so that the kernel's work
// per file (openat with O_CREAT, mostly: ext4 allocating the inode)
// overlaps the parsing, the checks and the copy out of the decompressor
// of the next entries instead of alternating with them. Everything that
// decides what is created where stays in the extracting goroutine and in
// entry order: the checker's rules, the selection, the parent directories
// (made and checked before the hand-off), the size checks. Only what
// cannot change where a file lands is deferred: creating it (O_EXCL,
// O_NOFOLLOW, at a name whose parents were checked and that no later
// entry can take: duplicates are refused), its content, owner, mode and
// mtime. Before a hard link (whose target must exist and be one of ours),
// before the directories' attributes, and before the extraction reports
// success, every handed-off file is finished (flush), and its first
// error is the extraction's. A failed or cancelled extraction stops the
// goroutine before it returns, so nothing is written once the caller
// removes the staging directory.

const (
	// asyncMaxSize: larger files are written by the extracting
	// goroutine itself, from the stream, as before.
	asyncMaxSize = 256 << 10
	// asyncDepth files may wait (asyncDepth × asyncMaxSize of buffers).
	asyncDepth = 8
)

type fileJob struct {
	dst      string
	perm     uint32 // creation permissions (the final ones)
	mode     uint32 // final mode, chmod(2) bits
	chown    bool
	uid, gid int
	mtime    time.Time
	data     []byte
}

type fileWriter struct {
	ctx     context.Context
	x       *extractor
	jobs    chan *fileJob
	free    chan *fileJob
	done    chan struct{}
	pending sync.WaitGroup
	mu      sync.Mutex
	err     error
}

func newFileWriter(ctx context.Context, x *extractor) *fileWriter {
	w := &fileWriter{ctx: ctx, x: x, jobs: make(chan *fileJob, asyncDepth), free: make(chan *fileJob, asyncDepth+1), done: make(chan struct{})}
	for range asyncDepth + 1 {
		w.free <- &fileJob{}
	}
	go w.run()
	return w
}

func (w *fileWriter) run() {
	defer close(w.done)
	for j := range w.jobs {
		if w.failed() == nil {
			if err := w.ctx.Err(); err != nil {
				w.fail(err)
			} else if err := w.x.createFile(j); err != nil {
				w.fail(err)
			}
		}
		j.data = j.data[:0]
		w.free <- j
		w.pending.Done()
	}
}

func (w *fileWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// failed is the first error of a handed-off file so far.
func (w *fileWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// flush waits until every file handed off is finished and returns the
// first error.
func (w *fileWriter) flush() error {
	w.pending.Wait()
	return w.failed()
}

// stop ends the goroutine once it has finished (or, after an error,
// skipped) what it was handed; extractAt returns only after it.
func (w *fileWriter) stop() {
	close(w.jobs)
	<-w.done
}

// asyncEligible: a plain file the writer goroutine may create (no
// sparse holes, xattrs or ACLs, whose warnings and maps stay in the
// extracting goroutine; small enough to hold in memory).
func (x *extractor) asyncEligible(e *xentry) bool {
	return x.fw != nil && !e.sparse && len(e.xattrs) == 0 && e.acls[0] == nil && e.acls[1] == nil && e.size <= asyncMaxSize
}

// handOff reads e's content (exactly e.size bytes) and hands the file to
// the writer goroutine.
func (x *extractor) handOff(dst, name string, e *xentry, content io.Reader) error {
	j := <-x.fw.free
	if cap(j.data) < int(e.size) {
		j.data = make([]byte, e.size, asyncMaxSize)
	}
	j.data = j.data[:e.size]
	r := &ctxReader{x.ctx, content}
	n, err := io.ReadFull(r, j.data)
	if err == io.ErrUnexpectedEOF || (err == io.EOF && e.size > 0) {
		err = nil // reported as truncated below
	}
	x.st.BytesRead += int64(n)
	x.bytes += int64(n)
	if err == nil {
		err = checkContentEnd(r, x.buf, name, int64(n), e.size)
	} else {
		err = fmt.Errorf("%q: %w", name, err)
	}
	if err != nil {
		x.fw.free <- j
		return err
	}
	j.dst, j.perm, j.mode, j.mtime = dst, uint32(e.mode.Perm()), uint32(unixMode(e.mode)), e.mtime
	j.chown = x.opts.SameOwner && e.hasOwner
	if j.chown {
		j.uid, j.gid = x.uid(e), x.gid(e)
	}
	x.fw.pending.Add(1)
	x.fw.jobs <- j
	x.st.Files++
	return nil
}

// checkContentEnd: n of the declared size bytes were read, and nothing
// follows them (zip would give more).
func checkContentEnd(r io.Reader, buf []byte, name string, n, size int64) error {
	if n != size {
		return fmt.Errorf("%q: content truncated (%d of %d bytes)", name, n, size)
	}
	if m, err := r.Read(buf[:1]); m > 0 {
		return fmt.Errorf("%q: more content than the declared %d bytes", name, size)
	} else if err != nil && err != io.EOF {
		return fmt.Errorf("%q: %w", name, err)
	}
	return nil
}

// createFile creates and writes one handed-off file (the writer
// goroutine): as writeFile, from memory.
func (x *extractor) createFile(j *fileJob) (err error) {
	fd, err := createExcl(j.dst, j.perm)
	if errors.Is(err, fs.ErrExist) {
		// Private: nothing else writes here and names are unique.
		return err
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := syscall.Close(fd); err == nil && cerr != nil {
			err = &fs.PathError{Op: "close", Path: j.dst, Err: cerr}
		}
	}()
	si, got, err := fstatFd(fd)
	if err != nil {
		return &fs.PathError{Op: "fstat", Path: j.dst, Err: err}
	}
	x.addInode(si)
	if _, err := rawFile(fd).Write(j.data); err != nil {
		return &fs.PathError{Op: "write", Path: j.dst, Err: err}
	}
	if j.chown && (j.uid != si.uid || j.gid != si.gid) {
		if err := ignoringEINTR(func() error { return syscall.Fchown(fd, j.uid, j.gid) }); err != nil {
			return &fs.PathError{Op: "chown", Path: j.dst, Err: err}
		}
	}
	if j.mode != got || j.mode&0o7000 != 0 {
		if err := ignoringEINTR(func() error { return syscall.Fchmod(fd, j.mode) }); err != nil {
			return &fs.PathError{Op: "chmod", Path: j.dst, Err: err}
		}
	}
	if err := futimes(uintptr(fd), j.mtime); err != nil {
		return fmt.Errorf("setting mtime of %s: %w", j.dst, err)
	}
	return nil
}

// addInode records a file this extraction created (either goroutine).
func (x *extractor) addInode(si sysInfo) {
	x.inodesMu.Lock()
	x.inodes[[2]uint64{si.dev, si.ino}] = struct{}{}
	x.inodesMu.Unlock()
}
