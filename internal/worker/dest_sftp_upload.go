package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"

	"github.com/hashicorp/go-multierror"
	"github.com/pkg/sftp"
)

// sftpUpload is an uncommitted archive on an SFTP server: the temp file
// tmp (and, once sealed, sumTmp and sigTmp), written through file. The
// stream is hashed as it is written (hash, n), so the commit can be
// confirmed without a read-back when verifyReadBack is off.
type sftpUpload struct {
	d                   *sftpDest
	c                   *sftp.Client
	base                string
	tmp, sumTmp, sigTmp string // full remote paths; "" when absent
	sumLen, sigLen      int64
	file                *sftp.File
	buf                 *bufio.Writer
	hash                hash.Hash
	n                   int64
	stored              bool
}

// sftpWriter writes to the temp file and the hash (behind a 1 MiB buffer,
// so every SFTP write is large and pipelined).
type sftpWriter struct{ u *sftpUpload }

func (w sftpWriter) Write(p []byte) (int, error) {
	n, err := w.u.file.Write(p)
	w.u.hash.Write(p[:n])
	w.u.n += int64(n)
	return n, err
}

func (u *sftpUpload) Writer() io.Writer { return u.buf }

// Stored flushes, fsyncs (fsync@openssh.com) and checks that the server
// holds as many bytes as were written. With verifyReadBack the file
// itself is returned, so the run hashes and parses it as the server holds
// it; without, StreamSum stands for the hash and nothing is read back.
func (u *sftpUpload) Stored(ctx context.Context) (io.ReaderAt, int64, error) {
	if err := u.buf.Flush(); err != nil {
		return nil, 0, fmt.Errorf("%s: upload: %w", u.d.url, err)
	}
	if err := u.file.Sync(); err != nil {
		return nil, 0, fmt.Errorf("%s: fsync@openssh.com: %w", u.d.url, err)
	}
	fi, err := u.file.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: stat: %w", u.d.url, err)
	}
	if fi.Size() != u.n {
		return nil, 0, fmt.Errorf("%s: the server holds %d bytes of the %d written", u.d.url, fi.Size(), u.n)
	}
	u.stored = true
	if !u.d.readBack {
		return errReaderAt{errors.New("verifyReadBack is off: nothing is read back")}, u.n, nil
	}
	return u.file, u.n, nil
}

// StreamSum is the SHA-256 of the stream as written, when the archive is
// not read back (nil otherwise, or before Stored).
func (u *sftpUpload) StreamSum() []byte {
	if u.d.readBack || !u.stored {
		return nil
	}
	return u.hash.Sum(nil)
}

// errReaderAt fails every read.
type errReaderAt struct{ err error }

func (r errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, r.err }

// Seal writes the checksum and the signature to private temp files beside
// the archive, fsynced.
func (u *sftpUpload) Seal(ctx context.Context, checksum, signature []byte) error {
	var err error
	if u.sumTmp, err = u.writeSide(".sha256", checksum); err != nil {
		return fmt.Errorf("%s: write checksum: %w", u.d.url, err)
	}
	u.sumLen = int64(len(checksum))
	if u.sigTmp, err = u.writeSide(".sig", signature); err != nil {
		return fmt.Errorf("%s: write signature: %w", u.d.url, err)
	}
	u.sigLen = int64(len(signature))
	return nil
}

// writeSide writes data to .BASE<ext>.tmp-RANDOM and returns that path
// ("" when nothing is left behind).
func (u *sftpUpload) writeSide(ext string, data []byte) (string, error) {
	p := path.Join(u.d.dir, "."+u.base+ext+".tmp-"+randomSuffix())
	f, err := createPrivate(u.c, p)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		u.c.Remove(p)
		return "", err
	}
	return p, nil
}

// Commit links the archive, then the checksum, then the signature to
// their final names, never over an existing name, removes each temp name
// and confirms each final name by the size the server reports.
func (u *sftpUpload) Commit(ctx context.Context) error {
	if u.sumTmp == "" || u.sigTmp == "" {
		return errors.New("commit: not sealed")
	}
	if u.file != nil {
		u.file.Close()
		u.file = nil
	}
	for _, c := range []struct {
		tmp   *string
		final string
		size  int64
	}{{&u.tmp, u.base, u.n}, {&u.sumTmp, u.base + ".sha256", u.sumLen}, {&u.sigTmp, u.base + ".sig", u.sigLen}} {
		final := path.Join(u.d.dir, c.final)
		if err := u.d.commitName(u.c, *c.tmp, final); err != nil {
			return fmt.Errorf("%s: commit %s: %w", u.d.url, c.final, err)
		}
		*c.tmp = ""
		fi, err := regular(u.c, final)
		if err == nil && fi.Size() != c.size {
			err = fmt.Errorf("the server reports %d bytes, %d were written", fi.Size(), c.size)
		}
		if err != nil {
			return fmt.Errorf("%s: confirm %s: %w", u.d.url, c.final, err)
		}
	}
	return nil
}

// commitName gives tmp the name final without replacing an existing
// final (see sftpDest), then removes tmp.
func (d *sftpDest) commitName(c *sftp.Client, tmp, final string) error {
	if _, ok := c.HasExtension("hardlink@openssh.com"); ok {
		if err := c.Link(tmp, final); err != nil {
			return err
		}
		if err := c.Remove(tmp); err != nil {
			d.log.Warn("cannot remove the temp name after commit", keyDestination, d.url, "temp", tmp, "error", err)
		}
		return nil
	}
	// Residual race: another client of the same account creating final
	// between Lstat and Rename; SSH_FXP_RENAME then fails on OpenSSH and
	// on servers that follow the draft, and may replace it on others.
	if _, err := c.Lstat(final); err == nil {
		return fmt.Errorf("%s: %w", final, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return c.Rename(tmp, final)
}

// Abort closes the temp file and removes whatever temp names are left.
func (u *sftpUpload) Abort() error {
	if u.file != nil {
		u.file.Close()
		u.file = nil
	}
	var errs *multierror.Error
	for _, p := range []*string{&u.tmp, &u.sumTmp, &u.sigTmp} {
		if *p == "" {
			continue
		}
		if err := u.c.Remove(*p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = multierror.Append(errs, fmt.Errorf("%s: remove %s: %w", u.d.url, *p, err))
		}
		*p = ""
	}
	return listErr(errs)
}
