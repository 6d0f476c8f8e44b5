package worker

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	"github.com/minio/minio-go/v7"
)

// proxyStore is an s3Store made by newS3Store for a plain-http proxy
// (recording and altering as rec) in front of the test's versitygw, with
// the read-back as readBack says.
func proxyStore(t *testing.T, srv *s3Server, bucket string, rec *partRecorder, readBack bool) *s3Store {
	store, _ := proxiedStore(t, srv, bucket, rec, httptest.NewServer, &readBack)
	return store
}

// proxiedStore is an s3Store made by newS3Store for the proxy newServer
// starts (recording and altering as rec) in front of the test's
// versitygw; readBack nil keeps the default read-back.
func proxiedStore(t *testing.T, srv *s3Server, bucket string, rec *partRecorder,
	newServer func(http.Handler) *httptest.Server, readBack *bool) (*s3Store, *httptest.Server) {
	t.Helper()
	target, err := url.Parse(srv.endpoint())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newServer(rec.handler(target))
	t.Cleanup(proxy.Close)
	cfg := &config.Config{Name: "app", Backup: config.Backup{S3: &config.S3{
		Endpoint: proxy.URL, PathStyle: true, CredentialsFile: srv.credFile, VerifyReadBack: readBack}}}
	store, err := newS3Store(cfg, config.Destination{Kind: "s3", Bucket: bucket}, "h", s3IdleTimeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return store, proxy
}

func crc64Of(b []byte) string {
	h := minio.ChecksumCRC64NVME.Hasher()
	h.Write(b)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func md5Of(b []byte) string {
	m := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(m[:])
}

// chunks cuts data into the parts an upload sends.
func chunks(data []byte) [][]byte {
	var out [][]byte
	for len(data) > s3FirstPart {
		out = append(out, data[:s3FirstPart])
		data = data[s3FirstPart:]
	}
	return append(out, data)
}

// TestS3PartsCarryCRC64NVME: against a server that checks them
// (versitygw), every part goes with the CRC64NVME of its bytes and no
// Content-MD5 (MD5 cost the worker a core-second per 400 MB), and the
// completed object has, by the server's own report, the CRC64NVME of the
// bytes written, as one full-object checksum.
func TestS3PartsCarryCRC64NVME(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("crc")
	rec := &partRecorder{}
	store := proxyStore(t, srv, "crc", rec, false)
	data := randomBytes(t, 2*s3FirstPart+4321) // three parts
	base := "app-20300101T000000Z.tar.gz"
	commitArchive(t, store, base, data)
	want := chunks(data)
	if len(rec.parts) != len(want) {
		t.Fatalf("%d part uploads, want %d", len(rec.parts), len(want))
	}
	for i, p := range rec.parts {
		if p.crc != crc64Of(want[i]) || p.md5 != "" {
			t.Errorf("part %d: CRC64NVME %q, Content-MD5 %q; want CRC64NVME %s and no Content-MD5", i+1, p.crc, p.md5, crc64Of(want[i]))
		}
	}
	info, err := srv.client.StatObject(context.Background(), "crc", "h/app/"+base, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.ChecksumCRC64NVME != crc64Of(data) || info.ChecksumMode != "FULL_OBJECT" {
		t.Fatalf("the server reports CRC64NVME %q (%s), the bytes written have %s (FULL_OBJECT)", info.ChecksumCRC64NVME, info.ChecksumMode, crc64Of(data))
	}
	if !bytes.Equal(srv.get("crc", "h/app/"+base), data) {
		t.Fatal("the object differs from the bytes written")
	}
}

// TestS3CommitRefusesAnotherObjectChecksum: the commit's check of the
// CRC64NVME the server reports for the completed object is live: a report
// that is not the bytes written fails the commit (read-back off, so that
// check is the one) and removes what was published.
func TestS3CommitRefusesAnotherObjectChecksum(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("crc")
	rec := &partRecorder{headCRC: crc64Of([]byte("other bytes"))}
	store := proxyStore(t, srv, "crc", rec, false)
	up := writeUpload(t, store, "app-20300101T000000Z.tar.gz", randomBytes(t, s3FirstPart+4321))
	if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
		t.Fatal(err)
	}
	err := up.Commit(context.Background())
	if err == nil || !strings.Contains(err.Error(), "reports CRC64NVME") {
		t.Fatalf("Commit = %v, want the server's CRC64NVME refused", err)
	}
	if keys := srv.keys("crc", ""); len(keys) != 0 {
		t.Fatalf("left after the failed commit: %v", keys)
	}
}

// TestS3ChecksumFallsBackToMD5: a server that refuses the CRC64NVME
// headers when the upload starts or on the first part, or ignores them
// (no checksum in its answer), gets the archive all the same, every part
// with its Content-MD5 (which the server checks) and the commit confirmed
// by the multipart ETag; the upload begun with the checksum is not left
// behind, and the store's next upload sends Content-MD5 from the start.
func TestS3ChecksumFallsBackToMD5(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	for i, c := range []struct {
		name string
		rec  func(refused *atomic.Int32) *partRecorder
	}{
		{"refused when the upload starts", func(refused *atomic.Int32) *partRecorder {
			return &partRecorder{refuse: func(r *http.Request) string {
				if r.Header.Get(hdrChecksumAlgo) != "" || r.Header.Get(hdrChecksumType) != "" {
					refused.Add(1)
					return "InvalidArgument"
				}
				return ""
			}}
		}},
		{"refused on the first part", func(refused *atomic.Int32) *partRecorder {
			return &partRecorder{refuse: func(r *http.Request) string {
				if r.Header.Get(hdrChecksumCRC) != "" {
					refused.Add(1)
					return "NotImplemented"
				}
				return ""
			}}
		}},
		{"ignored", func(*atomic.Int32) *partRecorder { return &partRecorder{dropAnswerCRC: true} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			bucket := "fallback" + string(rune('a'+i))
			srv.makeBucket(bucket)
			var refused atomic.Int32
			rec := c.rec(&refused)
			store := proxyStore(t, srv, bucket, rec, true)
			for n, base := range []string{"app-20300101T000000Z.tar.gz", "app-20300102T000000Z.tar.gz"} {
				refusedBefore := refused.Load()
				rec.parts = nil
				data := randomBytes(t, s3FirstPart+4321)
				up := writeUpload(t, store, base, data)
				if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
					t.Fatal(err)
				}
				if err := up.Commit(context.Background()); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(srv.get(bucket, "h/app/"+base), data) {
					t.Fatal("the object differs from the bytes written")
				}
				info, err := srv.client.StatObject(context.Background(), bucket, "h/app/"+base, minio.StatObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Trim(info.ETag, `"`); got != up.(*s3Upload).multipartETag() {
					t.Fatalf("the server reports ETag %s, the parts sent make %s", got, up.(*s3Upload).multipartETag())
				}
				want := chunks(data)
				if len(rec.parts) < len(want) {
					t.Fatalf("%d part uploads, want at least %d", len(rec.parts), len(want))
				}
				if n == 1 && (len(rec.parts) != len(want) || refused.Load() != refusedBefore) {
					t.Fatalf("the second upload tried the checksum again: %d part uploads, %d refusals", len(rec.parts), refused.Load()-refusedBefore)
				}
				for i, p := range rec.parts[len(rec.parts)-len(want):] {
					if p.md5 != md5Of(want[i]) || p.crc != "" {
						t.Errorf("upload %d part %d: Content-MD5 %q, CRC64NVME %q; want Content-MD5 %s only", n+1, i+1, p.md5, p.crc, md5Of(want[i]))
					}
				}
			}
			if c.name != "ignored" && refused.Load() == 0 {
				t.Fatal("the proxy refused nothing: the case did not happen")
			}
			if keys := srv.keys(bucket, ""); len(keys) != 6 {
				t.Fatalf("the bucket holds %v, want the two archives with their .sha256 and .sig and no upload", keys)
			}
		})
	}
}

// TestS3SentIntactCatchesAChangedPart: a part that changes in memory after
// it was written (here the last one, before Stored sends it) is sent, and
// the server confirms what it got, but the upload does not pass for the
// stream: the parts sent no longer make the bytes written.
func TestS3SentIntactCatchesAChangedPart(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("intact")
	store := proxyStore(t, srv, "intact", &partRecorder{}, true)
	up, err := store.Create(context.Background(), "app-20300101T000000Z.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Abort()
	if _, err := up.Writer().Write(randomBytes(t, s3FirstPart+4321)); err != nil {
		t.Fatal(err)
	}
	u := up.(*s3Upload)
	u.buf[100] ^= 1
	if _, _, err := up.Stored(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = up.(remoteUpload).SentIntact()
	if err == nil || !strings.Contains(err.Error(), "are not the") {
		t.Fatalf("SentIntact = %v, want the changed part found", err)
	}
	t.Log(err)
}

// TestS3ServerWithoutMD5ETags: a server that derives its ETags from a
// CRC64NVME instead of MD5 (versitygw --data-integrity-etag) takes the
// archive, with the CRC64NVME parts and with Content-MD5 parts (a proxy
// refusing the checksum headers) alike: its ETags are neither checked as
// MD5s nor a reason to fail the commit (before, every commit to such a
// server failed on "the server reports ETag CRC64NVME-…").
func TestS3ServerWithoutMD5ETags(t *testing.T) {
	t.Parallel()
	s := testtool.StartS3ServerOptions(t, "us-east-1", "--data-integrity-etag")
	srv := &s3Server{S3Server: s, client: s.Client, credFile: s.CredFile}
	for i, rec := range []*partRecorder{{}, {refuse: func(r *http.Request) string {
		if r.Header.Get(hdrChecksumAlgo) != "" {
			return "InvalidArgument"
		}
		return ""
	}}} {
		bucket := fmt.Sprintf("crcetag%d", i)
		srv.makeBucket(bucket)
		for _, readBack := range []bool{false, true} {
			store := proxyStore(t, srv, bucket, rec, readBack)
			data := randomBytes(t, s3FirstPart+4321)
			base := "app-20300101T000000Z.tar.gz"
			if readBack {
				base = "app-20300102T000000Z.tar.gz"
			}
			commitArchive(t, store, base, data)
			if !bytes.Equal(srv.get(bucket, "h/app/"+base), data) {
				t.Fatal("the object differs from the bytes written")
			}
			info, err := srv.client.StatObject(context.Background(), bucket, "h/app/"+base, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(strings.Trim(info.ETag, `"`), "CRC64NVME-") {
				t.Fatalf("the server's ETag is %s: not the server this test needs", info.ETag)
			}
		}
	}
}

// TestS3ObjectChecksumRefusedOnCompletion: a server that checks the parts'
// CRC64NVME but refuses the whole object's on CompleteMultipartUpload, or
// reports none for the object, still gets the archive, exactly the bytes
// (the parts were each confirmed; the read-back, on and off here, and the
// size check the whole).
func TestS3ObjectChecksumRefusedOnCompletion(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("complete")
	var refused atomic.Int32
	rec := &partRecorder{headCRC: "-", refuse: func(r *http.Request) string {
		if r.Method == http.MethodPost && r.URL.Query().Has("uploadId") && r.Header.Get(hdrChecksumCRC) != "" {
			refused.Add(1)
			return "InvalidArgument"
		}
		return ""
	}}
	for i, readBack := range []bool{false, true} {
		store := proxyStore(t, srv, "complete", rec, readBack)
		data := randomBytes(t, s3FirstPart+4321)
		base := fmt.Sprintf("app-2030010%dT000000Z.tar.gz", i+1)
		commitArchive(t, store, base, data)
		if !bytes.Equal(srv.get("complete", "h/app/"+base), data) {
			t.Fatal("the object differs from the bytes written")
		}
		if !store.md5Parts.Load() && rec.parts[len(rec.parts)-1].crc == "" {
			t.Fatal("the parts went without CRC64NVME: not the case this test needs")
		}
	}
	if refused.Load() != 2 {
		t.Fatalf("the proxy refused %d completions, want 2", refused.Load())
	}
}

// TestS3ReadBackReadsEveryByte: with verifyReadBack the commit reads the
// completed object back in concurrent ranged GETs that cover it exactly,
// and a byte the server serves changed, in the first or the last range,
// fails the commit and removes what was published. Without the read-back
// the same server's archive commits (the object itself is intact: only
// the read-back can see what the server serves).
func TestS3ReadBackReadsEveryByte(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("readback")
	data := randomBytes(t, 2*s3FirstPart+4321)
	size := int64(len(data))
	for i, c := range []struct {
		name     string
		flip     int64 // offset of the byte served changed; -1: none
		readBack bool
		fails    bool
	}{
		{"intact", -1, true, false},
		{"first range", 17, true, true},
		{"last range", size - 1, true, true},
		{"last range, no read-back", size - 1, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &partRecorder{alterGet: func(start int64, body []byte) {
				if c.flip >= start && c.flip < start+int64(len(body)) {
					body[c.flip-start] ^= 0x20
				}
			}}
			store := proxyStore(t, srv, "readback", rec, c.readBack)
			store.readBackRange = 1 << 20 // readBackStreams ranges
			base := fmt.Sprintf("app-2030010%dT000000Z.tar.gz", i+1)
			up := writeUpload(t, store, base, data)
			if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
				t.Fatal(err)
			}
			err := up.Commit(context.Background())
			if c.fails {
				if err == nil || !strings.Contains(err.Error(), "read back: the server holds CRC64NVME") {
					t.Fatalf("Commit = %v, want the read-back to refuse the object", err)
				}
				if keys := srv.keys("readback", "h/app/"+base); len(keys) != 0 {
					t.Fatalf("left after the failed commit: %v", keys)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.readBack {
				if len(rec.gets) != 0 {
					t.Fatalf("read back without verifyReadBack: %v", rec.gets)
				}
				return
			}
			// The ranges tile the object: readBackStreams of them, in
			// any order.
			got := slices.Clone(rec.gets)
			sort.Strings(got)
			step := (size + readBackStreams - 1) / readBackStreams
			var want []string
			for off := int64(0); off < size; off += step {
				want = append(want, fmt.Sprintf("bytes=%d-%d", off, min(off+step, size)-1))
			}
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Fatalf("read back with GETs %q, want %q", got, want)
			}
		})
	}
}
