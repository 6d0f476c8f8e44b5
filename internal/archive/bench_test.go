package archive

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
)

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// buildBenchTree generates a ~64 MiB mixed tree: 24 MiB incompressible in
// four files, ~40 MiB text-like in 1280 files of 32 KiB across 32 dirs.
func buildBenchTree(b *testing.B) (string, int64) {
	dir := filepath.Join(b.TempDir(), "data")
	var total int64
	for i := 0; i < 4; i++ {
		data := pseudoRandom(6<<20, int64(i))
		mustWrite(b, filepath.Join(dir, "blobs", "blob"+strconv.Itoa(i)), data, 0o644)
		total += int64(len(data))
	}
	for d := 0; d < 32; d++ {
		for f := 0; f < 40; f++ {
			data := textish(32<<10, int64(d*100+f))
			mustWrite(b, filepath.Join(dir, "text", "d"+strconv.Itoa(d), "f"+strconv.Itoa(f)+".txt"), data, 0o644)
			total += int64(len(data))
		}
	}
	return dir, total
}

func BenchmarkWrite(b *testing.B) {
	dir, total := buildBenchTree(b)
	for _, format := range Formats {
		b.Run(format, func(b *testing.B) {
			b.SetBytes(total)
			var out int64
			for i := 0; i < b.N; i++ {
				cw := &countWriter{}
				if _, err := Write(context.Background(), cw, []string{dir}, Options{Format: format, Logger: quietLogger}); err != nil {
					b.Fatal(err)
				}
				out = cw.n
			}
			b.ReportMetric(float64(out)/float64(total), "ratio")
		})
	}
}

// BenchmarkCaptureSmallFiles measures the walk's per-entry cost: 20,000
// files of 64 bytes in 200 directories, captured uncompressed.
func BenchmarkCaptureSmallFiles(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "data")
	for d := 0; d < 200; d++ {
		for f := 0; f < 100; f++ {
			mustWrite(b, filepath.Join(dir, "d"+strconv.Itoa(d), "f"+strconv.Itoa(f)), textish(64, int64(f)), 0o644)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Capture(context.Background(), &countWriter{}, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteManifest is BenchmarkWrite of tar.gz and tar.zst with and
// without the manifest (backup.drill): the cost of hashing every file's
// content while it is archived.
func BenchmarkWriteManifest(b *testing.B) {
	dir, total := buildBenchTree(b)
	for _, format := range []string{FormatTarGz, FormatTarZst} {
		for _, man := range []bool{false, true} {
			b.Run(format+map[bool]string{false: "/plain", true: "/manifest"}[man], func(b *testing.B) {
				b.SetBytes(total)
				for i := 0; i < b.N; i++ {
					opts := Options{Format: format, Logger: quietLogger}
					var mw *ManifestWriter
					if man {
						mw = NewManifestWriter(&countWriter{})
						opts.Manifest = mw
					}
					if _, err := Write(context.Background(), &countWriter{}, []string{dir}, opts); err != nil {
						b.Fatal(err)
					}
					if mw != nil {
						mw.Close()
					}
				}
			})
		}
	}
}

// BenchmarkManifestSum is the per-byte cost the manifest adds: the
// SHA-256 of file content as the writer copies it.
func BenchmarkManifestSum(b *testing.B) {
	buf := pseudoRandom(copyBufSize, 1)
	b.SetBytes(int64(len(buf)))
	f := newFileSum()
	for i := 0; i < b.N; i++ {
		f.Write(buf)
	}
}
