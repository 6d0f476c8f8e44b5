package worker

import (
	"context"
	"io"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// Destination is a place that keeps one service's archives: everything the
// run, list, verify, prune and restore need from it. The local directory
// (localDir, dest_local.go) is the first implementation; the contract every
// implementation must meet is testDestinationContract
// (destination_contract_test.go).
//
// The interface asks for what an object store (no rename: an object
// appears when its multipart upload completes, the checksum and signature
// are objects beside it) and an SFTP server (temp name, fsync@openssh,
// posix-rename without overwrite) can both give:
//   - an archive being written (Upload) is invisible under its final name
//     until Commit, and Abort leaves nothing behind;
//   - Commit never replaces an existing archive;
//   - only names of the service's own pattern are listed, opened, removed
//     or cleaned up; anything else in the destination is left alone, and
//     anything under our names that is not a plain file (a FIFO, a
//     symlink planted by whoever else writes there) is refused.
type Destination interface {
	// String names the destination in logs and messages.
	String() string
	// Prepare checks, before anything is stopped, that the destination is
	// there and writable. skip: it is optional and absent (not a failure).
	Prepare(ctx context.Context) (skip bool, err error)
	// FreeSpace returns the room left, and a key shared by the
	// destinations that draw on the same room ("" when none is shared).
	FreeSpace(ctx context.Context) (avail uint64, shared string, err error)
	// Create starts the uncommitted archive that Commit will name base
	// (NAME-TS.EXT).
	Create(ctx context.Context, base string) (Upload, error)
	// List returns the service's committed archives in every format,
	// newest first.
	List(ctx context.Context) ([]StoredArchive, error)
	// Open opens the committed archive name for reading.
	Open(ctx context.Context, name string) (ArchiveReader, error)
	// Remove removes the committed archive name with its .sha256 and .sig.
	Remove(ctx context.Context, name string) error
	// CleanStale removes what a killed run of the service left
	// uncommitted. The caller holds the service lock, so nothing of a run
	// in progress is touched.
	CleanStale(ctx context.Context) error
}

// listFormat lists the service's archives in store whose extension is
// ext, encrypted (ext.age) or not, newest first: turning encryption on or
// off leaves one series of archives for retention.
func listFormat(ctx context.Context, store Destination, ext string) ([]retention.Archive, error) {
	stored, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []retention.Archive
	for _, a := range stored {
		if config.ArchiveExt(a.Format) == ext {
			out = append(out, a.Archive)
		}
	}
	return out, nil
}

// StoredArchive is a committed archive as List reports it.
type StoredArchive struct {
	retention.Archive
	// Format is the archive format (of the plaintext when Encrypted).
	Format string
	// Encrypted: the name ends in .age (config.EncryptedSuffix).
	Encrypted bool
}

// ArchiveReader reads a committed archive at explicit offsets (the archive
// readers and the hash need no shared file offset).
type ArchiveReader interface {
	io.ReaderAt
	io.Closer
	Size() int64
	// Name names the archive in messages.
	Name() string
	// ReadSide reads the file beside the archive with suffix ext
	// (".sha256", ".sig"), at most limit bytes; os.ErrNotExist when there
	// is none.
	ReadSide(ext string, limit int64) ([]byte, error)
}

// Upload is one uncommitted archive. The run writes the stream to Writer,
// then calls Stored, Seal and Commit in this order; Abort may come at any
// point, and more than once.
type Upload interface {
	// Writer receives the archive stream.
	Writer() io.Writer
	// Stored makes what was written durable and returns it for
	// verification: the bytes as the destination holds them, and their
	// number. A store that cannot read them back before Commit (an S3
	// multipart upload) returns a nil reader and implements remoteUpload
	// (dest_s3_upload.go): its Commit does the check on what it holds.
	Stored(ctx context.Context) (io.ReaderAt, int64, error)
	// Seal stores the checksum file (sha256sum format) and the signature
	// beside the archive, still uncommitted.
	Seal(ctx context.Context, checksum, signature []byte) error
	// Commit publishes the archive, then its .sha256, then its .sig under
	// their final names, each atomically and never over an existing name.
	Commit(ctx context.Context) error
	// Abort removes whatever is still uncommitted.
	Abort() error
}

// Copier is an optional capability of an Upload: it can be filled from
// another upload in the same store without the bytes passing through the
// worker (the local directory: copy_file_range(2), a reflink on XFS or
// btrfs). The run checks for it with a type assertion; a store without it
// gets the stream instead.
type Copier interface {
	// StoreKey identifies the store; uploads with equal keys can copy
	// from each other. ok is false when it is unknown.
	StoreKey() (key string, ok bool)
	// CopySource returns an independent handle on the bytes written so
	// far, valid after this upload commits or aborts.
	CopySource() (CopySource, error)
	// CopyFrom fills the upload with the first size bytes of src.
	CopyFrom(ctx context.Context, src CopySource, size int64) error
}

// CopySource is what Copier.CopySource returns.
type CopySource interface {
	io.ReaderAt
	io.Closer
}
