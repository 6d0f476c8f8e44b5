package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
)

// partRecorder is a reverse proxy in front of the test's versitygw that
// records, for every part upload, the X-Amz-Content-Sha256 and
// Content-Encoding headers and the SHA-256 of the body as sent.
type partRecorder struct {
	mu    sync.Mutex
	parts []recordedPart
}

type recordedPart struct {
	header, encoding, bodySum string
}

func (p *partRecorder) handler(target *url.URL) http.Handler {
	proxy := httputil.NewSingleHostReverseProxy(target)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256(body)
			p.mu.Lock()
			p.parts = append(p.parts, recordedPart{r.Header.Get("X-Amz-Content-Sha256"), r.Header.Get("Content-Encoding"), hex.EncodeToString(sum[:])})
			p.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		proxy.ServeHTTP(w, r)
	})
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
