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
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/hashicorp/go-multierror"
	"golang.org/x/sys/unix"
)

// Destination write protocol (one destination directory, one archive):
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
//     per extra destination; a copy runs while its primary is parsed (step
//     4), which uses one core. Destinations on one file system share its
//     fate anyway (full, read-only, failing), so streaming to each of them
//     would buy no isolation; a copy whose primary fails fails with it;
//  3. fsync;
//  4. verify the temp file: re-read it through its descriptor (pread) and
//     hash it with SHA-256. A primary fed by the fan-out must match the
//     SHA-256 of the stream; a copy must match its primary's verified
//     SHA-256. Then the archive is parsed in full through the descriptor
//     (archive.VerifyAt: every entry, every checksum of the compression
//     format) — on one copy only (structureCheck): a copy whose
//     SHA-256 equals that of a copy that parsed has the same bytes, so
//     parsing it again would only repeat the decompression. A single
//     primary's stream is written straight to its file (a native
//     compressor writes it itself), so there is no stream hash: that
//     primary is always the one parsed, and its re-read hash is the
//     archive's. If the parse fails on one primary, the next is parsed in
//     its turn, so a read error in one copy does not condemn the others;
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
// its .sha256 or .sig (list shows "missing"; it is untrusted), never a checksum for an absent or
// partial archive. On any failure the temp files are removed and no final
// name appears; temp files left by a killed run are removed by the next
// run's preflight (staleTempRE).
type destination struct {
	dir      string
	name     string // service name
	base     string // final archive base name NAME-TS.EXT
	optional bool
	key      *hostkey.Key // signs the archive (step 5)

	// dirf is the destination directory, opened once; tmp, sumTmp and
	// sigTmp are temp names in it ("" when absent), file, sumFile and
	// sigFile the descriptors created under them.
	dirf                   *os.File
	tmp, sumTmp, sigTmp    string
	file, sumFile, sigFile *os.File

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

// openDir opens a destination directory for the *at calls. The configured
// path itself is the admin's (it may be a symlink to a mount); everything
// inside it is the service user's and is only reached through this
// descriptor.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// createAt creates a new private file name in dirf: O_EXCL|O_NOFOLLOW, so
// an existing name (a symlink planted by the user included) is an error,
// never followed; read-write, so it can be verified through the same
// descriptor.
func createAt(dirf *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dirf.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: filepath.Join(dirf.Name(), name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dirf.Name(), name)), nil
}

// create opens the destination directory and the private temp file.
func (d *destination) create() error {
	dirf, err := openDir(d.dir)
	if err != nil {
		return err
	}
	name := "." + d.base + ".tmp-" + randomSuffix()
	f, err := createAt(dirf, name)
	if err != nil {
		dirf.Close()
		return err
	}
	d.dirf, d.tmp, d.file = dirf, name, f
	return nil
}

// Write makes destination an io.Writer for the fan-out.
func (d *destination) Write(p []byte) (int, error) { return d.file.Write(p) }

// copyChunk bounds each copy_file_range round, so cancellation is noticed
// between rounds.
const copyChunk = 64 << 20

// copyFrom fills the temp file with the first size bytes of src (a
// duplicate of the primary's temp file descriptor) with copy_file_range(2)
// at explicit offsets: a reflink or an in-kernel copy, and no shared file
// offset between the copies of one primary. Where the kernel refuses, a
// pread/pwrite copy does the same.
func (d *destination) copyFrom(ctx context.Context, src *os.File, size int64) error {
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		roff, woff := off, off
		n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(d.file.Fd()), &woff, int(min(copyChunk, size-off)), 0)
		switch {
		case errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL):
			return copyAt(ctx, d.file, src, off, size)
		case err != nil:
			return err
		case n == 0:
			return fmt.Errorf("source ended at %d of %d bytes", off, size)
		}
		off += int64(n)
	}
	return nil
}

// copyAt copies bytes [off, size) from src to dst with pread/pwrite.
func copyAt(ctx context.Context, dst, src *os.File, off, size int64) error {
	buf := make([]byte, 1<<20)
	for off < size {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		n, err := src.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err == io.EOF && off < size {
			return fmt.Errorf("source ended at %d of %d bytes", off, size)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// dupFile returns an independent descriptor of f's open file (dup(2)): a
// copy reads the primary's temp file through it, whatever becomes of the
// primary's own descriptor or of the temp name.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
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
func (d *destination) copyFromPrimary(ctx context.Context, src *os.File, own owner, format string, sc *structureCheck) error {
	p := d.primary
	if err := p.copyable.wait(ctx); err != nil {
		return err
	}
	if p.primaryFailed.Load() {
		return fmt.Errorf("the copy in %s, on the same file system, failed", p.dir)
	}
	if err := d.copyFrom(ctx, src, p.size); err != nil {
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
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d.size = fi.Size()
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	sum, err := hashAt(ctx, f, d.size)
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
	// The checksum and signature are written before the parse so that a
	// primary's copies can start (see copyable) while it is parsed.
	if err := d.writeSideFiles(sum); err != nil {
		return nil, err
	}
	d.copyable.fire()
	if err := sc.verify(ctx, f, d.size, format, want == nil && d.primary == nil); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if d.verified != nil {
		d.sum = sum
		d.verified.fire()
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if err := d.commit(own); err != nil {
		return nil, err
	}
	d.state = destCommitted
	return sum, nil
}

// writeSideFiles writes the checksum and signature temp files (step 5).
func (d *destination) writeSideFiles(sum []byte) error {
	var err error
	d.sumTmp, d.sumFile, err = writeSideTemp(d.dirf, "."+d.base+".sha256.tmp-"+randomSuffix(), []byte(checksumLine(sum, d.base)))
	if err != nil {
		return fmt.Errorf("write checksum: %w", err)
	}
	if d.key == nil {
		return errors.New("no signing key")
	}
	d.sigTmp, d.sigFile, err = writeSideTemp(d.dirf, "."+d.base+".sig.tmp-"+randomSuffix(), d.key.SignatureFile(d.base, sum, d.size))
	if err != nil {
		return fmt.Errorf("write signature: %w", err)
	}
	return nil
}

// commit is step 6.
func (d *destination) commit(own owner) error {
	for _, c := range []struct {
		f     *os.File
		tmp   *string
		final string
	}{{d.file, &d.tmp, d.base}, {d.sumFile, &d.sumTmp, d.base + ".sha256"}, {d.sigFile, &d.sigTmp, d.base + ".sig"}} {
		if err := setOwnerMode(c.f, own, 0o640); err != nil {
			return fmt.Errorf("commit %s: set owner and mode: %w", c.final, err)
		}
		if err := linkFile(d.dirf, c.f, *c.tmp, c.final); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		// The temp name may point elsewhere by now (the user's doing);
		// it is removed either way, it is nothing of ours any more.
		unix.Unlinkat(int(d.dirf.Fd()), *c.tmp, 0)
		*c.tmp = ""
	}
	d.closeFiles()
	return syncDirFile(d.dirf)
}

// structureCheck parses the archive fully once for all copies of one
// stream (see step 4 above). Only call verify for a copy whose SHA-256 was
// checked against the stream's.
type structureCheck struct {
	mu sync.Mutex
	ok bool
}

// verify parses the first size bytes of f unless a copy with the same
// SHA-256 parsed already; always when force is set (a copy with no hash to
// compare).
func (sc *structureCheck) verify(ctx context.Context, f *os.File, size int64, format string, force bool) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ok && !force {
		return nil
	}
	if _, err := archive.VerifyAt(ctx, f, size, format); err != nil {
		return err
	}
	sc.ok = true
	return nil
}

func (d *destination) closeFiles() {
	for _, f := range []**os.File{&d.file, &d.sumFile, &d.sigFile} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// abort closes and removes whatever temp files the destination still has.
func (d *destination) abort() error {
	d.closeFiles()
	if d.dirf == nil {
		return nil
	}
	var errs *multierror.Error
	for _, p := range []*string{&d.tmp, &d.sumTmp, &d.sigTmp} {
		if *p == "" {
			continue
		}
		if err := unix.Unlinkat(int(d.dirf.Fd()), *p, 0); err != nil && err != unix.ENOENT {
			errs = multierror.Append(errs, &os.PathError{Op: "remove", Path: filepath.Join(d.dir, *p), Err: err})
		}
		*p = ""
	}
	d.dirf.Close()
	d.dirf = nil
	return listErr(errs)
}

// writeSideTemp creates name in dirf (root's, 0600) with data, fsynced, and
// returns it open for commit.
func writeSideTemp(dirf *os.File, name string, data []byte) (string, *os.File, error) {
	f, err := createAt(dirf, name)
	if err != nil {
		return "", nil, err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		unix.Unlinkat(int(dirf.Fd()), name, 0)
		return "", nil, err
	}
	return name, f, nil
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
		`-(\d{8}T\d{6}Z\.((` + strings.Join(exts, "|") + `)(\.sha256|\.sig)?|capture)\.tmp|probe)-[0-9a-f]{8}$`)
}
