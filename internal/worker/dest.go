package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
)

// Destination write protocol (one destination directory, one archive).
// The run drives it through the Destination interface: step 1 is Create,
// 2 Writer (and Copier for copies), 3 Stored, 5 Seal, 6 Commit; steps 2
// (grouping by store) and 4 are the run's (phase_stream.go,
// phase_commit.go, finish below). The local directory (localDir,
// dest_local.go) does it like this:
//
//  1. open the destination directory once (dirf); create
//     .NAME-TS.EXT.tmp-RANDOM in it (openat, O_EXCL|O_NOFOLLOW, read-write,
//     mode 0600, root's): private from the first byte, and never a name
//     that prune, list or a user would take for an archive. Every later
//     step works on that descriptor, never on the name: the directory
//     belongs to the service user, who can rename, unlink or replace the
//     temp name (with a symlink to /etc/shadow, or to another service's
//     archive) at any moment;
//  2. fill it. The destinations are grouped by file system: the first of
//     each file system (a primary) receives the archive stream — directly
//     when there is one primary, else through the fan-out (one writer per
//     primary, concurrently) — and every other destination on that file
//     system (a copy) is filled from its primary's temp file descriptor
//     with copy_file_range(2) at explicit offsets once the stream is
//     complete: a reflink on file
//     systems that share extents (XFS, btrfs), an in-kernel copy elsewhere.
//     Compression runs once and no user-space copy of the archive is made
//     per extra destination. Destinations on one file system share its
//     fate anyway (full, read-only, failing), so streaming to each of them
//     would buy no isolation; a copy whose primary fails fails with it.
//     On its way the stream is parsed in full (archive.StreamCheck: every
//     entry, every checksum of the compression format, the zip central
//     directory against the local headers) and hashed, and its entries
//     and content bytes must be what the archiver reports writing
//     (phase_stream.go): the stream is a complete, well-formed archive of
//     the data, and its SHA-256 and CRC-64 are known before anything is read back. A
//     local temp file's write-back starts as it is written;
//  3. fsync;
//  4. verify the temp file: re-read it through its descriptor (pread)
//     for its length and CRC-64 (the Runner's beforeReread seam runs just
//     before). A primary must match the stream's (archive.Digest, computed
//     as the stream went by, with its SHA-256); a copy must match its
//     primary's verified digest (a reflinked copy is re-read too). Equal
//     length and CRC-64: the file holds the stream that was parsed (no
//     one else can write the file, so only accidental damage is to catch:
//     archive.Digest), so it is not parsed again, and the stream's
//     SHA-256 is the file's;
//  5. write the checksum and the signature (internal/hostkey: the host
//     key signs the final name, SHA-256 and size) the same way:
//     .NAME-TS.EXT.sha256.tmp-RANDOM and .NAME-TS.EXT.sig.tmp-RANDOM, 0600,
//     fsync. The files stay root's and 0600 until step 6, so the service
//     user cannot change a byte between the hash and the signature;
//  6. for the archive, then the checksum, then the signature: fchown to the
//     configured user:group, fchmod 0640, and link the descriptor to its
//     final name (linkat, never replacing an existing file), unlink the
//     temp name; fsync the directory. What gets committed is the inode the
//     worker wrote, whatever the temp name points to by then. The user may
//     still alter the archive after the fchown: its signature then no
//     longer matches and the archive is untrusted (trust.go).
//
// So the final archive name only ever points at complete, fsynced and
// verified content. A crash between the moves leaves an archive without
// its .sha256 or .sig (list shows "missing"; it is untrusted), never a
// checksum for an absent or partial archive. On any failure the temp files are removed and no final
// name appears; temp files left by a killed run are removed by the next
// run's preflight (staleTempRE, CleanStale).

// destination is one destination's part in a run: its Destination and
// what the run did with it.
type destination struct {
	dir      string
	name     string // service name
	base     string // final archive base name NAME-TS.EXT
	optional bool
	key      *hostkey.Key // signs the archive (step 5)

	// store is where the archive goes; up is this run's uncommitted
	// archive in it (nil before Create and after Commit or Abort).
	store Destination
	up    Upload

	// primary is the destination this one is copied from (step 2), nil
	// for a primary. A primary with copies fires copyable when they may
	// start: its temp file is complete and its checksum file written, so
	// a copy can no longer take space the primary still needs. It fires
	// verified when its verification (step 4) has ended; digest is then
	// the verified digest (the stream's), or nil if it failed. A failing
	// primary fires both.
	primary       *destination
	copyable      *signal
	verified      *signal
	digest        *archive.Digest
	primaryFailed atomic.Bool

	// beforeReread is the Runner's seam of that name (seams.go).
	beforeReread func(dir string)

	// committed is the identity of the committed local archive file and
	// sum its verified SHA-256 (the verification memo, memo.go); nil when
	// the store gives none or it cannot be vouched for.
	committed *fileIdentity
	sum       []byte

	state  destState
	err    error
	pruned int // archives removed
	count  int // archives of this service after pruning
	size   int64
	// guard says why pruning was skipped in this destination (shrink.go),
	// "" when it was not.
	guard string
}

// destState is where a destination stands in a run.
type destState int

const (
	// destUsable: passed preflight (or not yet checked), not written yet.
	destUsable destState = iota
	// destSkipped: optional and not there; not a failure.
	destSkipped
	// destFailed: err says why; never holds this run's archive.
	destFailed
	// destInterrupted: the run was interrupted before this one committed.
	destInterrupted
	// destCommitted: holds this run's verified archive under its final name.
	destCommitted
)

// String is the state as the run summary shows it.
func (s destState) String() string {
	switch s {
	case destUsable:
		return "not written"
	case destSkipped:
		return "skipped"
	case destFailed:
		return "failed"
	case destInterrupted:
		return "interrupted"
	case destCommitted:
		return "ok"
	}
	return fmt.Sprintf("destState(%d)", int(s))
}

// path returns the path of name in the destination.
func (d *destination) path(name string) string { return filepath.Join(d.dir, name) }

// fail records the first error of the destination.
func (d *destination) fail(err error) {
	if d.err == nil {
		d.err = err
		d.state = destFailed
	}
}

// create starts the uncommitted archive (step 1).
func (d *destination) create(ctx context.Context) error {
	up, err := d.store.Create(ctx, d.base)
	if err != nil {
		return err
	}
	d.up = up
	return nil
}

// signal is a one-shot broadcast between a primary and its copies.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

// fire releases every waiter; later calls do nothing. A nil signal (a
// primary without copies) ignores it.
func (s *signal) fire() {
	if s != nil {
		s.once.Do(func() { close(s.ch) })
	}
}

func (s *signal) wait(ctx context.Context) error {
	select {
	case <-s.ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// failPrimary releases a failed primary's copies, which then fail too.
func (d *destination) failPrimary() {
	d.primaryFailed.Store(true)
	d.copyable.fire()
	d.verified.fire()
}

// copyFromPrimary is steps 2–6 for a copy: wait until the primary may be
// copied, copy it from src (a duplicate of the primary's temp file
// descriptor), then finish.
func (d *destination) copyFromPrimary(ctx context.Context, src CopySource) error {
	p := d.primary
	if err := p.copyable.wait(ctx); err != nil {
		return err
	}
	if p.primaryFailed.Load() {
		return fmt.Errorf("the copy in %s, on the same file system, failed", p.dir)
	}
	if err := d.up.(Copier).CopyFrom(ctx, src, p.size); err != nil {
		return fmt.Errorf("copy from %s: %w", p.dir, err)
	}
	_, err := d.finish(ctx, nil)
	return err
}

// finish runs steps 3–6 of the protocol. want is the stream's digest
// (the stream was parsed while it was written: archive.StreamCheck),
// which a primary's copy must match; nil for a copy, which must match its
// primary's. It returns the verified digest. A primary fires copyable and
// verified on the way (on failure, the caller calls failPrimary).
func (d *destination) finish(ctx context.Context, want *archive.Digest) (*archive.Digest, error) {
	if want == nil && d.primary == nil {
		return nil, errors.New("verify: no digest of the stream to compare the written copy with")
	}
	f, size, err := d.up.Stored(ctx)
	if err != nil {
		return nil, err
	}
	d.size = size
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	got, err := d.stored(ctx, f, want)
	if err != nil {
		return nil, err
	}
	if want != nil {
		if err := got.check(want, "the stream"); err != nil {
			return nil, err
		}
	}
	if p := d.primary; p != nil {
		// The copy was re-read while its primary was; now it needs
		// the primary's verdict.
		if err := p.verified.wait(ctx); err != nil {
			return nil, err
		}
		if p.digest == nil {
			return nil, fmt.Errorf("the copy in %s, on the same file system, failed verification", p.dir)
		}
		if err := got.check(p.digest, "the copy in "+p.dir); err != nil {
			return nil, err
		}
		want = p.digest
	}
	// What is signed is the SHA-256 of the stream that was parsed, which
	// the copy has just been shown to hold.
	sum := want.SHA256
	if err := d.seal(ctx, sum); err != nil {
		return nil, err
	}
	d.copyable.fire()
	if ru, remote := d.up.(remoteUpload); f == nil && remote {
		ru.ReadBackAgainst(*want)
	}
	if d.verified != nil {
		d.digest = want
		d.verified.fire()
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if err := d.up.Commit(ctx); err != nil {
		return nil, err
	}
	if ci, ok := d.up.(committedIdentifier); ok {
		d.committed, d.sum = ci.CommittedIdentity(), sum
	}
	d.up = nil
	d.state = destCommitted
	return want, nil
}

// held is what step 4 found a destination to hold: for an upload that
// cannot be read before Commit (S3), the stream's SHA-256 (want), once the
// upload proved that what it sent, confirmed part by part by the server,
// is exactly the stream (SentIntact; Commit checks the whole:
// confirmObject, readBackCRC); the SHA-256 that an SFTP upload that is not read back
// wrote (the server confirmed the size), or of an SFTP upload re-read; or,
// for a local file re-read after its fsync, its length and CRC-64
// (archive.Digest says why that suffices).
type held struct {
	sha  []byte // nil: re-read
	crc  uint64
	size int64
}

// check compares h with the digest of what the copy should hold (what:
// whose digest, for the error).
func (h held) check(want *archive.Digest, what string) error {
	switch {
	case h.sha != nil:
		if !bytes.Equal(h.sha, want.SHA256) {
			return fmt.Errorf("verify: written copy has SHA-256 %x, %s had %x", h.sha, what, want.SHA256)
		}
	case h.size != want.Size:
		return fmt.Errorf("verify: written copy has %d bytes, %s had %d", h.size, what, want.Size)
	case h.crc != want.CRC64:
		return fmt.Errorf("verify: written copy has CRC-64 %016x, %s had %016x", h.crc, what, want.CRC64)
	}
	return nil
}

// stored is step 4: what the destination holds. A file is re-read through
// f after the fsync (the beforeReread seam runs just before): a local temp
// file, which only root can write, for its length and CRC-64; one on a
// server (SFTP) for its SHA-256.
func (d *destination) stored(ctx context.Context, f io.ReaderAt, want *archive.Digest) (held, error) {
	if ru, remote := d.up.(remoteUpload); f == nil && remote {
		if want == nil {
			return held{}, errors.New("verify: no SHA-256 of the stream for a remote upload")
		}
		if err := ru.SentIntact(); err != nil {
			return held{}, fmt.Errorf("verify: %w", err)
		}
		return held{sha: want.SHA256}, nil
	}
	if sum := streamSum(d.up); sum != nil {
		return held{sha: sum}, nil
	}
	if d.beforeReread != nil {
		d.beforeReread(d.dir)
	}
	name := d.path(d.base) + " (uncommitted)"
	if _, local := d.up.(*localUpload); !local {
		// A file on a server (SFTP) may be written by others who use
		// the account: its SHA-256, as sent.
		sum, err := hashAt(ctx, f, name, d.size)
		if err != nil {
			return held{}, fmt.Errorf("verify: re-read: %w", err)
		}
		return held{sha: sum}, nil
	}
	crc := archive.NewCRC64()
	if err := readAllAt(ctx, f, name, d.size, crc); err != nil {
		return held{}, fmt.Errorf("verify: re-read: %w", err)
	}
	return held{crc: crc.Sum64(), size: d.size}, nil
}

// streamSummer is an optional capability of an Upload that is not read
// back (an SFTP destination with verifyReadBack off, on a metered link):
// it hashed the stream as it wrote it, and Stored confirmed the size the
// server holds. StreamSum is nil when the upload is read back after all.
type streamSummer interface {
	StreamSum() []byte
}

// streamSum is up's StreamSum, nil when it has none: then the run re-reads
// what Stored returns.
func streamSum(up Upload) []byte {
	if s, ok := up.(streamSummer); ok {
		return s.StreamSum()
	}
	return nil
}

// seal writes the checksum and the signature beside the archive (step 5).
func (d *destination) seal(ctx context.Context, sum []byte) error {
	if d.key == nil {
		return errors.New("no signing key")
	}
	return d.up.Seal(ctx, []byte(checksumLine(sum, d.base)), d.key.SignatureFile(d.base, sum, d.size))
}

// abort removes whatever the destination still has uncommitted.
func (d *destination) abort() error {
	if d.up == nil {
		return nil
	}
	err := d.up.Abort()
	d.up = nil
	return err
}

// checksumLine is one line in sha256sum's format: "<hex>  <name>\n" (two
// spaces: text mode), so `sha256sum -c NAME.sha256` works in the directory.
func checksumLine(sum []byte, base string) string {
	return hex.EncodeToString(sum) + "  " + base + "\n"
}

// parseChecksum returns the digest data (a sha256sum-format file, read
// from path) gives for base.
func parseChecksum(data []byte, path, base string) ([]byte, error) {
	for _, line := range strings.Split(string(data), "\n") {
		hexSum, name, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		if name != base {
			continue
		}
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%s: malformed checksum line", path)
		}
		return sum, nil
	}
	return nil, fmt.Errorf("%s: no checksum for %s", path, base)
}

// staleTempRE matches temp, capture (captureFirst) and probe files a killed
// run of service name may have left in a destination; nothing else is ever
// removed as "stale".
func staleTempRE(name string) *regexp.Regexp {
	exts := make([]string, len(config.Formats))
	for i, f := range config.Formats {
		exts[i] = regexp.QuoteMeta(config.ArchiveExt(f))
	}
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(name) +
		`-(\d{8}T\d{6}Z\.((` + strings.Join(exts, "|") + `)(` + regexp.QuoteMeta(config.EncryptedSuffix) + `)?(\.sha256|\.sig)?|capture)\.tmp|probe)-[0-9a-f]{8}$`)
}
