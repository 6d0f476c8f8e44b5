package archive

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func toolCommand(format, archive, dir string) (tool string, args []string) {
	switch format {
	case FormatZip:
		return "unzip", []string{"-q", archive, "-d", dir}
	case FormatTarGz:
		return "tar", []string{"-xpf", archive, "-C", dir, "--same-owner", "-z"}
	case FormatTarXz:
		return "tar", []string{"-xpf", archive, "-C", dir, "--same-owner", "-J"}
	case FormatTarBz2:
		return "tar", []string{"-xpf", archive, "-C", dir, "--same-owner", "-j"}
	case FormatTarZst:
		return "tar", []string{"-xpf", archive, "-C", dir, "--same-owner", "--zstd"}
	}
	panic(format)
}

// compressorTool is the external program tar needs for a format.
func compressorTool(format string) string {
	return map[string]string{FormatTarGz: "gzip", FormatTarXz: "xz", FormatTarBz2: "bzip2", FormatTarZst: "zstd", FormatZip: "unzip"}[format]
}

// TestRoundTrip writes every format, extracts it with the real tool and with
// ExtractFile, and compares the trees with the source.
func TestRoundTrip(t *testing.T) {
	root := os.Geteuid() == 0
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			src, single := buildTree(t, filepath.Join(dir, "data"))
			arch := filepath.Join(dir, archiveExt(format))
			st := writeArchive(t, arch, format, []string{src, single}, Options{Threads: 4})

			if st.Skipped != 1 || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "fifo") {
				t.Errorf("want exactly the fifo skipped with a warning, got Skipped=%d Warnings=%q", st.Skipped, st.Warnings)
			}
			wantFiles, wantLinks := int64(11), int64(1)
			if root {
				wantFiles++
			}
			if format == FormatZip {
				wantFiles, wantLinks = wantFiles+1, 0
			}
			if st.Files != wantFiles || st.Hardlinks != wantLinks || st.Symlinks != 2 {
				t.Errorf("stats: %+v; want Files=%d Hardlinks=%d Symlinks=2", st, wantFiles, wantLinks)
			}

			isTar := format != FormatZip
			want := snapshot(t, src, snapOpts{dirMTimes: true, owners: isTar && root, hardlinks: isTar})
			// Guard against a vacuous comparison.
			if len(want) < 20 || (isTar && want["hard1.txt"].LinkTo != "a/hard2.txt") ||
				(root && isTar && want["owned/file.txt"].UID != otherUID) || want["rel-link"].Target != "a/b/c/deep.txt" ||
				want["secret.txt"].Mode != 0o600 || want["run.sh"].Mode != 0o755 || want["big.bin"].Size != 3<<20 {
				t.Fatalf("source snapshot is not what the test expects: %+v", want)
			}

			t.Run("tool", func(t *testing.T) {
				tool, _ := toolCommand(format, arch, "")
				requireTool(t, tool)
				requireTool(t, compressorTool(format))
				dst := filepath.Join(dir, "tool")
				must(t, os.Mkdir(dst, 0o755))
				tool, args := toolCommand(format, arch, dst)
				if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
					t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
				}
				got := snapshot(t, filepath.Join(dst, EntryName(src)), snapOpts{dirMTimes: true, owners: isTar && root, hardlinks: isTar})
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("tree extracted by %s differs (-want +got):\n%s", tool, d)
				}
				b, err := os.ReadFile(filepath.Join(dst, EntryName(single)))
				if err != nil || string(b) != "key = value\n" {
					t.Errorf("single-file data path: %q, %v", b, err)
				}
			})

			t.Run("ExtractFile", func(t *testing.T) {
				dst := filepath.Join(dir, "x")
				must(t, os.Mkdir(dst, 0o755))
				xst, err := ExtractFile(context.Background(), arch, format, dst, ExtractOptions{SameOwner: root})
				if err != nil {
					t.Fatal(err)
				}
				got := snapshot(t, filepath.Join(dst, EntryName(src)), snapOpts{dirMTimes: true, owners: root, hardlinks: isTar})
				want := snapshot(t, src, snapOpts{dirMTimes: true, owners: root, hardlinks: isTar})
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("tree extracted by ExtractFile differs (-want +got):\n%s", d)
				}
				if xst.Files != st.Files || xst.Hardlinks != st.Hardlinks || xst.Symlinks != st.Symlinks || xst.Dirs != st.Dirs || xst.BytesRead != st.BytesRead {
					t.Errorf("extract stats %+v differ from write stats %+v", xst, st)
				}
				b, err := os.ReadFile(filepath.Join(dst, EntryName(single)))
				if err != nil || string(b) != "key = value\n" {
					t.Errorf("single-file data path: %q, %v", b, err)
				}

				// Prefix filter: only the single-file data path.
				dst2 := filepath.Join(dir, "x2")
				must(t, os.Mkdir(dst2, 0o755))
				if _, err := ExtractFile(context.Background(), arch, format, dst2, ExtractOptions{Prefixes: []string{single}}); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Lstat(filepath.Join(dst2, EntryName(src))); !os.IsNotExist(err) {
					t.Errorf("prefix filter extracted %s: %v", EntryName(src), err)
				}
				if _, err := os.Stat(filepath.Join(dst2, EntryName(single))); err != nil {
					t.Errorf("prefix filter: %v", err)
				}
			})
		})
	}
}

// TestSymlinkedDataPath: a data path that is a symlink (systemd DynamicUser
// layout) is archived as its target's contents under the data path's name.
func TestSymlinkedDataPath(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "private/app/state.db"), []byte("state"), 0o600)
	must(t, os.Symlink("private/app", filepath.Join(dir, "app")))
	arch := filepath.Join(dir, "a.tar.gz")
	writeArchive(t, arch, FormatTarGz, []string{filepath.Join(dir, "app")}, Options{})
	dst := t.TempDir()
	if _, err := ExtractFile(context.Background(), arch, FormatTarGz, dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dst, EntryName(dir), "app/state.db"))
	if err != nil || string(b) != "state" {
		t.Fatalf("got %q, %v", b, err)
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	var sink strings.Builder
	for _, tc := range []struct {
		name  string
		paths []string
		opts  Options
		want  string
	}{
		{"missing data path", []string{filepath.Join(dir, "nope")}, Options{Format: FormatTarGz}, filepath.Join(dir, "nope")},
		{"relative data path", []string{"rel/path"}, Options{Format: FormatTarGz}, "rel/path"},
		{"bad format", []string{dir}, Options{Format: "rar"}, "rar"},
		{"bad exclude", []string{dir}, Options{Format: FormatZip, Exclude: []string{"[a"}}, "[a"},
		{"bad level", []string{dir}, Options{Format: FormatTarXz, Level: 42}, "42"},
	} {
		_, err := Write(context.Background(), &sink, tc.paths, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want error mentioning %q", tc.name, err, tc.want)
		}
	}
}

// TestArchiveInsideDataPath: writing the archive into a data path skips it.
func TestArchiveInsideDataPath(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), []byte("x"), 0o644)
	f, err := os.Create(filepath.Join(dir, "out.tar.zst"))
	must(t, err)
	defer f.Close()
	st, err := Write(context.Background(), f, []string{dir}, Options{Format: FormatTarZst})
	must(t, err)
	if st.Files != 1 || st.Skipped != 1 {
		t.Fatalf("stats %+v", st)
	}
}
