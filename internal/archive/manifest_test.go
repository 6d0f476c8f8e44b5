package archive

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// manifestTree is buildTree plus a sparse file (its holes must hash as
// the zeros a restore reads).
func manifestTree(t *testing.T, dir string) []string {
	src, single := buildTree(t, dir)
	f, err := os.Create(filepath.Join(src, "sparse.img"))
	must(t, err)
	must(t, f.Truncate(8<<20))
	_, err = f.WriteAt([]byte("data in the middle"), 3<<20)
	must(t, err)
	must(t, f.Close())
	return []string{src, single}
}

func roots(paths []string) []string {
	var r []string
	for _, p := range paths {
		r = append(r, EntryName(p))
	}
	return r
}

func writeWithManifest(t *testing.T, file, format string, paths []string) *bytes.Buffer {
	var man bytes.Buffer
	mw := NewManifestWriter(&man)
	writeArchive(t, file, format, paths, Options{Manifest: mw})
	must(t, mw.Close())
	return &man
}

func extractInto(t *testing.T, file, format string) string {
	out := t.TempDir()
	if _, err := ExtractFile(context.Background(), file, format, out, ExtractOptions{Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkManifest(t *testing.T, out string, man []byte, paths []string) *ManifestCheck {
	t.Helper()
	c, err := CheckManifest(context.Background(), out, bytes.NewReader(man), roots(paths), 10)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A manifest written with the archive matches the archive's restore, and
// each kind of difference is reported.
func TestManifestMatchesRestore(t *testing.T) {
	for _, format := range []string{FormatTarGz, FormatZip} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			paths := manifestTree(t, dir)
			file := filepath.Join(dir, archiveExt(format))
			man := writeWithManifest(t, file, format, paths).Bytes()
			out := extractInto(t, file, format)
			c := checkManifest(t, out, man, paths)
			if !c.OK() || c.Entries < 15 || c.Unhashed != 0 {
				t.Fatalf("clean restore: %+v\n%s", c, man)
			}
			if !bytes.Contains(man, []byte(`sparse.img"`)) || !bytes.Contains(man, []byte(`/rel-link" "a/b/c/deep.txt"`)) {
				t.Fatalf("manifest lacks the sparse file or the symlink target:\n%s", man)
			}
			base := filepath.Join(out, EntryName(paths[0]))
			big := filepath.Join(base, "big.bin")
			b, err := os.ReadFile(big)
			must(t, err)
			b[len(b)/2] ^= 1
			must(t, os.WriteFile(big, b, 0o644))
			must(t, os.Chmod(filepath.Join(base, "run.sh"), 0o700))
			must(t, os.Remove(filepath.Join(base, "rel-link")))
			mustWrite(t, filepath.Join(base, "planted"), []byte("x"), 0o644)
			c = checkManifest(t, out, man, paths)
			got := strings.Join(c.Differences, "\n")
			for _, want := range []string{"big.bin: content differs", "run.sh: mode 0700, the manifest says 0755", "rel-link: missing from the restore", "entries restored that the manifest does not list"} {
				if !strings.Contains(got, want) {
					t.Errorf("differences lack %q:\n%s", want, got)
				}
			}
		})
	}
}

// Capture then Convert (captureFirst) gives the manifest Write gives.
func TestManifestConvertAgreesWithWrite(t *testing.T) {
	for _, format := range []string{FormatTarZst, FormatZip} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			paths := manifestTree(t, dir)
			want := writeWithManifest(t, filepath.Join(dir, "w."+format), format, paths).Bytes()
			var capture bytes.Buffer
			_, err := Capture(context.Background(), &capture, paths, Options{Format: format, Logger: quietLogger})
			must(t, err)
			var man bytes.Buffer
			mw := NewManifestWriter(&man)
			file := filepath.Join(dir, archiveExt(format))
			f, err := os.Create(file)
			must(t, err)
			_, err = Convert(context.Background(), f, &capture, Options{Format: format, Logger: quietLogger, Manifest: mw})
			must(t, err)
			must(t, f.Close())
			must(t, mw.Close())
			if format != FormatZip && !bytes.Equal(man.Bytes(), want) {
				t.Fatalf("Convert's manifest:\n%s\nWrite's:\n%s", man.Bytes(), want)
			}
			if c := checkManifest(t, extractInto(t, file, format), man.Bytes(), paths); !c.OK() {
				t.Fatalf("%+v", c)
			}
		})
	}
}

// A manifest line cannot be forged by a name: names are quoted; a
// malformed file is refused.
func TestManifestReadBack(t *testing.T) {
	var buf bytes.Buffer
	mw := NewManifestWriter(&buf)
	in := []ManifestEntry{
		{Type: ManifestFile, Mode: 0o644, Size: 3, Sum: bytes.Repeat([]byte{7}, 32), Name: "a\nf 0644 1 - \"x\"/b c"},
		{Type: ManifestSymlink, Mode: 0o777, Name: "l", Link: "t \"q\""},
		{Type: ManifestDir, Mode: 0o1750, Name: "d"},
		{Type: ManifestFile, Mode: 0o600, Size: 9, Name: "changed"},
	}
	for _, e := range in {
		mw.Add(e)
	}
	must(t, mw.Close())
	mr, err := NewManifestReader(bytes.NewReader(buf.Bytes()))
	must(t, err)
	for i := range in {
		e, err := mr.Next()
		must(t, err)
		if e.Name != in[i].Name || e.Link != in[i].Link || e.Mode != in[i].Mode || !bytes.Equal(e.Sum, in[i].Sum) || e.Type != in[i].Type || e.Size != in[i].Size {
			t.Fatalf("entry %d: %+v, want %+v", i, e, in[i])
		}
	}
	if _, err := mr.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	for _, bad := range []string{"", "junk\n", manifestHeader + "\nx 0644 1 - \"a\"\n", manifestHeader + "\nf 0644 1 abc \"a\"\n", manifestHeader + "\nl 0777 0 - \"a\"\n"} {
		mr, err := NewManifestReader(strings.NewReader(bad))
		if err == nil {
			_, err = mr.Next()
		}
		if err == nil || err == io.EOF {
			t.Errorf("%q accepted", bad)
		}
	}
}
