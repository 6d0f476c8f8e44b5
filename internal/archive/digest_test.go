package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// TestExtractDigestCoversWholeFile: ExtractOptions.Digest receives exactly
// the archive file's bytes, for every format, including bytes after the
// end of the compressed stream (xz stream padding).
func TestExtractDigestCoversWholeFile(t *testing.T) {
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			src, single := buildTree(t, filepath.Join(dir, "data"))
			arch := filepath.Join(dir, archiveExt(format))
			writeArchive(t, arch, format, []string{src, single}, Options{})
			if format == FormatTarXz { // xz allows zero stream padding; the other decoders refuse trailing bytes
				// Trailing bytes after the stream: tar readers ignore
				// them, the digest must not.
				f, err := os.OpenFile(arch, os.O_APPEND|os.O_WRONLY, 0)
				must(t, err)
				_, err = f.Write(make([]byte, 10240))
				must(t, err)
				must(t, f.Close())
			}
			data, err := os.ReadFile(arch)
			must(t, err)
			want := sha256.Sum256(data)
			h := sha256.New()
			target := filepath.Join(dir, "out")
			must(t, os.Mkdir(target, 0o755))
			if _, err := ExtractFile(context.Background(), arch, format, target, ExtractOptions{Digest: h, Logger: quietLogger}); err != nil {
				t.Fatal(err)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Errorf("digest %x, want %x (file of %d bytes)", got, want, len(data))
			}
		})
	}
}
