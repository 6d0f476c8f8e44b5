package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/backupgen/backupgen/archive"
	"github.com/backupgen/backupgen/config"
)

// Destination write protocol (one destination directory, one archive):
//
//  1. create .NAME-TS.EXT.tmp-RANDOM in the destination with O_EXCL and mode
//     0600: private from the first byte, and never a name that prune, list
//     or a user would take for an archive;
//  2. fill it. The destinations are grouped by file system: the first of
//     each file system (a primary) receives the archive stream — directly
//     when there is one primary, else through the fan-out (one writer per
//     primary, concurrently) — and every other destination on that file
//     system (a copy) is filled from its primary's temp file with
//     copy_file_range(2) once the stream is complete: a reflink on file
//     systems that share extents (XFS, btrfs), an in-kernel copy elsewhere.
//     Compression runs once and no user-space copy of the archive is made
//     per extra destination; a copy runs while its primary is parsed (step
//     4), which uses one core. Destinations on one file system share its
//     fate anyway (full, read-only, failing), so streaming to each of them
//     would buy no isolation; a copy whose primary fails fails with it;
//  3. fsync, then fchown to the configured user:group and fchmod 0640 —
//     still under the temp name;
//  4. verify the temp file: re-read it and hash it with SHA-256. A primary
//     fed by the fan-out must match the SHA-256 of the stream; a copy must
//     match its primary's verified SHA-256. Then the archive is parsed in
//     full (archive.VerifyFile: every entry, every checksum of the
//     compression format) — on one copy only (structureCheck): a copy whose
//     SHA-256 equals that of a copy that parsed has the same bytes, so
//     parsing it again would only repeat the decompression. A single
//     primary's stream is written straight to its file (a native
//     compressor writes it itself), so there is no stream hash: that
//     primary is always the one parsed, and its re-read hash is the
//     archive's. If the parse fails on one primary, the next is parsed in
//     its turn, so a read error in one copy does not condemn the others;
//  5. write the checksum the same way: .NAME-TS.EXT.sha256.tmp-RANDOM, 0600,
//     fsync, fchown, fchmod 0640;
//  6. move the archive to NAME-TS.EXT, then the checksum to NAME-TS.EXT.sha256
//     (link+unlink, which never replaces an existing file), fsync the
//     directory.
//
// So the final archive name only ever points at complete, fsynced and
// verified content. A crash between the two moves leaves an archive without
// its .sha256 (list shows "missing"), never a checksum for an absent or
// partial archive. On any failure the temp files are removed and no final
// name appears; temp files left by a killed run are removed by the next
// run's preflight (staleTempRE).
type destination struct {
	dir      string
	name     string // service name
	base     string // final archive base name NAME-TS.EXT
	tmp      string
	sumTmp   string
	file     *os.File
	optional bool

	// primary is the destination this one is copied from (step 2), nil
	// for a primary. A primary with copies fires copyable when they may
	// start: its temp file is complete and its checksum file written, so
	// a copy can no longer take space the primary still needs. It fires
	// verified when its verification (step 4) has ended; sum is then its
	// SHA-256, or nil if it failed. A failing primary fires both.
	primary       *destination
	copyable      *signal
	verified      *signal
	sum           []byte
	primaryFailed atomic.Bool

	status string // "ok", "skipped", "failed", "interrupted"
	err    error
	pruned int // archives removed
	count  int // archives of this service after pruning
	size   int64
}

func (d *destination) finalPath() string    { return filepath.Join(d.dir, d.base) }
func (d *destination) checksumPath() string { return d.finalPath() + ".sha256" }

// fail records the first error of the destination.
func (d *destination) fail(err error) {
	if d.err == nil {
		d.err = err
		d.status = "failed"
	}
}

// create opens the private temp file.
func (d *destination) create() error {
	d.tmp = filepath.Join(d.dir, "."+d.base+".tmp-"+randomSuffix())
	f, err := os.OpenFile(d.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		d.tmp = ""
		return err
	}
	d.file = f
	return nil
}

// Write makes destination an io.Writer for the fan-out.
func (d *destination) Write(p []byte) (int, error) { return d.file.Write(p) }

// copyChunk bounds each copy_file_range round, so cancellation is noticed
// between rounds.
const copyChunk = 64 << 20

// copyFrom fills the temp file from src (the primary's temp file, open at
// offset 0) with copy_file_range(2): *os.File.ReadFrom uses it for a file
// source, and falls back to a read/write copy where the kernel refuses.
func (d *destination) copyFrom(ctx context.Context, src *os.File) error {
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		n, err := io.CopyN(d.file, src, copyChunk)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n < copyChunk {
			return nil
		}
	}
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
// copied, copy it from src (the primary's temp file, open at offset 0),
// then finish.
func (d *destination) copyFromPrimary(ctx context.Context, src *os.File, own owner, format string, sc *structureCheck) error {
	p := d.primary
	if err := p.copyable.wait(ctx); err != nil {
		return err
	}
	if p.primaryFailed.Load() {
		return fmt.Errorf("the copy in %s, on the same file system, failed", p.dir)
	}
	if err := d.copyFrom(ctx, src); err != nil {
		return fmt.Errorf("copy from %s: %w", p.dir, err)
	}
	_, err := d.finish(ctx, nil, own, format, sc)
	return err
}

// finish runs steps 3–6 of the protocol. want is the SHA-256 the copy must
// have (the stream's), or nil for a copy (it must match its primary's) and
// for a single primary whose stream was not hashed. It returns the copy's
// verified SHA-256. A primary fires copyable and verified on the way (on
// failure, the caller calls failPrimary).
func (d *destination) finish(ctx context.Context, want []byte, own owner, format string, sc *structureCheck) ([]byte, error) {
	f := d.file
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("fsync: %w", err)
	}
	if err := setOwnerMode(f, own, 0o640); err != nil {
		return nil, fmt.Errorf("set owner and mode: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d.size = fi.Size()
	err = f.Close()
	d.file = nil
	if err != nil {
		return nil, fmt.Errorf("close: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	sum, err := fileSHA256(ctx, d.tmp)
	if err != nil {
		return nil, fmt.Errorf("verify: re-read: %w", err)
	}
	if want != nil && !bytes.Equal(sum, want) {
		return nil, fmt.Errorf("verify: written copy has SHA-256 %x, the stream had %x", sum, want)
	}
	if p := d.primary; p != nil {
		// The copy was hashed while its primary was parsed; now it
		// needs the primary's verdict.
		if err := p.verified.wait(ctx); err != nil {
			return nil, err
		}
		if p.sum == nil {
			return nil, fmt.Errorf("the copy in %s, on the same file system, failed verification", p.dir)
		}
		if !bytes.Equal(sum, p.sum) {
			return nil, fmt.Errorf("verify: written copy has SHA-256 %x, the copy in %s had %x", sum, p.dir, p.sum)
		}
	}
	// The checksum file is written before the parse so that a primary's
	// copies can start (see copyable) while it is parsed.
	d.sumTmp = filepath.Join(d.dir, "."+d.base+".sha256.tmp-"+randomSuffix())
	if err := writeChecksumTemp(d.sumTmp, sum, d.base, own); err != nil {
		return nil, fmt.Errorf("write checksum: %w", err)
	}
	d.copyable.fire()
	if err := sc.verify(ctx, d.tmp, format, want == nil && d.primary == nil); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if d.verified != nil {
		d.sum = sum
		d.verified.fire()
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if err := commitName(d.tmp, d.finalPath()); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	d.tmp = ""
	if err := commitName(d.sumTmp, d.checksumPath()); err != nil {
		return nil, fmt.Errorf("commit checksum: %w", err)
	}
	d.sumTmp = ""
	if err := syncDir(d.dir); err != nil {
		return nil, err
	}
	d.status = "ok"
	return sum, nil
}

// structureCheck parses the archive fully once for all copies of one
// stream (see step 4 above). Only call verify for a copy whose SHA-256 was
// checked against the stream's.
type structureCheck struct {
	mu sync.Mutex
	ok bool
}

// verify parses the copy at path unless a copy with the same SHA-256 parsed
// already; always when force is set (a copy with no hash to compare).
func (sc *structureCheck) verify(ctx context.Context, path, format string, force bool) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ok && !force {
		return nil
	}
	if _, err := archive.VerifyFile(ctx, path, format); err != nil {
		return err
	}
	sc.ok = true
	return nil
}

// abort closes and removes whatever temp files the destination still has.
func (d *destination) abort() error {
	var errs []error
	if d.file != nil {
		d.file.Close()
		d.file = nil
	}
	for _, p := range []*string{&d.tmp, &d.sumTmp} {
		if *p == "" {
			continue
		}
		if err := os.Remove(*p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		*p = ""
	}
	return errors.Join(errs...)
}

func writeChecksumTemp(path string, sum []byte, base string, own owner) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.WriteString(f, checksumLine(sum, base)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return setOwnerMode(f, own, 0o640)
}

// checksumLine is one line in sha256sum's format: "<hex>  <name>\n" (two
// spaces: text mode), so `sha256sum -c NAME.sha256` works in the directory.
func checksumLine(sum []byte, base string) string {
	return hex.EncodeToString(sum) + "  " + base + "\n"
}

// parseChecksumFile reads a sha256sum-format file and returns the digest
// given for base.
func parseChecksumFile(path, base string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
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

// fileSHA256 hashes a file, honouring cancellation between reads.
func fileSHA256(ctx context.Context, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return h.Sum(nil), nil
		}
		if err != nil {
			return nil, err
		}
	}
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
		`-(\d{8}T\d{6}Z\.((` + strings.Join(exts, "|") + `)(\.sha256)?|capture)\.tmp|probe)-[0-9a-f]{8}$`)
}
