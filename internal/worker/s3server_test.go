package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Server is a real S3 server for the tests: Versity S3 Gateway over a
// POSIX directory (buckets are its subdirectories), on a free port of
// 127.0.0.1.
type s3Server struct {
	t        *testing.T
	bin, dir string
	addr     string
	cmd      *exec.Cmd
	client   *minio.Core
	credFile string
}

const (
	testS3Access = "backupgen-test-access"
	testS3Secret = "backupgen-test-secret-0123456789"
	versitygwPkg = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)

// startS3Server starts a versitygw; it is killed when the test ends.
func startS3Server(t *testing.T) *s3Server {
	t.Helper()
	bin := testtool.RequireGoTool(t, "versitygw", versitygwPkg)
	s := &s3Server{t: t, bin: bin, dir: t.TempDir(), addr: "127.0.0.1:" + fmt.Sprint(freePort(t))}
	s.credFile = filepath.Join(t.TempDir(), "s3.env")
	creds := fmt.Sprintf("# test\nAWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=\"%s\"\n", testS3Access, testS3Secret)
	if err := os.WriteFile(s.credFile, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.kill)
	c, err := minio.NewCore(s.addr, &minio.Options{Creds: credentials.NewStaticV4(testS3Access, testS3Secret, ""),
		BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
}

// start runs the server (again, on the same port and directory) and waits
// until it accepts connections.
func (s *s3Server) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--access", testS3Access, "--secret", testS3Secret, "--port", s.addr, "posix", s.dir)
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.kill()
			s.t.Fatalf("versitygw did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL (as a crash or a dropped link).
func (s *s3Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *s3Server) endpoint() string { return "http://" + s.addr }

func (s *s3Server) makeBucket(name string) {
	s.t.Helper()
	if err := s.client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// s3Settings is backup.s3 for this server.
func (s *s3Server) s3Settings() map[string]any {
	return map[string]any{"endpoint": s.endpoint(), "pathStyle": true, "credentialsFile": s.credFile}
}

// keys lists every object in bucket under prefix, and every multipart
// upload in progress there as "upload:KEY", each with prefix cut off.
func (s *s3Server) keys(bucket, prefix string) []string {
	s.t.Helper()
	ctx := context.Background()
	var out []string
	for o := range s.client.Client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			s.t.Fatal(o.Err)
		}
		out = append(out, strings.TrimPrefix(o.Key, prefix))
	}
	res, err := s.client.ListMultipartUploads(ctx, bucket, prefix, "", "", "", 1000)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, u := range res.Uploads {
		out = append(out, "upload:"+strings.TrimPrefix(u.Key, prefix))
	}
	sort.Strings(out)
	return out
}

func (s *s3Server) put(bucket, key string, data []byte) {
	s.t.Helper()
	if _, err := s.client.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)), "", "", minio.PutObjectOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *s3Server) get(bucket, key string) []byte {
	s.t.Helper()
	r, _, _, err := s.client.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// TestS3Contract runs the Destination contract on an S3 bucket of a real
// server, with the read-back on (each fixture its own bucket).
func TestS3Contract(t *testing.T) {
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
// server reports is live, not skipped: the server's ETag of a multipart
// object is the one the parts sent make, the size is the bytes sent, and
// with the read-back off a committed archive is still exactly the bytes.
func TestS3CommitConfirmsServerReport(t *testing.T) {
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
	info, err := srv.client.StatObject(context.Background(), "etag", "h/app/"+base, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Trim(info.ETag, `"`); got != u.multipartETag() || !strings.HasSuffix(got, "-3") || info.Size != int64(len(data)) {
		t.Fatalf("server reports ETag %s, size %d; the parts sent make %s, %d bytes", got, info.Size, u.multipartETag(), len(data))
	}
	if !bytes.Equal(srv.get("etag", "h/app/"+base), data) {
		t.Fatal("the object differs from the bytes sent")
	}
}
