package worker

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/backupgen/backupgen/internal/archive"
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
	md5  []byte // Content-MD5 mode only
	crc  string // CRC64NVME of data, base64 (both modes)
}

// Per-part checksums. By default every part carries its CRC64NVME
// (x-amz-checksum-crc64nvme, declared with x-amz-checksum-algorithm and
// x-amz-checksum-type FULL_OBJECT when the upload starts), which the
// server checks against the body and echoes; CompleteMultipartUpload
// carries the whole object's CRC64NVME, combined from the parts', which
// the server checks too and reports afterwards. A server that refuses the
// checksum headers (400/501 when the upload starts or on the first part)
// or ignores them (no checksum echoed for the first part) gets Content-MD5
// parts instead, the check every S3 server makes, with the ETag checks
// that go with it: the upload is aborted and started again without the
// headers, the first part (still in memory) sent again, and the store
// remembers it for its later uploads. CRC64NVME costs the worker
// almost nothing (about 30 GB/s here) where MD5 costs about 0.4 GB/s, one
// core's second for every 400 MB sent (bench -targets offsite).
const (
	hdrChecksumAlgo = "x-amz-checksum-algorithm"
	hdrChecksumType = "x-amz-checksum-type"
	hdrChecksumCRC  = "x-amz-checksum-crc64nvme"
)

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
	size int64
	// crc: the parts carry their CRC64NVME (the sender's to change: a
	// server that refuses it gets Content-MD5). streamCRC is the CRC64NVME
	// of every byte written, parts the parts as sent (number, size,
	// CRC64NVME): SentIntact proves the one is the other.
	crc       bool
	streamCRC hash.Hash64
	parts     []minio.ObjectPart

	queue chan s3Part
	done  chan struct{}
	mu    sync.Mutex
	err   error // first error of the sender
	sent  []minio.CompletePart
	md5s  [][]byte

	stored       bool
	sum, sig     []byte
	sealed       bool
	completed    bool            // the final object exists (Commit got that far)
	finished     bool            // committed or aborted: nothing left to do
	readBackWant *archive.Digest // the stream's digest (ReadBackAgainst), nil: the bytes written
}

// remoteUpload is an Upload whose bytes cannot be re-read before Commit
// (Stored returns a nil reader). SentIntact proves that the bytes it sent,
// which the server confirmed part by part, are exactly the bytes written
// to it (the stream, which the run hashed and parsed): then the stream's
// SHA-256 is the copy's. The full check of what the server holds, with
// verifyReadBack, is Commit's: ReadBackAgainst gives it the stream's
// digest to compare the object read back with.
type remoteUpload interface {
	SentIntact() error
	ReadBackAgainst(stream archive.Digest)
}

var _ remoteUpload = (*s3Upload)(nil)

// Create starts a multipart upload to the final key (invisible until it
// completes) and the goroutine that sends its parts.
func (s *s3Store) Create(ctx context.Context, base string) (Upload, error) {
	if !s.ownName(base) {
		return nil, fmt.Errorf("%s: not an archive name of %s", base, s.name)
	}
	crc := !s.md5Parts.Load()
	id, err := s.newUpload(ctx, base, crc)
	if err != nil && crc && refusesChecksum(err) {
		s.useMD5(err)
		crc = false
		id, err = s.newUpload(ctx, base, false)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: start upload: %w", s, err)
	}
	uctx, cancel := context.WithCancel(ctx)
	u := &s3Upload{s: s, base: base, uploadID: id, ctx: uctx, cancel: cancel, next: 1, crc: crc,
		streamCRC: minio.ChecksumCRC64NVME.Hasher().(hash.Hash64),
		queue:     make(chan s3Part, s3InFlight), done: make(chan struct{})}
	go u.sender()
	return u, nil
}

// newUpload starts a multipart upload of base, declaring CRC64NVME
// full-object checksums if crc.
func (s *s3Store) newUpload(ctx context.Context, base string, crc bool) (string, error) {
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if crc {
		opts.UserMetadata = map[string]string{hdrChecksumAlgo: "CRC64NVME", hdrChecksumType: "FULL_OBJECT"}
	}
	return s.core.NewMultipartUpload(ctx, s.bucket, s.key(base), opts)
}

// refusesChecksum: err is the server refusing a request for its
// checksum headers (a server without them: 501, or 400 InvalidArgument,
// InvalidRequest or NotImplemented), not the server finding that a body
// does not match its checksum (BadDigest and the like), which fails the
// upload as before.
func refusesChecksum(err error) bool {
	r := minio.ToErrorResponse(err)
	switch {
	case r.StatusCode == http.StatusNotImplemented:
		return true
	case r.StatusCode == http.StatusBadRequest:
		switch r.Code {
		case "InvalidArgument", "InvalidRequest", "NotImplemented":
			return true
		}
	}
	return false
}

// useMD5 makes the store send Content-MD5 parts from now on.
func (s *s3Store) useMD5(why error) {
	if !s.md5Parts.Swap(true) {
		s.log.Warn("the S3 server does not check CRC64NVME part checksums; sending Content-MD5 instead", keyDestination, s.String(), "reason", why.Error())
	}
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
		u.streamCRC.Write(p[:n])
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

// sender sends the queued parts in order, each with its CRC64NVME or its
// Content-MD5 (the server checks it), and checks what the server returns.
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
	c := minio.ChecksumCRC64NVME.Hasher()
	c.Write(part.data)
	part.crc = base64.StdEncoding.EncodeToString(c.Sum(nil))
	if !u.crc {
		m := md5.Sum(part.data)
		part.md5 = m[:]
	}
	p, err := u.s.core.PutObjectPart(u.ctx, u.s.bucket, u.s.key(u.base), u.uploadID, part.num,
		bytes.NewReader(part.data), int64(len(part.data)), u.partOptions(part))
	switch {
	case err != nil && u.crc && len(u.sent) == 0 && refusesChecksum(err):
		return u.resendWithMD5(part, err)
	case err != nil:
		return fmt.Errorf("%s: upload part %d: %w", u.s, part.num, err)
	case u.crc && p.ChecksumCRC64NVME == "" && len(u.sent) == 0:
		return u.resendWithMD5(part, errors.New("no CRC64NVME in the answer to the first part"))
	case u.crc && p.ChecksumCRC64NVME != part.crc:
		return fmt.Errorf("%s: part %d: the server reports CRC64NVME %q, the part sent had %s", u.s, part.num, p.ChecksumCRC64NVME, part.crc)
	}
	if etag := strings.Trim(p.ETag, `"`); !u.crc && isMD5Hex(etag) && !strings.EqualFold(etag, hex.EncodeToString(part.md5)) {
		return fmt.Errorf("%s: part %d: the server reports ETag %s, the part sent had MD5 %x", u.s, part.num, etag, part.md5)
	}
	u.mu.Lock()
	u.sent = append(u.sent, minio.CompletePart{PartNumber: part.num, ETag: p.ETag, ChecksumCRC64NVME: p.ChecksumCRC64NVME})
	u.parts = append(u.parts, minio.ObjectPart{PartNumber: part.num, Size: int64(len(part.data)), ChecksumCRC64NVME: part.crc})
	u.md5s = append(u.md5s, part.md5)
	u.mu.Unlock()
	return nil
}

// resendWithMD5 is the fallback for a server that refused or ignored the
// CRC64NVME of the first part: the upload, started with the checksum
// declared, is aborted, and one without it takes its place; the part goes
// again with its Content-MD5 (see hdrChecksumCRC).
func (u *s3Upload) resendWithMD5(part s3Part, why error) error {
	u.s.useMD5(why)
	if err := u.s.core.AbortMultipartUpload(u.ctx, u.s.bucket, u.s.key(u.base), u.uploadID); err != nil && !noSuchUpload(err) {
		// The next run's CleanStale aborts it.
		u.s.log.Warn("could not abort the upload started with checksums", keyDestination, u.s.String(), keyArchive, u.base, "error", err)
	}
	id, err := u.s.newUpload(u.ctx, u.base, false)
	if err != nil {
		return fmt.Errorf("%s: start upload without checksums: %w", u.s, err)
	}
	u.uploadID, u.crc = id, false
	return u.sendPart(part)
}

// partOptions: every part carries its CRC64NVME (or, for a server that
// does not check it, its Content-MD5), which the request signature covers
// and the server checks against the body. Over https the payload is sent
// as UNSIGNED-PAYLOAD, as minio-go's own multipart uploads do over https:
// TLS protects the body in transit, so a SHA-256 pass over every part,
// here and on the server, buys nothing (bench -targets offsite; the
// server checks the object's CRC64NVME and the read-back reads it all).
// Over plain http the
// part's SHA-256 goes in X-Amz-Content-Sha256: signed, it keeps a body
// swapped in transit from passing, which a CRC or an MD5 alone does not
// promise (whoever swaps the body can make its checksum match).
// DisableContentSha256 keeps minio-go on http from signing the body in
// 64 KiB chunks (aws-chunked), a second SHA-256 pass and a framing the
// server must undo.
func (u *s3Upload) partOptions(part s3Part) minio.PutObjectPartOptions {
	o := minio.PutObjectPartOptions{DisableContentSha256: true}
	if u.crc {
		o.CustomHeader = http.Header{}
		o.CustomHeader.Set(hdrChecksumCRC, part.crc)
	} else {
		o.Md5Base64 = base64.StdEncoding.EncodeToString(part.md5)
	}
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

// isMultipartMD5ETag: an ETag of the form S3 gives a multipart object,
// MD5(part MD5s)-N (servers that derive ETags from another checksum, e.g.
// versitygw --data-integrity-etag's CRC64NVME-..., or encrypt, give
// something else: then the size and the read-back are the check).
func isMultipartMD5ETag(s string) bool {
	sum, n, ok := strings.Cut(s, "-")
	if !ok || !isMD5Hex(sum) || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
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

// confirmParts compares the server's list of parts with what was sent
// (number, ETag and, where the server lists it, CRC64NVME).
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
				!strings.EqualFold(strings.Trim(p.ETag, `"`), strings.Trim(u.sent[i].ETag, `"`)) ||
				u.crc && p.ChecksumCRC64NVME != "" && p.ChecksumCRC64NVME != u.parts[i].ChecksumCRC64NVME {
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

// SentIntact (after Stored) proves that the parts sent, in order, are
// exactly the bytes written: their CRC64NVMEs, computed by the sender
// from the buffers it sent, combine into the CRC64NVME of the bytes Write
// took, over the same length. It stands for a second SHA-256 pass over
// everything sent: what it guards against is this process's own
// buffering (a part lost, sent twice, out of order or changed after it
// was written), not an adversary, and a 64-bit CRC misses such an error
// with a chance of 2^-64 (any error burst up to 64 bits, always). What the
// server holds is checked against the stream (its length and CRC64NVME)
// by the read-back (readBackCRC says why a CRC suffices there).
func (u *s3Upload) SentIntact() error {
	sent, err := u.sentCRC()
	if err != nil {
		return err
	}
	var n int64
	for _, p := range u.parts {
		n += p.Size
	}
	if want := u.streamCRC.Sum64(); n != u.size || sent != want {
		return fmt.Errorf("%s: the parts sent (%d bytes, CRC64NVME %016x) are not the %d bytes written (%016x)", u.s, n, sent, u.size, want)
	}
	return nil
}

// sentCRC is the CRC64NVME of the parts sent, in order.
func (u *s3Upload) sentCRC() (uint64, error) {
	sum, err := combinedCRC64(slices.Clone(u.parts))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", u.s, err)
	}
	return sum, nil
}

// combinedCRC64 is the CRC64NVME of the concatenation of parts, in order,
// from each part's CRC64NVME and size (minio-go combines them, sorting
// parts by PartNumber in place: callers pass a slice of their own).
func combinedCRC64(parts []minio.ObjectPart) (uint64, error) {
	c, err := minio.ChecksumCRC64NVME.FullObjectChecksum(parts)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(c.Raw()), nil
}

// ReadBackAgainst sets the digest Commit compares the completed object
// with when verifyReadBack is on: the stream's (its length and CRC64NVME).
func (u *s3Upload) ReadBackAgainst(stream archive.Digest) { u.readBackWant = &stream }

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
	if u.crc {
		// The server checks the whole object's CRC64NVME too.
		sum, err := u.sentCRC()
		if err != nil {
			return err
		}
		opts.UserMetadata = map[string]string{hdrChecksumCRC: crc64Base64(sum), hdrChecksumType: "FULL_OBJECT"}
	}
	_, err := u.s.core.CompleteMultipartUpload(ctx, u.s.bucket, key, u.uploadID, u.sent, opts)
	if err != nil && u.crc && refusesChecksum(err) {
		// A server that checked the parts' CRC64NVME but refuses the
		// whole object's: complete without it (the object's report and
		// the read-back still check the whole).
		u.s.log.Warn("the S3 server refuses the object's CRC64NVME on completion; completing without it", keyDestination, u.s.String(), "reason", err.Error())
		opts.UserMetadata = nil
		_, err = u.s.core.CompleteMultipartUpload(ctx, u.s.bucket, key, u.uploadID, u.sent, opts)
	}
	if err != nil {
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

// confirmObject checks the completed object: the size and what the
// server reports of its content (the CRC64NVME of the whole object, or
// for Content-MD5 parts the multipart ETag), and with verifyReadBack a
// full read-back.
func (u *s3Upload) confirmObject(ctx context.Context) error {
	o, info, err := u.s.statKey(ctx, u.base, u.crc)
	if err != nil {
		return err
	}
	defer o.Close()
	if o.size != u.size {
		return fmt.Errorf("the server holds %d bytes, %d were sent", o.size, u.size)
	}
	if u.crc {
		// A server that checked every part's CRC64NVME and the whole
		// object's at completion reports it here (one that reports
		// none, as one whose ETag is no MD5: the size, the parts each
		// confirmed and the read-back are the check).
		if want := crc64Base64(u.streamCRC.Sum64()); info.ChecksumCRC64NVME != "" && info.ChecksumCRC64NVME != want {
			return fmt.Errorf("the server reports CRC64NVME %q, the bytes sent had %s", info.ChecksumCRC64NVME, want)
		}
	} else if etag := strings.Trim(o.etag, `"`); isMultipartMD5ETag(etag) && !strings.EqualFold(etag, u.multipartETag()) {
		return fmt.Errorf("the server reports ETag %s, the parts sent make %s", etag, u.multipartETag())
	}
	if !u.s.readBack {
		return nil
	}
	want := archive.Digest{CRC64: u.streamCRC.Sum64(), Size: u.size}
	if u.readBackWant != nil {
		want = *u.readBackWant
	}
	got, err := o.readBackCRC(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("read back: %w", err)
	case o.size != want.Size:
		return fmt.Errorf("read back: the server holds %d bytes, the stream had %d", o.size, want.Size)
	case got != want.CRC64:
		return fmt.Errorf("read back: the server holds CRC64NVME %016x, the stream had %016x", got, want.CRC64)
	}
	return nil
}

// crc64Base64 is a CRC64NVME as S3 headers give it.
func crc64Base64(sum uint64) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, sum))
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
