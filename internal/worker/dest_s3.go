package worker

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store is a Destination in an S3-compatible bucket. The archives of
// service NAME on host HOST are the objects PREFIX/HOST/NAME/NAME-TS.EXT
// with .sha256 and .sig beside them; nothing outside that prefix, and
// nothing under it that is not of the service's naming pattern, is ever
// listed, read, removed or aborted.
//
// Write protocol (the Upload): a multipart upload to the final key,
// streamed part by part as the archive is produced (at most three parts
// in memory, no local temp copy); each part is sent with its CRC64NVME,
// or Content-MD5 where the server does not check that (and on plain http
// its SHA-256: partOptions), and what the server answers is checked.
// Stored confirms the parts against the server's ListParts and that they
// are the bytes written (SentIntact). Commit refuses an existing key,
// completes the upload (If-None-Match: *, where the server honours it;
// with the whole object's CRC64NVME, which the server checks), checks the
// size and the CRC64NVME (or the multipart ETag of Content-MD5 parts) the
// server reports, reads the object back in full, in concurrent ranged
// GETs, and checks its length and CRC64NVME against the stream's
// (verifyReadBack, default on), then puts .sha256, then .sig. Until the upload completes the archive is invisible; an
// archive is never shown with a checksum it does not match, and any
// failure after completion removes what was published. Abort aborts the
// multipart upload; the next run's CleanStale aborts those a killed run
// left under the prefix.
type s3Store struct {
	core     *minio.Core
	bucket   string
	prefix   string // PREFIX/HOST/NAME/ (ends with "/")
	url      string // s3://BUCKET/PREFIX as configured
	name     string // service name
	readBack bool
	// readBackRange is the shortest range of the read-back's concurrent
	// GETs (readBackRange, the constant; lowered by tests).
	readBackRange int64
	tls           bool // https: parts go as UNSIGNED-PAYLOAD (sendPart)
	log           *slog.Logger
	// md5Parts: the server does not check CRC64NVME part checksums;
	// uploads send Content-MD5 (hdrChecksumCRC).
	md5Parts atomic.Bool
}

var _ Destination = (*s3Store)(nil)

// s3Timeouts: connecting and a first response byte are bounded so that an
// unreachable server or a dead connection fails the destination instead of
// hanging the run; the client retries a failed request s3Retries times.
const (
	s3DialTimeout    = 10 * time.Second
	s3HeaderTimeout  = 60 * time.Second
	s3PrepareTimeout = 15 * time.Second
	s3Retries        = 3
)

// s3IdleTimeout fails a connection on which nothing moves either way for
// that long: a server that hangs mid-transfer (TCP keepalives still
// answered) must fail the destination, not hang the run. The stall test
// shortens it through the Runner's seams (s3Idle).
const s3IdleTimeout = 2 * time.Minute

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// idleTimeoutDialer wraps each connection so that every Read and Write
// must make progress within idle.
func idleTimeoutDialer(dial dialFunc, idle time.Duration) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, timeout: idle}, nil
	}
}

type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// newS3Store makes the store of destination dest (an s3:// entry of
// backup.paths) for cfg; host is the host name the keys start with.
func newS3Store(cfg *config.Config, dest config.Destination, host string, idle time.Duration, log *slog.Logger) (*s3Store, error) {
	sc := cfg.Backup.S3
	if sc == nil {
		return nil, errors.New("backup.s3 is not set")
	}
	creds, err := s3Credentials(sc.CredentialsFile)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(sc.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("backup.s3.endpoint: %w", err)
	}
	if u.Scheme == "http" {
		log.Warn("S3 endpoint without TLS: the archives and the request signatures cross the network in clear", "endpoint", u.Host)
	}
	lookup := minio.BucketLookupDNS
	if sc.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           idleTimeoutDialer((&net.Dialer{Timeout: s3DialTimeout, KeepAlive: 30 * time.Second}).DialContext, idle),
		TLSHandshakeTimeout:   s3DialTimeout,
		ResponseHeaderTimeout: s3HeaderTimeout,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
	}
	region := sc.Region
	if region == "" {
		region = "us-east-1"
	}
	core, err := minio.NewCore(u.Host, &minio.Options{
		Creds: creds, Secure: u.Scheme == "https", Region: region,
		BucketLookup: lookup, Transport: tr, MaxRetries: s3Retries,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client: %w", err)
	}
	prefix := host + "/" + cfg.Name + "/"
	if dest.Prefix != "" {
		prefix = dest.Prefix + "/" + prefix
	}
	return &s3Store{core: core, bucket: dest.Bucket, prefix: prefix, url: dest.String(),
		name: cfg.Name, readBack: sc.ReadBack(), readBackRange: readBackRange, tls: u.Scheme == "https", log: log}, nil
}

// s3Credentials reads the key=value credentials (readCredential
// "s3-credentials"). Errors never hold a value of the file.
func s3Credentials(path string) (*credentials.Credentials, error) {
	data, err := readCredential("s3-credentials", path)
	if err != nil {
		return nil, err
	}
	env, err := parseEnvFile(data)
	if err != nil {
		return nil, fmt.Errorf("credential s3-credentials: %w", err)
	}
	id, secret := env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
	if id == "" || secret == "" {
		return nil, errors.New("credential s3-credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required")
	}
	return credentials.NewStaticV4(id, secret, env["AWS_SESSION_TOKEN"]), nil
}

// String is s3://BUCKET/PREFIX/HOST/NAME.
func (s *s3Store) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *s3Store) key(name string) string { return s.prefix + name }

// Prepare checks, within s3PrepareTimeout, that the bucket is there and
// that the credentials may list our prefix: an unreachable server or
// refused credentials leave the destination out before anything is
// stopped.
func (s *s3Store) Prepare(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s3PrepareTimeout)
	defer cancel()
	// Listing the prefix says why it fails (refused credentials, no such
	// bucket, no answer) where a HEAD of the bucket has no body to say it.
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	if o, ok := <-s.core.Client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 1}); ok && o.Err != nil {
		return false, fmt.Errorf("%s: %w", s, o.Err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("%s: no answer within %s", s, s3PrepareTimeout)
	}
	return false, nil
}

// unboundedSpace is what FreeSpace reports for a store with no free-space
// figure (an object store): room is never the reason to leave it out.
const unboundedSpace = math.MaxUint64

// FreeSpace: an S3 bucket reports no free space; quotas show as a failed
// upload instead. The empty key shares its room with no other destination.
func (s *s3Store) FreeSpace(ctx context.Context) (uint64, string, error) {
	return unboundedSpace, "", nil
}

// ownName reports whether name is an archive name of the service.
func (s *s3Store) ownName(name string) bool {
	_, ok := parseArchiveName(s.name, name)
	return ok
}

// List lists the objects directly under the prefix (delimiter "/": no
// deeper key) whose name is an archive name of the service, newest first.
func (s *s3Store) List(ctx context.Context) ([]StoredArchive, error) {
	var out []StoredArchive
	// Not recursive: only keys directly under the prefix ("deeper/..."
	// is someone else's).
	for o := range s.core.Client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if o.Err != nil {
			return nil, fmt.Errorf("%s: list: %w", s, o.Err)
		}
		if a, ok := parseArchiveName(s.name, strings.TrimPrefix(o.Key, s.prefix)); ok {
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// Open opens a committed archive for ranged reads of the version present
// now (every read is pinned to its ETag).
func (s *s3Store) Open(ctx context.Context, name string) (ArchiveReader, error) {
	if !s.ownName(name) {
		return nil, fmt.Errorf("%s: not an archive name of %s", name, s.name)
	}
	return s.openKey(ctx, name)
}

func (s *s3Store) openKey(ctx context.Context, name string) (*s3Object, error) {
	o, _, err := s.statKey(ctx, name, false)
	return o, err
}

// statKey is openKey that also returns what the server reports of the
// object, with its checksums if checksums.
func (s *s3Store) statKey(ctx context.Context, name string, checksums bool) (*s3Object, minio.ObjectInfo, error) {
	info, err := s.core.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{Checksum: checksums})
	if err != nil {
		return nil, info, fmt.Errorf("%s/%s: %w", s, name, notExist(err))
	}
	return &s3Object{s: s, ctx: ctx, name: name, size: info.Size, etag: info.ETag}, info, nil
}

// notExist maps S3's "no such key" to os.ErrNotExist.
func notExist(err error) error {
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w (%v)", os.ErrNotExist, err)
	}
	return err
}

// Remove removes the archive, then its .sig and .sha256 (the archive
// first: a listing never shows an archive without its checksum because of
// a Remove).
func (s *s3Store) Remove(ctx context.Context, name string) error {
	if !s.ownName(name) {
		return fmt.Errorf("%s: not an archive name of %s", name, s.name)
	}
	if err := s.core.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("%s/%s: remove: %w", s, name, err)
	}
	var errs []string
	for _, side := range []string{name + ".sig", name + ".sha256"} {
		if err := s.core.RemoveObject(ctx, s.bucket, s.key(side), minio.RemoveObjectOptions{}); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if errs != nil {
		return fmt.Errorf("%w: %s", errSideFiles, strings.Join(errs, "; "))
	}
	return nil
}

// CleanStale aborts the multipart uploads a killed run left under the
// prefix for the service's archive names; uploads of anything else (other
// services, other tools, deeper keys) are left alone.
func (s *s3Store) CleanStale(ctx context.Context) error {
	keyMarker, idMarker := "", ""
	for {
		res, err := s.core.ListMultipartUploads(ctx, s.bucket, s.prefix, keyMarker, idMarker, "/", 1000)
		if err != nil {
			return fmt.Errorf("%s: list uploads: %w", s, err)
		}
		for _, u := range res.Uploads {
			name := strings.TrimPrefix(u.Key, s.prefix)
			if !strings.HasPrefix(u.Key, s.prefix) || !s.ownName(name) {
				continue
			}
			if err := s.core.AbortMultipartUpload(ctx, s.bucket, u.Key, u.UploadID); err != nil && !noSuchUpload(err) {
				return fmt.Errorf("%s: abort stale upload of %s: %w", s, name, err)
			}
			s.log.Info("aborted stale upload", keyDestination, s.String(), keyArchive, name)
		}
		if !res.IsTruncated {
			return nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

func noSuchUpload(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == "NoSuchUpload" || r.StatusCode == http.StatusNotFound
}

// s3Object reads one version of an object (pinned by ETag). Sequential
// ReadAt calls (hashing, most of a parse) share one streaming GET; a read
// elsewhere starts a new ranged GET from there.
type s3Object struct {
	s    *s3Store
	ctx  context.Context
	name string
	size int64
	etag string

	mu   sync.Mutex
	body io.ReadCloser
	pos  int64
}

func (o *s3Object) Size() int64  { return o.size }
func (o *s3Object) Name() string { return o.s.String() + "/" + o.name }

func (o *s3Object) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	want := min(int64(len(p)), o.size-off)
	if o.body == nil || o.pos != off {
		if err := o.reopen(off); err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(o.body, p[:want])
	o.pos += int64(n)
	if err != nil {
		o.closeBody()
		return n, fmt.Errorf("%s: read at %d: %w", o.Name(), off+int64(n), err)
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

func (o *s3Object) reopen(off int64) error {
	o.closeBody()
	opts := minio.GetObjectOptions{}
	if err := opts.SetMatchETag(o.etag); err != nil {
		return err
	}
	if off > 0 { // minio-go reads (0, 0) as the first byte only
		if err := opts.SetRange(off, 0); err != nil {
			return err
		}
	}
	body, _, _, err := o.s.core.GetObject(o.ctx, o.s.bucket, o.s.key(o.name), opts)
	if err != nil {
		return fmt.Errorf("%s: %w", o.Name(), err)
	}
	o.body, o.pos = body, off
	return nil
}

// readBackStreams and readBackRange shape the commit's read-back: up to
// readBackStreams ranged GETs at once, none shorter than readBackRange.
// One GET leaves the read-back to one connection, whose server side (read
// the file, send it) and client side (receive, hash) each hold one core
// at most; the commit waits for all of it, after the compressor has freed
// the machine (bench -targets offsite).
const (
	readBackStreams = 2
	readBackRange   = 32 << 20
)

// readBackCRC reads the whole object back, in ranges fetched concurrently
// (each pinned by the ETag, so a replaced object fails the read instead
// of mixing two versions), and returns its CRC64NVME: the ranges' CRCs
// combined, in order. A CRC, not the SHA-256, because what the read-back
// guards against is a server that stored or serves other bytes than it
// confirmed, by accident (a 64-bit CRC catches every error burst up to 64
// bits, any other with probability 1 − 2⁻⁶⁴); someone who can write the
// bucket can replace the object after any read-back, which the .sig
// catches at verify and restore, not this. It costs the worker ~0.05 s
// per GiB instead of SHA-256's ~0.6, and the ranges can be hashed in
// parallel.
func (o *s3Object) readBackCRC(ctx context.Context) (uint64, error) {
	n := int(min(int64(readBackStreams), max(1, o.size/o.s.readBackRange)))
	step := (o.size + int64(n) - 1) / int64(n)
	crcs := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * step
			crcs[i], errs[i] = o.rangeCRC(ctx, off, min(step, o.size-off))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if n == 1 {
		return crcs[0], nil
	}
	parts := make([]minio.ObjectPart, n)
	for i, crc := range crcs {
		parts[i] = minio.ObjectPart{PartNumber: i + 1, Size: min(step, o.size-int64(i)*step), ChecksumCRC64NVME: crc64Base64(crc)}
	}
	sum, err := combinedCRC64(parts)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.Name(), err)
	}
	return sum, nil
}

// rangeCRC is the CRC64NVME of size bytes of the object from off, which
// must all arrive.
func (o *s3Object) rangeCRC(ctx context.Context, off, size int64) (uint64, error) {
	opts := minio.GetObjectOptions{}
	if err := opts.SetMatchETag(o.etag); err != nil {
		return 0, err
	}
	if size == 0 {
		return minio.ChecksumCRC64NVME.Hasher().(hash.Hash64).Sum64(), nil
	}
	if err := opts.SetRange(off, off+size-1); err != nil {
		return 0, err
	}
	body, _, _, err := o.s.core.GetObject(ctx, o.s.bucket, o.s.key(o.name), opts)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.Name(), err)
	}
	defer body.Close()
	h := minio.ChecksumCRC64NVME.Hasher().(hash.Hash64)
	got, err := io.CopyBuffer(h, io.LimitReader(body, size+1), make([]byte, 256<<10))
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s: read at %d: %w", o.Name(), off+got, err)
	case got != size:
		return 0, fmt.Errorf("%s: %d bytes at %d, want %d", o.Name(), got, off, size)
	}
	return h.Sum64(), nil
}

func (o *s3Object) closeBody() {
	if o.body != nil {
		o.body.Close()
		o.body = nil
	}
}

func (o *s3Object) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closeBody()
	return nil
}

// ReadSide reads the object beside the archive with suffix ext, at most
// limit bytes.
func (o *s3Object) ReadSide(ext string, limit int64) ([]byte, error) {
	body, _, _, err := o.s.core.GetObject(o.ctx, o.s.bucket, o.s.key(o.name+ext), minio.GetObjectOptions{})
	if err != nil {
		return nil, notExist(err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, notExist(err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s%s: larger than %d bytes", o.Name(), ext, limit)
	}
	return b, nil
}
