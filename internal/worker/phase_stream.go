package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/backupgen/backupgen/internal/archive"
)

// archiveSet is this run's uncommitted archive in every usable destination
// (see the protocol in dest.go): the stream goes to one primary
// destination per file system; the others on that file system are copies
// of their primary.
type archiveSet struct {
	active    []*destination // every destination with a temp file
	primaries []*destination // those the stream is written to
	streamSum []byte         // SHA-256 of the stream (fan-out only)
}

// openArchives creates the uncommitted archive in every usable
// destination and groups the destinations by store (Copier: the local file
// system). It fails the run when none could be created.
func (rn *run) openArchives(ctx context.Context) bool {
	set := &archiveSet{}
	primaryOf := map[string]*destination{}
	for _, d := range rn.usableDests() {
		d.base, d.key = rn.base, rn.key
		if err := d.create(ctx); err != nil {
			d.fail(fmt.Errorf("create temp file: %w", err))
			rn.log.Error("destination failed", keyDestination, d.dir, "error", err)
			continue
		}
		set.active = append(set.active, d)
		var dev string
		var ok bool
		if c, isCopier := d.up.(Copier); isCopier {
			dev, ok = c.StoreKey()
		}
		if p := primaryOf[dev]; ok && p != nil {
			d.primary = p
			if p.verified == nil {
				p.copyable, p.verified = newSignal(), newSignal()
			}
			continue
		}
		if ok {
			primaryOf[dev] = d
		}
		set.primaries = append(set.primaries, d)
	}
	if len(set.active) == 0 {
		rn.fatal(errors.New("no destination could be written"))
		return false
	}
	rn.archives = set
	var names []string
	for _, d := range set.active {
		names = append(names, d.dir)
	}
	rn.log.Info("writing archive", keyArchive, rn.base, "destinations", strings.Join(names, ","), "streamed_to", len(set.primaries))
	return true
}

// stream writes the archive stream (produce) to the primaries and returns
// the producer's error. Encrypted (encryption.go), the producer writes to
// the encryptor, which writes the ciphertext to what is described next,
// and streamSum is the ciphertext's SHA-256 even for one primary. One primary: the archive goes straight into its
// file (a native compressor writes it itself). Several: through the
// fan-out, which hashes the stream and writes the primaries concurrently;
// batching the archiver's small writes keeps its per-write handoff cheap.
// A primary whose write failed is failed and its temp file removed.
func (rn *run) stream(ctx context.Context, produce archiveProducer) error {
	cfg, set := rn.cfg, rn.archives
	var out io.Writer
	var fo *fanout
	var buf *bufio.Writer
	if len(set.primaries) == 1 {
		out = set.primaries[0].up.Writer()
	} else {
		var pnames []string
		var writers []io.Writer
		for _, d := range set.primaries {
			pnames = append(pnames, d.dir)
			writers = append(writers, d.up.Writer())
		}
		fo = newFanout(ctx, rn.log, pnames, writers)
		buf = bufio.NewWriterSize(fo, 1<<20)
		out = buf
	}
	var enc *encryptingStream
	if rn.recipients != nil {
		var err error
		if enc, err = newEncryptingStream(ctx, out, rn.recipients, cfg.Backup.Format, fo == nil); err != nil {
			if fo != nil {
				fo.Close()
			}
			return err
		}
		out = enc
	}
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, produce.phase, rn.dataSize, prog)
	stats, err := produce.run(ctx, out, archive.Options{
		Format:   cfg.Backup.Format,
		Level:    cfg.Backup.CompressionLevel,
		Threads:  cfg.Backup.Threads,
		Exclude:  cfg.Backup.Exclude,
		Logger:   rn.log,
		Progress: prog,
		SkipDirs: rn.skipDirs(),
	})
	stopProgress()
	if enc != nil {
		if err == nil {
			set.streamSum, err = enc.finish()
		} else {
			enc.abort(err)
		}
	}
	if fo != nil {
		if err == nil {
			err = buf.Flush()
		}
		fo.Close()
	}
	rn.stats = stats
	if err != nil || fo == nil {
		return err
	}
	// Encrypted: streamSum is already the ciphertext's, which is what
	// the fan-out hashed too.
	set.streamSum = fo.Sum()
	for i, d := range set.primaries {
		if err := fo.sinkErr(i); err != nil {
			d.fail(err)
			d.abort()
		}
	}
	return nil
}

// streamFailed records a failed or interrupted stream: every temp file is
// removed, and no destination holds an archive.
func (rn *run) streamFailed(ctx context.Context, err error) {
	for _, d := range rn.archives.active {
		d.abort()
		if ctx.Err() != nil {
			d.state = destInterrupted
		} else {
			d.fail(errors.New("archive aborted"))
		}
	}
	if ctx.Err() != nil {
		rn.fatal(fmt.Errorf("interrupted while writing the archive: %w", context.Cause(ctx)))
	} else {
		rn.fatal(fmt.Errorf("write archive: %w", err))
	}
}

// abortAll removes whatever temp files the run still has: no temp file of
// a run survives it, whatever happened.
func (rn *run) abortAll() {
	for _, d := range rn.dests {
		if err := d.abort(); err != nil {
			rn.log.Error("cannot remove temp file", keyDestination, d.dir, "error", err)
		}
		// The last use of the store in the run: a remote one hangs up.
		if d.store != nil {
			closeStore(d.store)
		}
	}
}
