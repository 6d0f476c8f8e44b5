package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	ageenc "filippo.io/age"
	"github.com/minio/minio-go/v7"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/hostkey"
)

// storedTargets are archives verify reads through their Destination (a
// remote store: no path to open).
type storedTargets struct {
	store    Destination
	archives []StoredArchive
}

// verifyStored is verifyOne for an archive read through its Destination
// (a remote store): the checksum, the full parse (of the plaintext, when
// encrypted and ids are given) and the signature. With adopt, an archive
// that verifies but is unsigned or badly signed gets a new .sig, written
// beside it in the store (sigAdopter).
func (c *cli) verifyStored(ctx context.Context, key *hostkey.Key, store Destination, a StoredArchive, adopt bool, ids []ageenc.Identity) error {
	label := joinDest(store.String(), a.Name)
	if adopt && a.Encrypted && ids == nil {
		err := errors.New("not adopted: an encrypted archive is adopted only once decrypted and parsed: give --identity FILE")
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", label, err)
		return err
	}
	parsed := !a.Encrypted || ids != nil
	ck := inspectStored(ctx, key, store, a.Name, true, func(f io.ReaderAt, size int64) error {
		if !a.Encrypted {
			_, err := archive.VerifyAt(ctx, f, size, a.Format)
			return err
		}
		if ids != nil {
			return verifyEncrypted(ctx, f, size, a.Format, ids)
		}
		return nil
	})
	switch {
	case ck.err != nil:
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", label, ck.err)
		return ck.err
	case adopt && !ck.trusted():
		return c.adoptStored(ctx, key, store, a.Name, label, ck)
	case ck.signature != signatureOK:
		fmt.Fprintf(c.stdout, "UNTRUSTED %s: %v\n", label, ck.reason())
		return fmt.Errorf("%s: %w", label, ck.reason())
	}
	note := ""
	switch {
	case adopt:
		note = " (already signed)"
	case ck.checksum == checksumMissing:
		note = " (no .sha256; structure verified only)"
	case a.Encrypted && !parsed:
		note = " (encrypted: checksum and signature verified; give --identity FILE to decrypt and parse it)"
	case a.Encrypted:
		note = " (decrypted and parsed)"
	}
	fmt.Fprintf(c.stdout, "OK %s%s\n", label, note)
	return nil
}

// adoptStored signs a remote archive that verified (ck): the admin
// vouches for it with verify --adopt.
func (c *cli) adoptStored(ctx context.Context, key *hostkey.Key, store Destination, name, label string, ck archiveCheck) error {
	ad, ok := store.(sigAdopter)
	var err error
	switch {
	case ck.sum == nil:
		err = errors.New("not adopted: the archive was not read")
	case !ok:
		err = fmt.Errorf("not adopted: %s cannot store a signature", store)
	default:
		err = ad.AdoptSignature(ctx, name, key.SignatureFile(name, ck.sum, ck.size), ck.signature == signatureBad)
	}
	if err != nil {
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", label, err)
		return err
	}
	fmt.Fprintf(c.stdout, "OK %s (adopted (signed))\n", label)
	return nil
}

// sigAdopter is the capability verify --adopt needs of a remote store:
// store NAME.sig beside a committed archive. replaceBad: a .sig exists
// and is bad (it is replaced); otherwise an existing .sig is never
// overwritten.
type sigAdopter interface {
	AdoptSignature(ctx context.Context, name string, sig []byte, replaceBad bool) error
}

// AdoptSignature puts NAME.sig as one object (If-None-Match: * unless
// replacing a bad one).
func (s *s3Store) AdoptSignature(ctx context.Context, name string, sig []byte, replaceBad bool) error {
	if !s.ownName(name) {
		return fmt.Errorf("%s: not an archive name of %s", name, s.name)
	}
	o := minio.PutObjectOptions{ContentType: "text/plain", DisableMultipart: true}
	if !replaceBad {
		o.SetMatchETagExcept("")
	}
	if _, err := s.core.PutObject(ctx, s.bucket, s.key(name+".sig"), bytes.NewReader(sig), int64(len(sig)), "", "", o); err != nil {
		return fmt.Errorf("%s/%s.sig: %w", s, name, err)
	}
	return nil
}

// AdoptSignature writes NAME.sig to a private temp name, fsyncs it and
// commits it without overwriting (a bad .sig, a regular file, is removed
// first).
func (d *sftpDest) AdoptSignature(ctx context.Context, name string, sig []byte, replaceBad bool) error {
	if !d.ownName(name) {
		return d.notOurs(name)
	}
	c, err := d.sftpClient(ctx)
	if err != nil {
		return err
	}
	tmp := path.Join(d.dir, "."+name+".sig.tmp-"+randomSuffix())
	f, err := createPrivate(c, tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(sig)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	final := path.Join(d.dir, name+".sig")
	if err == nil && replaceBad {
		if _, rerr := regular(c, final); rerr == nil {
			err = c.Remove(final)
		} else if !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err == nil {
		err = d.commitName(c, tmp, final)
	}
	if err != nil {
		c.Remove(tmp)
		return fmt.Errorf("%s: %s.sig: %w", d.url, name, err)
	}
	return nil
}
