package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// FuzzVerifyRestoreAgree builds a tar.gz from fuzzed entry names (one per
// line) and types (one letter each: d dir, r file, l symlink, h hard link
// to the first name, f fifo, c device) and checks that VerifyFile accepts
// it exactly when ExtractFile does, with the same message, and that
// extraction writes nothing beside its target.
func FuzzVerifyRestoreAgree(f *testing.F) {
	f.Add("d/\nd/s\nd/s/x", "dlr")
	f.Add("d/\nd/f\nd/h", "drh")
	f.Add("data", "l")
	f.Add("./\na\na", "drr")
	f.Add("a/\na/b/\na/b\na/b/c", "ddrr")
	f.Add("x/\nx/p\nx/d/\nx/d/../e", "dfdr")
	f.Fuzz(func(t *testing.T, names, types string) {
		lines := strings.Split(names, "\n")
		if len(lines) > 8 || types == "" {
			return
		}
		var buf bytes.Buffer
		zw := kgzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for i, n := range lines {
			if len(n) > 64 {
				return
			}
			h := tar.Header{Name: n, Mode: 0o755}
			switch types[i%len(types)] {
			case 'd':
				h.Typeflag = tar.TypeDir
			case 'l':
				h.Typeflag, h.Linkname = tar.TypeSymlink, "/"
			case 'h':
				h.Typeflag, h.Linkname = tar.TypeLink, lines[0]
			case 'f':
				h.Typeflag = tar.TypeFifo
			case 'c':
				h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, 1, 3
			default:
				h.Typeflag, h.Size = tar.TypeReg, 1
			}
			if tw.WriteHeader(&h) != nil {
				return
			}
			if h.Size == 1 {
				tw.Write([]byte{'x'})
			}
		}
		if tw.Close() != nil || zw.Close() != nil {
			return
		}
		dir := t.TempDir()
		arch := filepath.Join(dir, "a.tar.gz")
		must(t, os.WriteFile(arch, buf.Bytes(), 0o644))
		base := filepath.Join(dir, "base")
		target := filepath.Join(base, "t")
		must(t, os.MkdirAll(target, 0o755))
		_, err := ExtractFile(context.Background(), arch, FormatTarGz, target, ExtractOptions{Logger: quietLogger})
		assertVerifyAgrees(t, arch, FormatTarGz, err)
		ents, _ := os.ReadDir(base)
		if len(ents) != 1 {
			t.Errorf("extraction wrote beside its target: %v", ents)
		}
	})
}
