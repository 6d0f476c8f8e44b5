package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCaptureConvert: Capture then Convert gives, in every format, an
// archive that real tools and ExtractFile restore to the source tree; for
// the tar formats the compressed stream is the capture byte for byte.
func TestCaptureConvert(t *testing.T) {
	root := os.Geteuid() == 0
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			src, single := buildTree(t, filepath.Join(dir, "data"))
			capPath := filepath.Join(dir, "capture.tar")
			f, err := os.Create(capPath)
			must(t, err)
			var cprog Progress
			cst, err := Capture(context.Background(), f, []string{src, single}, Options{Format: format, Logger: quietLogger, Progress: &cprog})
			must(t, err)
			must(t, f.Close())
			if cprog.Files() != cst.Files || cprog.Bytes() != cst.BytesRead || cst.Files == 0 {
				t.Errorf("capture progress files=%d bytes=%d, stats %+v", cprog.Files(), cprog.Bytes(), cst)
			}
			if format == FormatZip && cst.Hardlinks != 0 {
				t.Errorf("capture for zip has %d hard links", cst.Hardlinks)
			}

			arch := filepath.Join(dir, archiveExt(format))
			in, err := os.Open(capPath)
			must(t, err)
			out, err := os.Create(arch)
			must(t, err)
			var prog Progress
			st, err := Convert(context.Background(), out, in, Options{Format: format, Threads: 4, Logger: quietLogger, Progress: &prog})
			must(t, err)
			in.Close()
			must(t, out.Close())
			if st.Files != cst.Files || st.Dirs != cst.Dirs || st.Symlinks != cst.Symlinks || st.Hardlinks != cst.Hardlinks || st.BytesRead != cst.BytesRead {
				t.Errorf("convert stats %+v, capture stats %+v", st, cst)
			}
			if prog.Files() != st.Files || prog.Bytes() == 0 {
				t.Errorf("convert progress files=%d bytes=%d", prog.Files(), prog.Bytes())
			}
			if _, err := VerifyFile(context.Background(), arch, format); err != nil {
				t.Fatal(err)
			}

			isTar := format != FormatZip
			want := snapshot(t, src, snapOpts{dirMTimes: true, owners: isTar && root, hardlinks: isTar})
			tool, _ := toolCommand(format, arch, "")
			if _, err := exec.LookPath(tool); err == nil && (format == FormatZip || format == FormatTarGz || lookOK(compressorTool(format))) {
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
			}
			dst := filepath.Join(dir, "x")
			must(t, os.Mkdir(dst, 0o755))
			if _, err := ExtractFile(context.Background(), arch, format, dst, ExtractOptions{SameOwner: root}); err != nil {
				t.Fatal(err)
			}
			got := snapshot(t, filepath.Join(dst, EntryName(src)), snapOpts{dirMTimes: true, owners: root, hardlinks: isTar})
			if d := cmp.Diff(snapshot(t, src, snapOpts{dirMTimes: true, owners: root, hardlinks: isTar}), got); d != "" {
				t.Errorf("tree extracted by ExtractFile differs (-want +got):\n%s", d)
			}

			if isTar {
				a, err := os.Open(arch)
				must(t, err)
				defer a.Close()
				zr, done, err := newDecompressor(a, format)
				must(t, err)
				defer done()
				plain, err := io.ReadAll(zr)
				must(t, err)
				capture, err := os.ReadFile(capPath)
				must(t, err)
				if !bytes.Equal(plain, capture) {
					t.Errorf("decompressed archive (%d bytes) is not the capture (%d bytes)", len(plain), len(capture))
				}
			}
		})
	}
}

func lookOK(tool string) bool { _, err := exec.LookPath(tool); return err == nil }

func TestConvertCancelledAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	src, _ := buildTree(t, filepath.Join(dir, "data"))
	var capture bytes.Buffer
	if _, err := Capture(context.Background(), &capture, []string{src}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{FormatTarGz, FormatZip} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Convert(ctx, io.Discard, bytes.NewReader(capture.Bytes()), Options{Format: format, Logger: quietLogger})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled Convert: %v", format, err)
		}
		_, err = Convert(context.Background(), io.Discard, bytes.NewReader(capture.Bytes()[:capture.Len()/2+100]), Options{Format: format, Logger: quietLogger})
		if err == nil {
			t.Errorf("%s: truncated capture converted without error", format)
		}
	}
}
