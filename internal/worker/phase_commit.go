package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// commit is phase 7 (see the protocol in dest.go): each primary is
// fsynced, re-read for its CRC-64 and length, which must be the stream's
// (the stream was parsed in full while it was written: phase_stream.go),
// and committed under its final name with its .sha256 and .sig (of the
// stream's SHA-256); each copy is
// filled from its primary, then does the same. It reports whether at least
// one destination holds the verified archive.
func (rn *run) commit(ctx context.Context) bool {
	errs := rn.finishAll(ctx)
	return rn.tally(ctx, errs)
}

// finishAll finishes every destination concurrently and returns each
// one's error (by index in active).
func (rn *run) finishAll(ctx context.Context) []error {
	set := rn.archives
	active := set.active
	var wg sync.WaitGroup
	errs := make([]error, len(active))
	// Each copy reads its primary through a duplicate of the descriptor
	// the primary was written through (never its name: see dest.go),
	// taken before the primary can commit and close it.
	srcs := make([]CopySource, len(active))
	for i, d := range active {
		if d.primary != nil && d.primary.err == nil {
			srcs[i], errs[i] = d.primary.up.(Copier).CopySource()
		}
	}
	for i, d := range active {
		switch {
		case d.primary == nil && d.err == nil:
			goSafe(&wg, &errs[i], func() (err error) {
				defer func() {
					if err != nil {
						d.failPrimary()
					}
				}()
				_, err = d.finish(ctx, set.stream)
				return err
			})
		case d.primary == nil:
			d.failPrimary()
		case d.primary.err != nil:
			errs[i] = fmt.Errorf("the copy in %s, on the same file system, failed: %w", d.primary.dir, d.primary.err)
		case srcs[i] != nil:
			src := srcs[i]
			goSafe(&wg, &errs[i], func() error {
				defer src.Close()
				return d.copyFromPrimary(ctx, src)
			})
		}
	}
	wg.Wait()
	return errs
}

// tally records each destination's outcome and the run's.
func (rn *run) tally(ctx context.Context, errs []error) bool {
	active := rn.archives.active
	committed := 0
	for i, d := range active {
		if errs[i] != nil {
			d.abort()
			if ctx.Err() != nil {
				d.state = destInterrupted
				continue
			}
			d.fail(errs[i])
			rn.log.Error("destination failed", keyDestination, d.dir, "error", errs[i])
			continue
		}
		if d.state == destCommitted {
			committed++
			how := "streamed"
			if d.primary != nil {
				how = "copied from " + d.primary.dir
			}
			rn.log.Info("archive written and verified", keyDestination, d.dir, keyArchive, d.base, keyBytes, d.size, "written", how)
		}
	}
	if ctx.Err() != nil {
		rn.fatal(fmt.Errorf("interrupted while committing the archive: %w", context.Cause(ctx)))
		return false
	}
	if committed == 0 {
		rn.fatal(errors.New("no destination holds a verified copy of the archive"))
		return false
	}
	return true
}
