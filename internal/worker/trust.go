package worker

import (
	"bytes"
	"context"
	"errors"
	ageenc "filippo.io/age"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"golang.org/x/sys/unix"
)

// Trust. Everything in a destination can be written by the service user,
// checksums included, so a .sha256 only detects accidents. An archive is
// trusted only when its NAME.sig, made with the root-only host key
// (internal/hostkey) over its final name, SHA-256 and size, verifies
// against its actual content. Untrusted archives (unsigned: planted by the
// user, or written before signing existed; or with a wrong signature)
// never count towards retention, are never pruned (they are reported and
// left for the admin), and are restored only with --trust-unsigned.
// Archives written before signing are adopted with
// `backup-worker verify --adopt`, once the admin vouches for them.

// Signature states reported by list and verify.
const (
	signatureOK        = "ok"        // verifies against the content (or, unverified, against the .sha256)
	signatureMissing   = "missing"   // no NAME.sig
	signatureBad       = "bad"       // malformed, or does not match
	signatureNoKey     = "no key"    // the host key could not be loaded
	signatureUnchecked = "unchecked" // nothing to check it against (no .sha256, content not read)
)

// archiveCheck is what is known about one archive in a destination.
type archiveCheck struct {
	checksum  string // checksumOK, ...
	signature string // signatureOK, ...
	size      int64
	sum       []byte // the content's SHA-256, when hashed
	structure bool   // the archive was parsed in full (decrypted if encrypted)
	err       error  // why the checksum (or the structure) is not ok
	sigErr    error  // why the signature is bad
}

// trusted: the content was hashed, matches its .sha256 and is signed by
// this host's key.
func (c archiveCheck) trusted() bool {
	return c.sum != nil && c.checksum == checksumOK && c.signature == signatureOK
}

// reason explains an untrusted archive.
func (c archiveCheck) reason() error {
	switch {
	case c.err != nil:
		return c.err
	case c.sigErr != nil:
		return c.sigErr
	case c.signature == signatureMissing:
		return errors.New("unsigned: not written by this host's worker, or written before archives were signed (adopt it with `backup-worker verify --adopt`)")
	case c.checksum == checksumMissing:
		return errors.New("no .sha256 beside it")
	}
	return fmt.Errorf("checksum %s, signature %s", c.checksum, c.signature)
}

// inspectArchive checks the archive at path and its .sha256 and .sig. With
// hash, the archive is read (through the descriptor it was opened and
// checked with) and its SHA-256 compared; without, the signature is
// checked against the .sha256's claim only. Every file is opened as
// openRegular does. With f non-nil, the open archive is handed to it
// (for a structure check of the same file) when it was hashed.
func inspectArchive(ctx context.Context, key *hostkey.Key, path string, hash bool, f func(io.ReaderAt, int64) error) archiveCheck {
	af, err := openLocalArchive(path)
	if err != nil {
		return archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked, err: err}
	}
	defer af.Close()
	return inspectOpen(ctx, key, af, filepath.Base(path), hash, f)
}

// inspectStored is inspectArchive for the archive name in a Destination.
func inspectStored(ctx context.Context, key *hostkey.Key, d Destination, name string, hash bool, f func(io.ReaderAt, int64) error) archiveCheck {
	af, err := d.Open(ctx, name)
	if err != nil {
		return archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked, err: err}
	}
	defer af.Close()
	return inspectOpen(ctx, key, af, name, hash, f)
}

// inspectOpen is inspectArchive on the open archive af, named base.
func inspectOpen(ctx context.Context, key *hostkey.Key, af ArchiveReader, base string, hash bool, f func(io.ReaderAt, int64) error) archiveCheck {
	c := archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked}
	c.size = af.Size()
	claimed := c.readClaim(af, base)
	sum := claimed
	var err error
	if hash {
		if c.sum, err = hashAt(ctx, af, af.Name(), c.size); err != nil {
			c.checksum, c.err = checksumInvalid, err
			return c
		}
		sum = c.sum
		if claimed != nil {
			if bytes.Equal(c.sum, claimed) {
				c.checksum = checksumOK
			} else {
				c.checksum = checksumMismatch
				c.err = fmt.Errorf("SHA-256 mismatch: file has %x, %s.sha256 says %x", c.sum, base, claimed)
			}
		}
	}
	c.checkSignature(key, af, base, sum)
	if f != nil && hash && c.err == nil {
		c.err = f(af, c.size)
	}
	return c
}

// readClaim reads and parses the .sha256 beside af into c.checksum
// (missing, present) or c.err, and returns the SHA-256 it claims.
func (c *archiveCheck) readClaim(af ArchiveReader, base string) []byte {
	data, err := af.ReadSide(".sha256", maxSideFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c.checksum = checksumMissing
	case err != nil:
		c.err = err
	default:
		claimed, err := parseChecksum(data, af.Name()+".sha256", base)
		if err != nil {
			c.err = err
			return nil
		}
		c.checksum = checksumPresent
		return claimed
	}
	return nil
}

// inspectRemembered is inspectOpen for an archive whose content is known
// (memo.go) to have SHA-256 sum without reading it: ok only when its
// .sha256 claims exactly sum and its .sig verifies against sum, i.e. when
// the archive is trusted. A memo never makes an archive good that the
// .sha256 or .sig disagree with: the caller then checks it in full.
func inspectRemembered(key *hostkey.Key, af ArchiveReader, base string, sum []byte) (archiveCheck, bool) {
	c := archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked, size: af.Size()}
	claimed := c.readClaim(af, base)
	if c.err != nil || !bytes.Equal(claimed, sum) {
		return c, false
	}
	c.checksum, c.sum = checksumOK, sum
	c.checkSignature(key, af, base, sum)
	return c, c.trusted()
}

func (c *archiveCheck) checkSignature(key *hostkey.Key, af ArchiveReader, base string, sum []byte) {
	data, err := af.ReadSide(".sig", hostkey.MaxSigFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c.signature = signatureMissing
		return
	case err != nil:
		c.signature = signatureBad
	case key == nil:
		c.signature = signatureNoKey
		return
	case sum == nil:
		return
	default:
		err = key.VerifyFile(data, base, sum, c.size)
		if err == nil {
			c.signature = signatureOK
			return
		}
		c.signature = signatureBad
	}
	c.sigErr = fmt.Errorf("%s.sig: %w", base, err)
}

// checkTrust reports why archive name in dir is not trusted (nil: it is):
// its content must match its .sha256 and its signature must verify with
// key. It reads the whole archive.
func checkTrust(ctx context.Context, key *hostkey.Key, dir, name string) error {
	c := inspectArchive(ctx, key, filepath.Join(dir, name), true, nil)
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if c.trusted() {
		return nil
	}
	return fmt.Errorf("%s is not trusted: %w", filepath.Join(dir, name), c.reason())
}

// loadSigningKey loads the config's host key; create makes it on first use
// (the run does; list and verify only read it).
func loadSigningKey(cfg *config.Config, create bool) (*hostkey.Key, error) {
	return hostkey.Load(cfg.Backup.SigningKeyOrDefault(), create)
}

// adoptArchive signs an existing archive after the admin vouched for it
// (verify --adopt): its content must match its .sha256 (when present) and
// parse in full; an existing valid signature is left alone, a bad one is
// replaced.
//
// An encrypted archive is adopted only when it was decrypted with ids and
// parsed: a signature vouches for its content.
func adoptArchive(ctx context.Context, key *hostkey.Key, path, format string, own owner, ids []ageenc.Identity) (string, error) {
	if isEncryptedName(path) && ids == nil {
		return "", errors.New("not adopted: an encrypted archive is adopted only once decrypted and parsed: give --identity FILE")
	}
	c := verifyArchiveKey(ctx, key, path, format, ids)
	if c.trusted() {
		return "already signed", nil
	}
	if c.err != nil {
		return "", fmt.Errorf("not adopted: %w", c.reason())
	}
	dirf, err := openDir(filepath.Dir(path))
	if err != nil {
		return "", err
	}
	defer dirf.Close()
	base := filepath.Base(path)
	tmp, f, err := writeSideTemp(dirf, "."+base+".sig.tmp-"+randomSuffix(), key.SignatureFile(base, c.sum, c.size))
	if err != nil {
		return "", err
	}
	defer func() {
		f.Close()
		unix.Unlinkat(int(dirf.Fd()), tmp, 0)
	}()
	if err := setOwnerMode(f, own, 0o640); err != nil {
		return "", err
	}
	if c.signature == signatureBad {
		// Only a regular file is removed (never a directory through a
		// symlink): unlinkat removes the name itself.
		if err := unix.Unlinkat(int(dirf.Fd()), base+".sig", 0); err != nil && err != unix.ENOENT {
			return "", fmt.Errorf("remove the bad signature: %w", err)
		}
	}
	if err := linkFile(dirf, f, tmp, base+".sig"); err != nil {
		return "", err
	}
	return "adopted (signed)", syncDirFile(dirf)
}
