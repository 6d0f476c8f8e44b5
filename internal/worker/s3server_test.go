package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	"github.com/minio/minio-go/v7"
)

// s3Server is the shared versitygw of the tests (testtool.S3Server, one
// copy for every package), with the names these tests use.
type s3Server struct {
	*testtool.S3Server
	client   *minio.Core
	credFile string
}

// startS3Server starts a versitygw; it is killed when the test ends.
func startS3Server(t *testing.T) *s3Server {
	t.Helper()
	s := testtool.StartS3Server(t)
	return &s3Server{S3Server: s, client: s.Client, credFile: s.CredFile}
}

func (s *s3Server) start()                              { s.Start() }
func (s *s3Server) kill()                               { s.Kill() }
func (s *s3Server) endpoint() string                    { return s.Endpoint() }
func (s *s3Server) makeBucket(name string)              { s.MakeBucket(name) }
func (s *s3Server) keys(bucket, prefix string) []string { return s.Keys(bucket, prefix) }
func (s *s3Server) put(bucket, key string, data []byte) { s.Put(bucket, key, data) }
func (s *s3Server) get(bucket, key string) []byte       { return s.Get(bucket, key) }

// s3Settings is backup.s3 for this server.
func (s *s3Server) s3Settings() map[string]any {
	return map[string]any{"endpoint": s.endpoint(), "pathStyle": true, "credentialsFile": s.credFile}
}

// TestS3Contract runs the Destination contract on an S3 bucket of a real
// server, with the read-back on (each fixture its own bucket).
func TestS3Contract(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	var n atomic.Int32
	testDestinationContract(t, func(t *testing.T) destFixture {
		bucket := fmt.Sprintf("contract-%d", n.Add(1))
		srv.makeBucket(bucket)
		cfg := &config.Config{Name: "app", Backup: config.Backup{HostName: "host1", S3: &config.S3{
			Endpoint: srv.endpoint(), PathStyle: true, CredentialsFile: srv.credFile}}}
		store, err := newS3Store(cfg, config.Destination{Kind: "s3", Bucket: bucket, Prefix: "backups"}, "host1", s3IdleTimeout,
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		prefix := "backups/host1/app/"
		return destFixture{
			dest:  store,
			names: func(t *testing.T) []string { return srv.keys(bucket, prefix) },
			plant: func(t *testing.T, name, kind string) {
				if kind != "file" {
					t.Skip("an object store holds no " + kind)
				}
				srv.put(bucket, prefix+name, []byte("not ours\n"))
			},
		}
	})
}

func mustParse(t *testing.T, s string) config.Destination {
	t.Helper()
	d, err := config.ParseDestination(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestS3CommitConfirmsServerReport: the commit's check against what the
// server reports is live, not skipped: the server's CRC64NVME of the
// multipart object is that of the bytes written, the size is the bytes
// sent, and with the read-back off a committed archive is still exactly
// the bytes. (With Content-MD5 parts, the multipart ETag:
// TestS3ChecksumFallsBackToMD5; a wrong report fails the commit:
// TestS3CommitRefusesAnotherObjectChecksum.)
func TestS3CommitConfirmsServerReport(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("etag")
	off := false
	cfg := &config.Config{Name: "app", Backup: config.Backup{S3: &config.S3{
		Endpoint: srv.endpoint(), PathStyle: true, CredentialsFile: srv.credFile, VerifyReadBack: &off}}}
	store, err := newS3Store(cfg, config.Destination{Kind: "s3", Bucket: "etag"}, "h", s3IdleTimeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 2*s3FirstPart+12345) // three parts
	base := "app-20300101T000000Z.tar.gz"
	up := writeUpload(t, store, base, data)
	u := up.(*s3Upload)
	if err := up.Seal(context.Background(), []byte("sum\n"), []byte("sig\n")); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	info, err := srv.client.StatObject(context.Background(), "etag", "h/app/"+base, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if !u.crc || info.ChecksumCRC64NVME != crc64Of(data) || info.Size != int64(len(data)) || len(u.sent) != 3 {
		t.Fatalf("server reports CRC64NVME %q, size %d; the bytes written have %s, %d bytes (checksums used: %v, %d parts)",
			info.ChecksumCRC64NVME, info.Size, crc64Of(data), len(data), u.crc, len(u.sent))
	}
	if !bytes.Equal(srv.get("etag", "h/app/"+base), data) {
		t.Fatal("the object differs from the bytes sent")
	}
}
