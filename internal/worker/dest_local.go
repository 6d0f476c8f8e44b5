package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/backupgen/backupgen/internal/retention"
	"github.com/hashicorp/go-multierror"
	"golang.org/x/sys/unix"
)

// localDir is a Destination in a local directory (the write protocol in
// dest.go): private temp files created through a descriptor of the
// directory, fsync, link to the final name without overwrite, .sha256 and
// .sig beside the archive; copies between uploads on one file system with
// copy_file_range(2) (reflinks where the file system shares extents).
type localDir struct {
	dir      string
	name     string // service name
	optional bool
	owner    owner  // the archives' owner after Commit
	seams    *seams // mount table paths (prepareDestination)
	log      *slog.Logger
}

var _ Destination = (*localDir)(nil)

func (l *localDir) String() string { return l.dir }

// Prepare is prepareDestination (preflight.go).
func (l *localDir) Prepare(ctx context.Context) (bool, error) {
	return prepareDestination(l.seams, l.dir, l.name, l.optional, l.log)
}

// FreeSpace reports the room on the directory's file system; destinations
// on one file system share it (the key is its device number).
func (l *localDir) FreeSpace(ctx context.Context) (uint64, string, error) {
	avail, dev, err := freeSpace(l.dir)
	if err != nil {
		return 0, "", err
	}
	return avail, strconv.FormatUint(dev, 10), nil
}

// Create opens the destination directory and the private temp file
// .BASE.tmp-RANDOM in it (step 1 of the protocol).
func (l *localDir) Create(ctx context.Context, base string) (Upload, error) {
	if !l.ownName(base) {
		return nil, fmt.Errorf("%s: not an archive name of %s", base, l.name)
	}
	dirf, err := openDir(l.dir)
	if err != nil {
		return nil, err
	}
	name := "." + base + ".tmp-" + randomSuffix()
	f, err := createAt(dirf, name)
	if err != nil {
		dirf.Close()
		return nil, err
	}
	u := &localUpload{dir: l.dir, base: base, owner: l.owner, dirf: dirf, tmp: name, file: f}
	if l.seams != nil {
		u.inCommit = l.seams.inCommit
	}
	return u, nil
}

// List lists the service's archives in every known format: regular files
// of the naming pattern only (a symlink is never listed).
func (l *localDir) List(ctx context.Context) ([]StoredArchive, error) {
	found, err := scanAllFormats(l.dir, l.name)
	if err != nil {
		return nil, err
	}
	out := make([]StoredArchive, len(found))
	for i, a := range found {
		out[i] = StoredArchive{Archive: a.Archive, Format: a.format, Encrypted: a.encrypted}
	}
	return out, nil
}

// ownName reports whether name is an archive name of the service.
func (l *localDir) ownName(name string) bool {
	_, ok := parseArchiveName(l.name, name)
	return ok
}

// Open opens a committed archive as openRegular does: never through a
// symlink, never blocking on a FIFO, only a regular file.
func (l *localDir) Open(ctx context.Context, name string) (ArchiveReader, error) {
	if !l.ownName(name) {
		return nil, fmt.Errorf("%s: not an archive name of %s", name, l.name)
	}
	return openLocalArchive(filepath.Join(l.dir, name))
}

// localArchive is an archive file opened as openRegular does, and its
// size at open.
type localArchive struct {
	*os.File
	size int64
}

// openLocalArchive opens the archive at path (see openRegular).
func openLocalArchive(path string) (*localArchive, error) {
	f, fi, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	return &localArchive{f, fi.Size()}, nil
}

func (a *localArchive) Size() int64 { return a.size }

// ReadSide reads NAME.ext as readSmallFile does.
func (a *localArchive) ReadSide(ext string, limit int64) ([]byte, error) {
	return readSmallFile(a.File.Name()+ext, limit)
}

// Remove removes the archive, then its .sha256 and .sig (those that are
// regular files), and fsyncs the directory. An archive name that is not a
// regular file is refused and left alone.
func (l *localDir) Remove(ctx context.Context, name string) error {
	if !l.ownName(name) {
		return fmt.Errorf("%s: not an archive name of %s", name, l.name)
	}
	p := filepath.Join(l.dir, name)
	if !retention.IsRegularFile(p) {
		return fmt.Errorf("%s: refused: %w", p, errNotRegular)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs *multierror.Error
	for _, side := range []string{p + ".sha256", p + ".sig"} {
		if retention.IsRegularFile(side) {
			if err := os.Remove(side); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = multierror.Append(errs, err)
			}
		}
	}
	if err := syncDir(l.dir); err != nil {
		errs = multierror.Append(errs, err)
	}
	if errs != nil {
		return fmt.Errorf("%w: %w", errSideFiles, listErr(errs))
	}
	return nil
}

// errSideFiles: Remove removed the archive, but not everything beside it
// (or could not fsync the directory).
var errSideFiles = errors.New("archive removed, but not its side files")

// CleanStale is removeStaleTemps (preflight.go).
func (l *localDir) CleanStale(ctx context.Context) error {
	return removeStaleTemps(l.dir, l.name, l.log)
}

// localUpload is an uncommitted archive in a localDir. dirf is the
// destination directory, opened once; tmp, sumTmp and sigTmp are temp
// names in it ("" when absent), file, sumFile and sigFile the descriptors
// created under them. Every step works on the descriptors, never on the
// names: the directory belongs to the service user, who can rename,
// unlink or replace a temp name at any moment.
type localUpload struct {
	dir, base              string
	owner                  owner
	dirf                   *os.File
	tmp, sumTmp, sigTmp    string
	file, sumFile, sigFile *os.File
	// watch: the archive's hand-over to its owner (Commit), for
	// CommittedIdentity (memo.go); nil: none.
	watch    *handoverWatch
	inCommit func(tmp string) // seams.inCommit
}

var _ Copier = (*localUpload)(nil)

// Writer writes the temp file and starts its write-back as it goes.
func (u *localUpload) Writer() io.Writer { return &writebackFile{f: u.file} }

// writebackFile writes an archive temp file and asks the kernel to start
// writing each writebackChunk to disk as soon as it is complete
// (sync_file_range(2) SYNC_FILE_RANGE_WRITE: it does not wait for the
// disk). Without it the archive stays dirty in the page cache until the
// fsync of step 3, which then writes all of it while the run waits. It is
// only a head start: the fsync is what makes the file durable.
type writebackFile struct {
	f            *os.File
	off, started int64 // bytes written; bytes whose write-back was started
}

const writebackChunk = 8 << 20

func (w *writebackFile) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= writebackChunk {
		// An error here only means no head start (the fsync reports
		// real ones).
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.off
	}
	return n, err
}

// OutputFile is the temp file, which the archiver skips should it lie
// inside a data path.
func (w *writebackFile) OutputFile() *os.File { return w.f }

// Stored fsyncs the temp file and returns its descriptor (step 3).
func (u *localUpload) Stored(ctx context.Context) (io.ReaderAt, int64, error) {
	if err := u.file.Sync(); err != nil {
		return nil, 0, fmt.Errorf("fsync: %w", err)
	}
	fi, err := u.file.Stat()
	if err != nil {
		return nil, 0, err
	}
	return u.file, fi.Size(), nil
}

// Seal writes the checksum and signature temp files (step 5): root's,
// 0600, fsynced.
func (u *localUpload) Seal(ctx context.Context, checksum, signature []byte) error {
	var err error
	u.sumTmp, u.sumFile, err = writeSideTemp(u.dirf, "."+u.base+".sha256.tmp-"+randomSuffix(), checksum)
	if err != nil {
		return fmt.Errorf("write checksum: %w", err)
	}
	u.sigTmp, u.sigFile, err = writeSideTemp(u.dirf, "."+u.base+".sig.tmp-"+randomSuffix(), signature)
	if err != nil {
		return fmt.Errorf("write signature: %w", err)
	}
	return nil
}

// Commit is step 6: for the archive, then the checksum, then the
// signature, fchown and fchmod 0640, link the descriptor to the final name
// (never replacing one), unlink the temp name; then fsync the directory.
func (u *localUpload) Commit(ctx context.Context) error {
	if u.sumFile == nil || u.sigFile == nil {
		return errors.New("commit: not sealed")
	}
	for _, c := range []struct {
		f     *os.File
		tmp   *string
		final string
	}{{u.file, &u.tmp, u.base}, {u.sumFile, &u.sumTmp, u.base + ".sha256"}, {u.sigFile, &u.sigTmp, u.base + ".sig"}} {
		if c.f == u.file {
			u.watch = watchHandover(u.file)
		}
		if err := setOwnerMode(c.f, u.owner, 0o640); err != nil {
			u.watch.close()
			return fmt.Errorf("commit %s: set owner and mode: %w", c.final, err)
		}
		if c.f == u.file && u.inCommit != nil {
			u.inCommit(filepath.Join(u.dir, *c.tmp))
		}
		if err := linkFile(u.dirf, c.f, *c.tmp, c.final); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		// The temp name may point elsewhere by now (the user's doing);
		// it is removed either way, it is nothing of ours any more.
		unix.Unlinkat(int(u.dirf.Fd()), *c.tmp, 0)
		*c.tmp = ""
	}
	u.closeFiles()
	err := syncDirFile(u.dirf)
	u.dirf.Close()
	u.dirf = nil
	return err
}

func (u *localUpload) closeFiles() {
	for _, f := range []**os.File{&u.file, &u.sumFile, &u.sigFile} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// Abort closes and removes whatever temp files the upload still has.
func (u *localUpload) Abort() error {
	u.closeFiles()
	u.watch.close()
	if u.dirf == nil {
		return nil
	}
	var errs *multierror.Error
	for _, p := range []*string{&u.tmp, &u.sumTmp, &u.sigTmp} {
		if *p == "" {
			continue
		}
		if err := unix.Unlinkat(int(u.dirf.Fd()), *p, 0); err != nil && err != unix.ENOENT {
			errs = multierror.Append(errs, &os.PathError{Op: "remove", Path: filepath.Join(u.dir, *p), Err: err})
		}
		*p = ""
	}
	u.dirf.Close()
	u.dirf = nil
	return listErr(errs)
}

// StoreKey is the temp file's device: uploads on one file system copy
// from each other.
func (u *localUpload) StoreKey() (string, bool) {
	if u.file == nil {
		return "", false
	}
	dev, ok := fileDevice(u.file)
	return strconv.FormatUint(dev, 10), ok
}

// CopySource is a duplicate of the temp file's descriptor (dup(2)): a copy
// reads through it whatever becomes of this upload's descriptor or of the
// temp name.
func (u *localUpload) CopySource() (CopySource, error) {
	if u.file == nil {
		return nil, errors.New("no temp file")
	}
	f, err := dupFile(u.file)
	if err != nil {
		return nil, fmt.Errorf("duplicate the descriptor of %s to copy it: %w", u.file.Name(), err)
	}
	return f, nil
}

// copyChunk bounds each copy_file_range round, so cancellation is noticed
// between rounds.
const copyChunk = 64 << 20

// CopyFrom fills the temp file with the first size bytes of src with
// copy_file_range(2) at explicit offsets: a reflink or an in-kernel copy,
// and no shared file offset between the copies of one primary. Where the
// kernel refuses (or src is not a file), a pread/pwrite copy does the same.
func (u *localUpload) CopyFrom(ctx context.Context, src CopySource, size int64) error {
	sf, ok := src.(*os.File)
	if !ok {
		return copyAt(ctx, u.file, src, 0, size)
	}
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		roff, woff := off, off
		n, err := unix.CopyFileRange(int(sf.Fd()), &roff, int(u.file.Fd()), &woff, int(min(copyChunk, size-off)), 0)
		switch {
		case errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL):
			return copyAt(ctx, u.file, sf, off, size)
		case err != nil:
			return err
		case n == 0:
			return fmt.Errorf("source ended at %d of %d bytes", off, size)
		}
		off += int64(n)
	}
	return nil
}
