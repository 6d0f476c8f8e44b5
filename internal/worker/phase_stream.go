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
	active    []*destination  // every destination with a temp file
	primaries []*destination  // those the stream is written to
	stream    *archive.Digest // the stream's SHA-256, CRC-64 and length
}

// openArchives creates the uncommitted archive in every usable
// destination and groups the destinations by store (Copier: the local file
// system). It fails the run when none could be created.
func (rn *run) openArchives(ctx context.Context) bool {
	set := &archiveSet{}
	primaryOf := map[string]*destination{}
	for _, d := range rn.usableDests() {
		d.base, d.key, d.beforeReread = rn.base, rn.key, rn.seams.beforeReread
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
// the producer's error. The stream goes through an archive.StreamCheck,
// which parses it in full as it is written (every entry, every checksum of
// the compression format) and counts its entries and content bytes, which
// must be what the producer reports writing (archive.CheckCounts; a
// tar.zst checked by zstd(1) is instead proven to decode to exactly the
// tar stream the producer wrote: StreamCheck.Finish): so the
// stream is a complete, well-formed archive of what was archived, and the
// commit only has to prove, by its digest (set.stream: SHA-256, CRC-64
// and length), that each destination holds that stream. Encrypted
// (encryption.go), the checked plaintext goes on to the encryptor, which
// writes the ciphertext to what is described next, and set.stream is the
// ciphertext's digest. One
// primary: the stream goes straight into its file (a native compressor's
// output passes through the check on its way). Several: through the
// fan-out, which hashes the stream and writes the primaries concurrently.
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
		if enc, err = newEncryptingStream(out, rn.recipients, fo == nil); err != nil {
			if fo != nil {
				fo.Close()
			}
			return err
		}
		out = enc
	}
	check, err := archive.NewStreamCheck(ctx, out, cfg.Backup.Format, cfg.Backup.Threads, enc == nil && fo == nil)
	if err != nil {
		if fo != nil {
			fo.Close()
		}
		return err
	}
	stats, err := rn.produce(ctx, produce, check)
	if err == nil {
		err = checkStream(check, stats)
	} else {
		check.Abort()
	}
	if enc != nil {
		if err == nil {
			set.stream, err = enc.finish()
		} else {
			enc.abort()
		}
	}
	if fo != nil {
		if err == nil {
			err = buf.Flush()
		}
		fo.Close()
	}
	rn.stats = stats
	if err != nil {
		return err
	}
	switch {
	case fo != nil:
		// Encrypted: the fan-out hashed the ciphertext.
		d := fo.Digest()
		set.stream = &d
		for i, d := range set.primaries {
			if err := fo.sinkErr(i); err != nil {
				d.fail(err)
				d.abort()
			}
		}
	case enc == nil:
		if d, ok := check.Digest(); ok {
			set.stream = &d
		}
	}
	return nil
}

// produce runs the producer into w with the config's archive options and
// the progress display.
func (rn *run) produce(ctx context.Context, produce archiveProducer, w io.Writer) (archive.Stats, error) {
	cfg := rn.cfg
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, produce.phase, rn.dataSize, prog)
	defer stopProgress()
	return produce.run(ctx, w, archive.Options{
		Format:   cfg.Backup.Format,
		Level:    cfg.Backup.CompressionLevel,
		Threads:  cfg.Backup.Threads,
		Exclude:  cfg.Backup.Exclude,
		Logger:   rn.log,
		Progress: prog,
		SkipDirs: rn.skipDirs(),
		Manifest: rn.manifestSink(),
	})
}

// checkStream ends the stream check: its verdict, then what it found
// against what the producer wrote (StreamCheck.Finish).
func checkStream(check *archive.StreamCheck, wrote archive.Stats) error {
	if err := check.Finish(wrote); err != nil {
		return fmt.Errorf("verify the archive while it was written: %w", err)
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
