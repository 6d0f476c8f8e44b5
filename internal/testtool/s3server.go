package testtool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Server is a real S3 server for tests: Versity S3 Gateway over a POSIX
// directory (buckets are its subdirectories), on a free port of 127.0.0.1.
// One copy serves every package's tests (internal/worker, cmd/backup-worker).
type S3Server struct {
	t        testing.TB
	bin, dir string
	region   string
	Addr     string      // host:port it listens on
	Client   *minio.Core // a client with the server's credentials
	CredFile string      // an AWS_ACCESS_KEY_ID=/AWS_SECRET_ACCESS_KEY= file that logs in
	cmd      *exec.Cmd
	posix    []string // options of the posix backend
}

const (
	// S3Access and S3Secret are the server's root credentials.
	S3Access = "backupgen-test-access"
	S3Secret = "backupgen-test-secret-0123456789"
	// VersitygwInstall is the go install argument .ci/run uses.
	VersitygwInstall = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)

// StartS3Server starts a versitygw for region us-east-1; it is killed
// when the test ends. Without versitygw the test skips (fails in CI).
func StartS3Server(t testing.TB) *S3Server { return StartS3ServerRegion(t, "us-east-1") }

// StartS3ServerRegion is StartS3Server for a server of region (requests
// signed for another region are refused, as by AWS).
func StartS3ServerRegion(t testing.TB, region string) *S3Server {
	t.Helper()
	return StartS3ServerOptions(t, region)
}

// StartS3ServerOptions is StartS3ServerRegion with options of versitygw's
// posix backend (e.g. --data-integrity-etag: ETags from CRC64NVME, no
// MD5 anywhere).
func StartS3ServerOptions(t testing.TB, region string, posix ...string) *S3Server {
	t.Helper()
	bin := RequireGoTool(t, "versitygw", VersitygwInstall)
	s := &S3Server{t: t, bin: bin, dir: t.TempDir(), region: region, Addr: "127.0.0.1:" + fmt.Sprint(FreePort(t)), posix: posix}
	s.CredFile = filepath.Join(t.TempDir(), "s3.env")
	creds := fmt.Sprintf("# test\nAWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=\"%s\"\n", S3Access, S3Secret)
	if err := os.WriteFile(s.CredFile, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Kill)
	c, err := minio.NewCore(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(S3Access, S3Secret, ""),
		BucketLookup: minio.BucketLookupPath, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	s.Client = c
	return s
}

// Start runs the server (again, on the same port and directory) and waits
// until it accepts connections.
func (s *S3Server) Start() {
	s.t.Helper()
	args := append([]string{"--access", S3Access, "--secret", S3Secret, "--region", s.region, "--port", s.Addr, "posix"}, s.posix...)
	s.cmd = exec.Command(s.bin, append(args, s.dir)...)
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("tcp", s.Addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("versitygw did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL (as a crash or a dropped link).
func (s *S3Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Signal sends sig to the running server (SIGSTOP: a server that hangs).
func (s *S3Server) Signal(sig syscall.Signal) {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(sig)
	}
}

// Endpoint is the server's URL (plain HTTP).
func (s *S3Server) Endpoint() string { return "http://" + s.Addr }

// MakeBucket creates bucket name.
func (s *S3Server) MakeBucket(name string) {
	s.t.Helper()
	if err := s.Client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{Region: s.region}); err != nil {
		s.t.Fatal(err)
	}
}

// Keys lists every object in bucket under prefix, and every multipart
// upload in progress there as "upload:KEY", each with prefix cut off.
func (s *S3Server) Keys(bucket, prefix string) []string {
	s.t.Helper()
	ctx := context.Background()
	var out []string
	for o := range s.Client.Client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			s.t.Fatal(o.Err)
		}
		out = append(out, strings.TrimPrefix(o.Key, prefix))
	}
	res, err := s.Client.ListMultipartUploads(ctx, bucket, prefix, "", "", "", 1000)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, u := range res.Uploads {
		out = append(out, "upload:"+strings.TrimPrefix(u.Key, prefix))
	}
	sort.Strings(out)
	return out
}

// Put stores data as bucket/key.
func (s *S3Server) Put(bucket, key string, data []byte) {
	s.t.Helper()
	if _, err := s.Client.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)), "", "", minio.PutObjectOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// Get reads bucket/key.
func (s *S3Server) Get(bucket, key string) []byte {
	s.t.Helper()
	r, _, _, err := s.Client.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
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

// FreePort is a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
