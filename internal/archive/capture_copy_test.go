//go:build linux

package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// kernelTree writes the data of the kernel-copy tests into data and
// returns the content bytes copy_file_range should copy (files and data
// extents of at least kernelCopyMin): a 20 MiB file of an odd size (three
// chunks), files just at and below kernelCopyMin, small and empty files,
// a hard link, a symlink, a file with a user xattr and an ACL, one owned
// by someone else, and a 16 MiB sparse file with two 128 KiB data extents
// and an 8 KiB one, ending in a hole.
func kernelTree(t *testing.T, data string) (kernelBytes int64) {
	t.Helper()
	big := pseudoRandom(20<<20+123, 11)
	mustWrite(t, filepath.Join(data, "big.bin"), big, 0o644)
	mustWrite(t, filepath.Join(data, "at-min.bin"), pseudoRandom(kernelCopyMin, 12), 0o600)
	mustWrite(t, filepath.Join(data, "below-min.bin"), pseudoRandom(kernelCopyMin-1, 13), 0o644)
	mustWrite(t, filepath.Join(data, "sub", "small.txt"), textish(3000, 14), 0o644)
	mustWrite(t, filepath.Join(data, "sub", "empty"), nil, 0o644)
	must(t, os.Link(filepath.Join(data, "big.bin"), filepath.Join(data, "sub", "big.link")))
	must(t, os.Symlink("../big.bin", filepath.Join(data, "sub", "big.sym")))
	attr := filepath.Join(data, "attr.txt")
	mustWrite(t, attr, []byte("attributes\n"), 0o640)
	for _, args := range [][]string{{"setfattr", "-n", "user.comment", "-v", "kernel copy", attr}, {"setfacl", "-m", "u:65534:r", attr}} {
		if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, b)
		}
	}
	owned := filepath.Join(data, "owned.bin")
	mustWrite(t, owned, pseudoRandom(100<<10, 15), 0o640)
	must(t, os.Lchown(owned, otherUID, otherGID))
	sp, err := os.Create(filepath.Join(data, "sparse.img"))
	must(t, err)
	for _, x := range []extent{{0, 128 << 10}, {1 << 20, 128 << 10}, {5 << 20, 8 << 10}} {
		_, err := sp.WriteAt(pseudoRandom(int(x.len), x.off), x.off)
		must(t, err)
	}
	must(t, sp.Truncate(16<<20))
	must(t, sp.Close())
	return int64(len(big)) + kernelCopyMin + 100<<10 + 2*128<<10
}

// kernelCopies reports whether copy_file_range copies from a file in src
// to a file in dst on this kernel (Linux 5.19 and later: only within one
// file system).
func kernelCopies(t *testing.T, src, dst string) bool {
	t.Helper()
	in, out := filepath.Join(src, ".probe-in"), filepath.Join(dst, ".probe-out")
	mustWrite(t, in, []byte("probe"), 0o600)
	defer os.Remove(in)
	defer os.Remove(out)
	fi, err := os.Open(in)
	must(t, err)
	defer fi.Close()
	fo, err := os.Create(out)
	must(t, err)
	defer fo.Close()
	n, err := unix.CopyFileRange(int(fi.Fd()), nil, int(fo.Fd()), nil, 5, 0)
	return err == nil && n == 5
}

// TestCaptureKernelCopyGNUTar: the tar capture copies file contents with
// copy_file_range when data and capture share a file system (ext4, tmpfs)
// and reads and writes them when the kernel refuses (data on tmpfs, the
// capture on ext4: EXDEV); either way the capture is byte for byte the
// uncompressed tar Write produces (and the capture Capture writes into a
// buffer, which never uses the kernel), GNU tar finds no difference
// between it and the data (--compare, xattrs, ACLs, owners, mtimes,
// sparse content) and extracts it to the same tree with the holes kept.
// Stats.CopiedInKernel counts exactly the bytes of the files and extents
// of at least kernelCopyMin when the kernel copies, none when it refuses.
func TestCaptureKernelCopyGNUTar(t *testing.T) {
	for _, tool := range []string{"tar", "setfattr", "getfattr", "setfacl", "getfacl"} {
		requireTool(t, tool)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount file systems")
	}
	root := t.TempDir()
	ext4, tmpfs := filepath.Join(root, "ext4"), filepath.Join(root, "tmpfs")
	testtool.MountExt4(t, ext4, "256M")
	testtool.MountTmpfs(t, tmpfs, "128m")
	for _, c := range []struct{ name, data, capture string }{
		{"ext4", ext4, ext4},
		{"tmpfs", tmpfs, tmpfs},
		{"tmpfs data, ext4 capture (EXDEV: read and write)", tmpfs, ext4},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(c.data, "data")
			defer os.RemoveAll(data)
			want := kernelTree(t, data)
			kernel := kernelCopies(t, c.data, c.capture)
			if c.data != c.capture && kernel {
				t.Logf("this kernel copies across file systems: the read/write fallback is not exercised here")
			}
			if !kernel {
				want = 0
			}
			capPath := filepath.Join(c.capture, "capture.tar")
			defer os.Remove(capPath)
			f, err := os.Create(capPath)
			must(t, err)
			opts := Options{Format: FormatTarGz, Logger: quietLogger}
			st, err := Capture(context.Background(), f, []string{data}, opts)
			must(t, err)
			must(t, f.Close())
			if st.CopiedInKernel != want {
				t.Errorf("CopiedInKernel %d, want %d (kernel copies here: %v)", st.CopiedInKernel, want, kernel)
			}
			if c.data == c.capture && st.CopiedInKernel == 0 {
				t.Errorf("nothing copied by the kernel with data and capture on one %s", c.name)
			}
			got, err := os.ReadFile(capPath)
			must(t, err)
			var buffered, written bytes.Buffer
			bst, err := Capture(context.Background(), &buffered, []string{data}, opts)
			must(t, err)
			if bst.CopiedInKernel != 0 {
				t.Errorf("capture into a buffer: CopiedInKernel %d", bst.CopiedInKernel)
			}
			// Write's tar.gz, decompressed: the tar stream Write compresses.
			var gz bytes.Buffer
			_, err = Write(context.Background(), &gz, []string{data}, opts)
			must(t, err)
			zr, done, err := newDecompressor(&gz, FormatTarGz)
			must(t, err)
			_, err = written.ReadFrom(zr)
			done()
			must(t, err)
			if !bytes.Equal(got, buffered.Bytes()) || !bytes.Equal(got, written.Bytes()) {
				t.Errorf("capture (%d bytes) differs from the buffered capture (%d) or Write's tar (%d)", len(got), buffered.Len(), written.Len())
			}
			gnuTarAgrees(t, capPath, data, filepath.Join(c.capture, "out"))
		})
	}
}

// gnuTarAgrees checks with GNU tar that the tar at arch holds exactly the
// data path data: --compare finds no difference, and the tree it extracts
// into out has data's metadata, xattrs, ACLs, content and holes.
func gnuTarAgrees(t *testing.T, arch, data, out string) {
	t.Helper()
	if b, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--acls", "--compare", "-f", arch, "-C", "/").CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("tar --compare: %v\n%s", err, b)
	}
	must(t, os.Mkdir(out, 0o755))
	defer os.RemoveAll(out)
	if b, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--acls", "-xf", arch, "-C", out).CombinedOutput(); err != nil || len(b) > 0 {
		t.Fatalf("tar -x: %v\n%s", err, b)
	}
	ex := filepath.Join(out, EntryName(data))
	o := snapOpts{dirMTimes: true, owners: true, hardlinks: true}
	if d := cmp.Diff(snapshot(t, data, o), snapshot(t, ex, o)); d != "" {
		t.Errorf("tree extracted by GNU tar differs (-want +got):\n%s", d)
	}
	if w, g := attrsOf(t, filepath.Join(data, "attr.txt")), attrsOf(t, filepath.Join(ex, "attr.txt")); w != g || !strings.Contains(g, "user.comment") {
		t.Errorf("extracted attributes\n%s\nwant\n%s", g, w)
	}
	if b := blocksOf(t, filepath.Join(ex, "sparse.img")); b*512 > 1<<20 {
		t.Errorf("extracted sparse file allocates %d blocks: holes lost", b)
	}
}

// TestCaptureChangedDuringKernelCopy: a file that shrinks and one that
// grows between two chunks of the copy (kernel copy on ext4; read and
// write across file systems) keep the changed-file rules: both are listed
// in Stats.Changed and warned about, the shrunk one is padded with zeros
// to its size, the grown one cut at it, and GNU tar extracts the capture.
func TestCaptureChangedDuringKernelCopy(t *testing.T) {
	requireTool(t, "tar")
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount file systems")
	}
	root := t.TempDir()
	ext4, tmpfs := filepath.Join(root, "ext4"), filepath.Join(root, "tmpfs")
	testtool.MountExt4(t, ext4, "256M")
	testtool.MountTmpfs(t, tmpfs, "128m")
	for _, c := range []struct{ name, data, capture string }{
		{"kernel copy", ext4, ext4},
		{"read and write", tmpfs, ext4},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(c.data, "data")
			defer os.RemoveAll(data)
			orig := pseudoRandom(3*kernelCopyChunk, 21)
			const shrunkTo = kernelCopyChunk + 7
			mustWrite(t, filepath.Join(data, "grow.bin"), orig, 0o644)
			mustWrite(t, filepath.Join(data, "shrink.bin"), orig, 0o644)
			mustWrite(t, filepath.Join(data, "steady.bin"), orig[:1<<20], 0o644)
			var current string
			testHookAfterOpen = func(p string) { current = p }
			chunks := 0
			testHookCaptureChunk = func() {
				if chunks++; chunks > 1 {
					return // only after the first chunk of each file
				}
				switch filepath.Base(current) {
				case "shrink.bin":
					must(t, os.Truncate(current, shrunkTo))
				case "grow.bin":
					f, err := os.OpenFile(current, os.O_APPEND|os.O_WRONLY, 0)
					must(t, err)
					_, err = f.Write(make([]byte, 5000))
					must(t, err)
					must(t, f.Close())
				}
			}
			testHookBeforeOpen = func(string) { chunks = 0 }
			defer func() { testHookAfterOpen, testHookBeforeOpen, testHookCaptureChunk = nil, nil, nil }()
			capPath := filepath.Join(c.capture, "capture.tar")
			defer os.Remove(capPath)
			f, err := os.Create(capPath)
			must(t, err)
			st, err := Capture(context.Background(), f, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
			must(t, err)
			must(t, f.Close())
			if (c.data == c.capture) != (st.CopiedInKernel > 0) {
				t.Errorf("CopiedInKernel %d", st.CopiedInKernel)
			}
			wantChanged := []string{filepath.Join(data, "grow.bin"), filepath.Join(data, "shrink.bin")}
			if st.Changed != 2 || !cmp.Equal(st.ChangedFiles, wantChanged) {
				t.Errorf("Changed %d %v, want %v", st.Changed, st.ChangedFiles, wantChanged)
			}
			if n := strings.Count(strings.Join(st.Warnings, "\n"), "file changed as we read it"); n != 2 {
				t.Errorf("warnings %q", st.Warnings)
			}
			out := filepath.Join(c.capture, "out")
			must(t, os.Mkdir(out, 0o755))
			defer os.RemoveAll(out)
			if b, err := exec.Command("tar", "-xf", capPath, "-C", out).CombinedOutput(); err != nil {
				t.Fatalf("GNU tar: %v\n%s", err, b)
			}
			base := filepath.Join(out, EntryName(data))
			shrunk, _ := os.ReadFile(filepath.Join(base, "shrink.bin"))
			if len(shrunk) != len(orig) || !bytes.Equal(shrunk[:shrunkTo], orig[:shrunkTo]) || !bytes.Equal(shrunk[shrunkTo:], make([]byte, len(orig)-shrunkTo)) {
				t.Errorf("shrunk file: %d bytes, not the first %d bytes and zeros", len(shrunk), shrunkTo)
			}
			if grown, _ := os.ReadFile(filepath.Join(base, "grow.bin")); !bytes.Equal(grown, orig) {
				t.Errorf("grown file: %d bytes, want the %d it had", len(grown), len(orig))
			}
			if steady, _ := os.ReadFile(filepath.Join(base, "steady.bin")); !bytes.Equal(steady, orig[:1<<20]) {
				t.Errorf("steady file differs")
			}
		})
	}
}

// TestKernelRefused: the errors that send the copy to read and write, and
// one that does not.
func TestKernelRefused(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.EXDEV, syscall.EINVAL, syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.EPERM, syscall.EBADF} {
		if !kernelRefused(e) {
			t.Errorf("%v not a refusal", e)
		}
	}
	for _, err := range []error{syscall.EIO, syscall.ENOSPC, errors.New("other")} {
		if kernelRefused(err) {
			t.Errorf("%v taken for a refusal", err)
		}
	}
}
