package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/minio/minio-go/v7"
)

// partRecorder is a reverse proxy in front of the test's versitygw that
// records, for every part upload, the X-Amz-Content-Sha256,
// Content-Encoding, x-amz-checksum-crc64nvme and Content-MD5 headers and
// the SHA-256 of the body as sent.
type partRecorder struct {
	mu    sync.Mutex
	parts []recordedPart
	alter func(part string, body []byte) // if set, may change a part's body on its way
	// refuse, if set, answers a request for which it returns a code
	// itself, with that S3 error code (400), as a server that does not
	// take the request's headers.
	refuse func(r *http.Request) string
	// dropAnswerCRC removes the CRC64NVME from the answers to part
	// uploads, as a server that ignores the checksum headers.
	dropAnswerCRC bool
	// headCRC, if set, replaces the CRC64NVME in answers to HEAD ("-":
	// removes it).
	headCRC string
	// alterGet, if set, may change the body of an answer to a GET of an
	// archive (not of its .sha256 or .sig), whose first byte is at
	// offset start of the object (not a ListParts, a GET too); gets records
	// each such GET's Range.
	alterGet func(start int64, body []byte)
	gets     []string
}

type recordedPart struct {
	header, encoding, bodySum string
	crc, md5                  string
}

func (p *partRecorder) handler(target *url.URL) http.Handler {
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if p.dropAnswerCRC && resp.Request.Method == http.MethodPut && resp.Request.URL.Query().Get("partNumber") != "" {
			resp.Header.Del(hdrChecksumCRC)
		}
		if resp.Request.Method == http.MethodGet && resp.StatusCode/100 == 2 && strings.HasSuffix(resp.Request.URL.Path, ".tar.gz") && !resp.Request.URL.Query().Has("uploadId") {
			return p.answerGet(resp)
		}
		if p.headCRC != "" && resp.Request.Method == http.MethodHead && resp.Header.Get(hdrChecksumCRC) != "" {
			resp.Header.Set(hdrChecksumCRC, p.headCRC)
			if p.headCRC == "-" {
				resp.Header.Del(hdrChecksumCRC)
			}
		}
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.refuse != nil {
			if code := p.refuse(r); code != "" {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>not supported here</Message></Error>`, code)
				return
			}
		}
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256(body)
			p.mu.Lock()
			p.parts = append(p.parts, recordedPart{r.Header.Get("X-Amz-Content-Sha256"), r.Header.Get("Content-Encoding"), hex.EncodeToString(sum[:]),
				r.Header.Get(hdrChecksumCRC), r.Header.Get("Content-MD5")})
			p.mu.Unlock()
			if p.alter != nil {
				p.alter(r.URL.Query().Get("partNumber"), body)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		proxy.ServeHTTP(w, r)
	})
}

// answerGet records a GET's range and lets alterGet change its body.
func (p *partRecorder) answerGet(resp *http.Response) error {
	rng := resp.Request.Header.Get("Range")
	p.mu.Lock()
	p.gets = append(p.gets, rng)
	p.mu.Unlock()
	if p.alterGet == nil {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var start int64
	if rng != "" {
		if _, err := fmt.Sscanf(rng, "bytes=%d-", &start); err != nil {
			return err
		}
	}
	p.alterGet(start, body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return nil
}

// TestS3PartsCarryTheirSHA256: on an http:// endpoint every part is sent
// as is, with the SHA-256 of its bytes in X-Amz-Content-Sha256 (which the
// server checks against the body), not re-signed in 64 KiB chunks
// (aws-chunked): that framing cost a second SHA-256 pass over every part
// (bench -targets offsite).
func TestS3PartsCarryTheirSHA256(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("sums")
	target, err := url.Parse(srv.endpoint())
	if err != nil {
		t.Fatal(err)
	}
	rec := &partRecorder{}
	proxy := httptest.NewServer(rec.handler(target))
	defer proxy.Close()
	cfg := &config.Config{Name: "app", Backup: config.Backup{S3: &config.S3{
		Endpoint: proxy.URL, PathStyle: true, CredentialsFile: srv.credFile}}}
	store, err := newS3Store(cfg, config.Destination{Kind: "s3", Bucket: "sums"}, "h", s3IdleTimeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, s3FirstPart+4321) // two parts
	up := writeUpload(t, store, "app-20300101T000000Z.tar.gz", data)
	if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.parts) != 2 {
		t.Fatalf("%d part uploads went through the proxy, want 2", len(rec.parts))
	}
	for i, p := range rec.parts {
		if strings.Contains(p.encoding, "aws-chunked") || p.header != p.bodySum {
			t.Errorf("part %d: Content-Encoding %q, X-Amz-Content-Sha256 %q; want the body sent as is with its SHA-256 %s", i+1, p.encoding, p.header, p.bodySum)
		}
	}
}

// tlsPartStore is an s3Store made by newS3Store for an https:// endpoint:
// a TLS proxy (recording as rec) in front of the test's versitygw. Its
// client is then given the proxy's test certificate to trust, with every
// other setting as newS3Store made them.
func tlsPartStore(t *testing.T, srv *s3Server, bucket string, rec *partRecorder) *s3Store {
	t.Helper()
	store, proxy := proxiedStore(t, srv, bucket, rec, httptest.NewTLSServer, nil)
	creds, err := s3Credentials(srv.credFile)
	if err != nil {
		t.Fatal(err)
	}
	core, err := minio.NewCore(strings.TrimPrefix(proxy.URL, "https://"), &minio.Options{Creds: creds, Secure: true,
		Region: "us-east-1", BucketLookup: minio.BucketLookupPath, Transport: proxy.Client().Transport, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	store.core = core
	return store
}

// TestS3PartsOverHTTPSAreUnsigned: on an https:// endpoint the parts are
// sent as UNSIGNED-PAYLOAD (TLS protects them in transit; no SHA-256 pass
// over every part here and on the server), still with a checksum the
// server checks (CRC64NVME: TestS3PartsCarryCRC64NVME), and the object is
// confirmed and read back as before.
func TestS3PartsOverHTTPSAreUnsigned(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("tls")
	rec := &partRecorder{}
	store := tlsPartStore(t, srv, "tls", rec)
	data := randomBytes(t, s3FirstPart+4321) // two parts
	base := "app-20300101T000000Z.tar.gz"
	up := writeUpload(t, store, base, data)
	if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.parts) != 2 {
		t.Fatalf("%d part uploads went through the proxy, want 2", len(rec.parts))
	}
	for i, p := range rec.parts {
		if strings.Contains(p.encoding, "aws-chunked") || p.header != "UNSIGNED-PAYLOAD" || p.crc == "" {
			t.Errorf("part %d: Content-Encoding %q, X-Amz-Content-Sha256 %q, CRC64NVME %q; want the body as is, UNSIGNED-PAYLOAD, with its checksum", i+1, p.encoding, p.header, p.crc)
		}
	}
	if got := srv.get("tls", "h/app/"+base); !bytes.Equal(got, data) {
		t.Fatalf("the server holds %d bytes that differ from the %d sent", len(got), len(data))
	}
}

// TestS3PartAlteredOverHTTPSIsRefused: an unsigned part whose body changes
// on its way is refused by its checksum (CRC64NVME; Content-MD5 before);
// the upload fails and nothing becomes visible.
func TestS3PartAlteredOverHTTPSIsRefused(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("tls")
	rec := &partRecorder{alter: func(part string, body []byte) {
		if part == "2" {
			body[100] ^= 1
		}
	}}
	store := tlsPartStore(t, srv, "tls", rec)
	up, err := store.Create(context.Background(), "app-20300101T000000Z.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	_, werr := up.Writer().Write(randomBytes(t, s3FirstPart+4321))
	_, _, serr := up.Stored(context.Background())
	if werr == nil && serr == nil {
		t.Fatal("an altered part was accepted")
	}
	if err := errors.Join(werr, serr); !strings.Contains(err.Error(), "upload part 2") {
		t.Fatalf("the upload failed for another reason: %v", err)
	}
	t.Logf("refused: %v", errors.Join(werr, serr))
	if err := up.Abort(); err != nil {
		t.Fatal(err)
	}
	if keys := srv.keys("tls", ""); len(keys) != 0 {
		t.Fatalf("visible after the failed upload: %v", keys)
	}
}
