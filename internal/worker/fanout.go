package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/hashicorp/go-multierror"
)

// fanout is the io.Writer the single archive stream is written to. It hashes
// the stream once and hands each chunk to every destination still alive, in
// parallel (one goroutine per destination, so a slow disk does not serialize
// the others, and a chunk is never buffered more than once). A destination
// whose write fails (full disk, read-only file system, EIO) is dropped and
// its error recorded; the stream continues to the others. Write fails only
// when no destination is left, which aborts the archive.
type fanout struct {
	ctx   context.Context
	log   *slog.Logger
	sinks []*sink
	hash  *archive.Digester
	n     int64
}

// sink is one destination's end of the fan-out.
type sink struct {
	name string // for logs and errors
	w    io.Writer
	req  chan []byte
	resp chan error
	err  error // set when the sink was dropped
	n    int64
}

func newFanout(ctx context.Context, log *slog.Logger, names []string, writers []io.Writer) *fanout {
	f := &fanout{ctx: ctx, log: log, hash: archive.NewDigester()}
	for i, w := range writers {
		s := &sink{name: names[i], w: w, req: make(chan []byte), resp: make(chan error)}
		f.sinks = append(f.sinks, s)
		go s.loop()
	}
	return f
}

func (s *sink) loop() {
	for p := range s.req {
		s.resp <- s.write(p)
	}
}

// write converts a panic in the underlying writer into an error: a panic in
// this goroutine could not be recovered by the run and would kill the
// process with the service still stopped.
func (s *sink) write(p []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while writing: %v", r)
		}
	}()
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// Write sends p to every live sink and waits for all of them, so p may be
// reused by the caller as soon as Write returns.
func (f *fanout) Write(p []byte) (int, error) {
	if err := f.ctx.Err(); err != nil {
		return 0, context.Cause(f.ctx)
	}
	f.hash.Write(p)
	var live []*sink
	for _, s := range f.sinks {
		if s.err == nil {
			s.req <- p
			live = append(live, s)
		}
	}
	alive := 0
	for _, s := range live {
		if err := <-s.resp; err != nil {
			s.err = err
			f.log.Error("destination failed; continuing with the others", "destination", s.name, "error", err)
		} else {
			alive++
		}
	}
	if alive == 0 {
		return 0, f.allFailed()
	}
	f.n += int64(len(p))
	return len(p), nil
}

var errAllDestinationsFailed = errors.New("every destination failed")

func (f *fanout) allFailed() error {
	var errs *multierror.Error
	for _, s := range f.sinks {
		if s.err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%s: %w", s.name, s.err))
		}
	}
	errs = multierror.Append(errs, errAllDestinationsFailed)
	return errs
}

// Close stops the sink goroutines. It must be called once, after the last
// Write.
func (f *fanout) Close() {
	for _, s := range f.sinks {
		close(s.req)
	}
}

// Sum returns the SHA-256 of everything written.
func (f *fanout) Sum() []byte { return f.hash.Digest().SHA256 }

// Digest returns the Digest of everything written.
func (f *fanout) Digest() archive.Digest { return f.hash.Digest() }

// Len returns the number of bytes accepted by Write.
func (f *fanout) Len() int64 { return f.n }

// sinkErr returns the error that dropped destination i, or nil.
func (f *fanout) sinkErr(i int) error { return f.sinks[i].err }

// goSafe runs fn in a goroutine and reports a panic as an error, for the same
// reason as sink.write.
func goSafe(wg *sync.WaitGroup, errp *error, fn func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				*errp = fmt.Errorf("panic: %v", r)
			}
		}()
		*errp = fn()
	}()
}
