package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/minio/minio-go/v7"
)

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
