package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// tarGzOf builds a tar.gz of hdrs (a regular file's body is its Linkname
// field's value when Typeflag is TypeReg).
func tarGzOf(t *testing.T, hdrs []tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := kgzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body, h.Linkname = h.Linkname, ""
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func openDirT(t *testing.T, p string) *os.File {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestExtractAtRoots: one pass sends each data path's entries to its own
// directory, skips the rest (still checked), hashes every byte of the
// stream, and refuses a hard link from one data path into another.
func TestExtractAtRoots(t *testing.T) {
	hdrs := []tar.Header{
		{Name: "srv/a/", Typeflag: tar.TypeDir},
		{Name: "srv/a/f", Typeflag: tar.TypeReg, Linkname: "in a", Mode: 0o640},
		{Name: "srv/b/", Typeflag: tar.TypeDir},
		{Name: "srv/b/g", Typeflag: tar.TypeReg, Linkname: "in b", Mode: 0o600},
		{Name: "srv/c/", Typeflag: tar.TypeDir},
		{Name: "srv/c/h", Typeflag: tar.TypeReg, Linkname: "not selected"},
	}
	data := tarGzOf(t, hdrs)
	tmp := t.TempDir()
	ra, rb := openDirT(t, filepath.Join(tmp, "ra")), openDirT(t, filepath.Join(tmp, "rb"))
	h := sha256.New()
	opts := ExtractOptions{Digest: h, Roots: []StageRoot{{Path: "/srv/a", Dir: ra}, {Path: "/srv/b", Dir: rb}}}
	if _, err := ExtractAt(context.Background(), bytes.NewReader(data), int64(len(data)), FormatTarGz, nil, opts); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"ra/srv/a/f": "in a", "rb/srv/b/g": "in b"} {
		if got, err := os.ReadFile(filepath.Join(tmp, p)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	for _, p := range []string{"ra/srv/b", "rb/srv/a", "ra/srv/c", "rb/srv/c"} {
		if _, err := os.Lstat(filepath.Join(tmp, p)); err == nil {
			t.Errorf("%s extracted into the wrong root", p)
		}
	}
	if sum := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Error("the digest is not of the whole stream")
	}

	cross := tarGzOf(t, append(hdrs[:4:4], tar.Header{Name: "srv/b/link", Typeflag: tar.TypeLink, Linkname: "srv/a/f"}))
	rc, rd := openDirT(t, filepath.Join(tmp, "rc")), openDirT(t, filepath.Join(tmp, "rd"))
	opts = ExtractOptions{Roots: []StageRoot{{Path: "/srv/a", Dir: rc}, {Path: "/srv/b", Dir: rd}}}
	_, err := ExtractAt(context.Background(), bytes.NewReader(cross), int64(len(cross)), FormatTarGz, nil, opts)
	if !errors.Is(err, ErrUnsafeName) {
		t.Fatalf("hard link across data paths: %v, want ErrUnsafeName", err)
	}
}
