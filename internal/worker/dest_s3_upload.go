package worker

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
)

// Part sizes: S3 takes at most 10,000 parts of at least 5 MiB (but the
// last). Parts start at 8 MiB and double every 1,000 parts (8 GiB, then
// 16 GiB more, ...), so memory stays small for small archives and the
// limit is never reached (about 8 TiB before the 10,000th part).
const (
	s3FirstPart = 8 << 20
	s3GrowEvery = 1000
	s3MaxParts  = 10000
	s3InFlight  = 1 // parts queued behind the one being sent
	s3SideLimit = 64 << 10
)

// s3Part is one part as sent: its number, size and digests.
type s3Part struct {
	num  int
	data []byte
	md5  []byte
}

// s3Upload is one archive being written to an s3Store (see the protocol
// on s3Store). A goroutine sends the parts while the next one fills.
type s3Upload struct {
	s        *s3Store
	base     string
	uploadID string
	ctx      context.Context
	cancel   context.CancelFunc

	buf  []byte
	next int // next part number
	sha  hash.Hash
	size int64

	queue chan s3Part
	done  chan struct{}
	mu    sync.Mutex
	err   error // first error of the sender
	sent  []minio.CompletePart
	md5s  [][]byte

	stored         bool
	sum, sig       []byte
	sealed         bool
	completed      bool // the final object exists (Commit got that far)
	finished       bool // committed or aborted: nothing left to do
	readBackVerify func(r io.ReaderAt, size int64) error
}

// remoteUpload is an Upload whose bytes cannot be re-read before Commit
// (Stored returns a nil reader): the run takes the SHA-256 the upload
// computed of the bytes it sent, which the server confirmed part by part,
// and hands the full check of what the server holds (hash and, if nobody
// parsed the stream, the parse) to Commit through ReadBackCheck.
type remoteUpload interface {
	SentSum() []byte
	ReadBackCheck(fn func(r io.ReaderAt, size int64) error)
}

var _ remoteUpload = (*s3Upload)(nil)

// Create starts a multipart upload to the final key (invisible until it
// completes) and the goroutine that sends its parts.
func (s *s3Store) Create(ctx context.Context, base string) (Upload, error) {
	if !s.ownName(base) {
		return nil, fmt.Errorf("%s: not an archive name of %s", base, s.name)
	}
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, s.key(base), minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return nil, fmt.Errorf("%s: start upload: %w", s, err)
	}
	uctx, cancel := context.WithCancel(ctx)
	u := &s3Upload{s: s, base: base, uploadID: id, ctx: uctx, cancel: cancel, next: 1, sha: sha256.New(),
		queue: make(chan s3Part, s3InFlight), done: make(chan struct{})}
	go u.sender()
	return u, nil
}

func (u *s3Upload) Writer() io.Writer { return u }

// partSize is the size of part n.
func partSize(n int) int {
	return s3FirstPart << min((n-1)/s3GrowEvery, 10)
}

// Write fills the current part and hands full parts to the sender. It
// fails once the sender failed, so the run's fan-out drops this
// destination alone.
func (u *s3Upload) Write(p []byte) (int, error) {
	if err := u.sendErr(); err != nil {
		return 0, err
	}
	if u.stored {
		return 0, errors.New("write after Stored")
	}
	written := 0
	for len(p) > 0 {
		if u.buf == nil {
			u.buf = make([]byte, 0, partSize(u.next))
		}
		n := min(len(p), cap(u.buf)-len(u.buf))
		u.buf = append(u.buf, p[:n]...)
		u.size += int64(n)
		p, written = p[n:], written+n
		if len(u.buf) == cap(u.buf) {
			if err := u.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush queues the current part (also an empty one when it is the only
// part: an empty archive is one empty part). Its digests are the sender's
// job: the stream's writer (the fan-out, waiting for every destination)
// only copies.
func (u *s3Upload) flush() error {
	if u.next > s3MaxParts {
		return fmt.Errorf("%s: archive too large for %d parts", u.s, s3MaxParts)
	}
	part := s3Part{num: u.next, data: u.buf}
	u.buf = nil
	u.next++
	select {
	case u.queue <- part:
		return nil
	case <-u.done:
		return u.sendErr()
	}
}

func (u *s3Upload) sendErr() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// sender sends the queued parts in order, each with its Content-MD5 (the
// server checks it), and checks the ETag it returns.
func (u *s3Upload) sender() {
	defer close(u.done)
	for part := range u.queue {
		if err := u.sendPart(part); err != nil {
			u.mu.Lock()
			u.err = err
			u.mu.Unlock()
			u.cancel()
			for range u.queue { // release a blocked flush
			}
			return
		}
	}
}

func (u *s3Upload) sendPart(part s3Part) error {
	// The parts come in order: u.sha is the SHA-256 of the bytes sent.
	u.sha.Write(part.data)
	m := md5.Sum(part.data)
	part.md5 = m[:]
	p, err := u.s.core.PutObjectPart(u.ctx, u.s.bucket, u.s.key(u.base), u.uploadID, part.num,
		bytes.NewReader(part.data), int64(len(part.data)), u.partOptions(part))
	if err != nil {
		return fmt.Errorf("%s: upload part %d: %w", u.s, part.num, err)
	}
	if etag := strings.Trim(p.ETag, `"`); isMD5Hex(etag) && !strings.EqualFold(etag, hex.EncodeToString(part.md5)) {
		return fmt.Errorf("%s: part %d: the server reports ETag %s, the part sent had MD5 %x", u.s, part.num, etag, part.md5)
	}
	u.mu.Lock()
	u.sent = append(u.sent, minio.CompletePart{PartNumber: part.num, ETag: p.ETag})
	u.md5s = append(u.md5s, part.md5)
	u.mu.Unlock()
	return nil
}

// partOptions: every part carries its Content-MD5, which the request
// signature covers and the server checks against the body (its ETag,
// checked by sendPart, is that MD5). Over https the payload is sent as
// UNSIGNED-PAYLOAD, as minio-go's own multipart uploads do over https
// (MD5 only): TLS protects the body in transit, so a SHA-256 pass over
// every part, here and on the server, buys nothing (bench -targets
// offsite; the read-back still checks the whole object's SHA-256). Over
// plain http the part's SHA-256 goes in X-Amz-Content-Sha256: signed, it
// keeps a body swapped in transit from passing, which an MD5 alone does
// not promise. DisableContentSha256 keeps minio-go on http from signing
// the body in 64 KiB chunks (aws-chunked), a second SHA-256 pass and a
// framing the server must undo.
func (u *s3Upload) partOptions(part s3Part) minio.PutObjectPartOptions {
	o := minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(part.md5), DisableContentSha256: true}
	if !u.s.tls {
		sha := sha256.Sum256(part.data)
		o.Sha256Hex = hex.EncodeToString(sha[:])
	}
	return o
}

// isMD5Hex: an ETag that is a plain MD5 (servers with SSE-KMS or SSE-C
// return something else, then only the size and the read-back check).
func isMD5Hex(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Stored sends the last part, waits for every part, and confirms them
// against the parts the server lists (number, size, ETag). The bytes
// cannot be read before the upload completes: the reader is nil (see
// remoteUpload).
func (u *s3Upload) Stored(ctx context.Context) (io.ReaderAt, int64, error) {
	if !u.stored {
		u.stored = true
		if u.sendErr() == nil && (len(u.buf) > 0 || u.next == 1) {
			u.flush()
		}
		close(u.queue)
	}
	<-u.done
	if err := u.sendErr(); err != nil {
		return nil, 0, err
	}
	if err := u.confirmParts(ctx); err != nil {
		return nil, 0, err
	}
	return nil, u.size, nil
}

// confirmParts compares the server's list of parts with what was sent.
func (u *s3Upload) confirmParts(ctx context.Context) error {
	marker := 0
	i := 0
	for {
		res, err := u.s.core.ListObjectParts(ctx, u.s.bucket, u.s.key(u.base), u.uploadID, marker, 1000)
		if err != nil {
			return fmt.Errorf("%s: list parts: %w", u.s, err)
		}
		for _, p := range res.ObjectParts {
			if i >= len(u.sent) || p.PartNumber != u.sent[i].PartNumber ||
				!strings.EqualFold(strings.Trim(p.ETag, `"`), strings.Trim(u.sent[i].ETag, `"`)) {
				return fmt.Errorf("%s: the server lists part %d (ETag %s), which was not sent so", u.s, p.PartNumber, p.ETag)
			}
			i++
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	if i != len(u.sent) {
		return fmt.Errorf("%s: the server lists %d parts, %d were sent", u.s, i, len(u.sent))
	}
	return nil
}

// SentSum is the SHA-256 of the bytes sent (after Stored: the sender
// computes it).
func (u *s3Upload) SentSum() []byte { return u.sha.Sum(nil) }

// ReadBackCheck sets the check Commit runs on the completed object when
// verifyReadBack is on.
func (u *s3Upload) ReadBackCheck(fn func(r io.ReaderAt, size int64) error) { u.readBackVerify = fn }

// Seal keeps the checksum and signature for Commit: objects under our
// names must not appear before the archive does.
func (u *s3Upload) Seal(ctx context.Context, checksum, signature []byte) error {
	if len(checksum) > s3SideLimit || len(signature) > s3SideLimit {
		return errors.New("checksum or signature too large")
	}
	u.sum, u.sig, u.sealed = bytes.Clone(checksum), bytes.Clone(signature), true
	return nil
}

// multipartETag is the ETag S3 gives a completed multipart object:
// MD5(MD5(part1)‖…‖MD5(partN))-N.
func (u *s3Upload) multipartETag() string {
	h := md5.New()
	for _, m := range u.md5s {
		h.Write(m)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(u.md5s))
}

// Commit completes the upload and checks it (see s3Store), then puts
// .sha256 and .sig. After the upload completed, any failure removes what
// Commit published: the run reports the destination failed, so nothing
// of it may look committed.
func (u *s3Upload) Commit(ctx context.Context) error {
	if !u.sealed {
		return errors.New("commit: not sealed")
	}
	if !u.stored {
		return errors.New("commit: not stored")
	}
	key := u.s.key(u.base)
	switch _, err := u.s.core.StatObject(ctx, u.s.bucket, key, minio.StatObjectOptions{}); {
	case err == nil:
		return fmt.Errorf("commit: %s/%s exists", u.s, u.base)
	case !errors.Is(notExist(err), os.ErrNotExist):
		return fmt.Errorf("commit: %s/%s: %w", u.s, u.base, err)
	}
	opts := minio.PutObjectOptions{}
	opts.SetMatchETagExcept("") // If-None-Match: *
	if _, err := u.s.core.CompleteMultipartUpload(ctx, u.s.bucket, key, u.uploadID, u.sent, opts); err != nil {
		return fmt.Errorf("commit: complete upload: %w", err)
	}
	u.completed = true
	if err := u.confirmObject(ctx); err != nil {
		return fmt.Errorf("commit: %w; %s", err, u.unpublish(ctx))
	}
	for _, side := range []struct {
		ext  string
		data []byte
	}{{".sha256", u.sum}, {".sig", u.sig}} {
		o := minio.PutObjectOptions{ContentType: "text/plain", DisableMultipart: true}
		o.SetMatchETagExcept("")
		if _, err := u.s.core.PutObject(ctx, u.s.bucket, key+side.ext, bytes.NewReader(side.data), int64(len(side.data)), "", "", o); err != nil {
			return fmt.Errorf("commit %s%s: %w; %s", u.base, side.ext, err, u.unpublish(ctx))
		}
	}
	u.finished = true
	return nil
}

// confirmObject checks the completed object: the size and the multipart
// ETag the server reports, and with verifyReadBack a full read-back.
func (u *s3Upload) confirmObject(ctx context.Context) error {
	o, err := u.s.openKey(ctx, u.base)
	if err != nil {
		return err
	}
	defer o.Close()
	if o.size != u.size {
		return fmt.Errorf("the server holds %d bytes, %d were sent", o.size, u.size)
	}
	if etag := strings.Trim(o.etag, `"`); strings.Contains(etag, "-") && !strings.EqualFold(etag, u.multipartETag()) {
		return fmt.Errorf("the server reports ETag %s, the parts sent make %s", etag, u.multipartETag())
	}
	if !u.s.readBack {
		return nil
	}
	if u.readBackVerify != nil {
		return u.readBackVerify(o, o.size)
	}
	sum, err := hashAt(ctx, o, o.Name(), o.size)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if !bytes.Equal(sum, u.SentSum()) {
		return fmt.Errorf("read back: SHA-256 %x, the bytes sent had %x", sum, u.SentSum())
	}
	return nil
}

// unpublish removes the archive (and any side object) this upload
// published; it says what it did, for the error.
func (u *s3Upload) unpublish(ctx context.Context) string {
	ctx = context.WithoutCancel(ctx)
	u.finished = true
	if err := u.s.Remove(ctx, u.base); err != nil {
		return "and it could not be removed: " + err.Error()
	}
	return "it was removed"
}

// Abort stops the sender and aborts the multipart upload (nothing to do
// once committed or already aborted).
func (u *s3Upload) Abort() error {
	if u.finished {
		return nil
	}
	u.finished = true
	u.cancel()
	if !u.stored {
		u.stored = true
		close(u.queue)
	}
	<-u.done
	if u.completed {
		return nil // Commit removed what it published
	}
	ctx, cancel := context.WithTimeout(context.Background(), s3PrepareTimeout)
	defer cancel()
	if err := u.s.core.AbortMultipartUpload(ctx, u.s.bucket, u.s.key(u.base), u.uploadID); err != nil && !noSuchUpload(err) {
		return fmt.Errorf("%s: abort upload of %s: %w", u.s, u.base, err)
	}
	return nil
}
