//go:build linux

package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/testtool"
	"github.com/google/go-cmp/cmp"
	kgzip "github.com/klauspost/compress/gzip"
)

// archiveEntry is everything an archive stores about one entry.
type archiveEntry struct {
	Name, Type, Link, Uname, Gname, SHA, Extra string
	Mode                                       int64
	UID, GID                                   int
	MTime                                      int64 // ns
	Size                                       int64
}

// tarEntries lists the entries of a tar.gz held in memory.
func tarEntries(t *testing.T, data []byte) []archiveEntry {
	t.Helper()
	zr, err := kgzip.NewReader(bytes.NewReader(data))
	must(t, err)
	tr := tar.NewReader(zr)
	var out []archiveEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		hs := sha256.New()
		n, err := io.Copy(hs, tr)
		must(t, err)
		out = append(out, archiveEntry{Name: h.Name, Type: string(h.Typeflag), Link: h.Linkname, Uname: h.Uname, Gname: h.Gname,
			SHA: hex.EncodeToString(hs.Sum(nil)), Mode: h.Mode, UID: h.Uid, GID: h.Gid, MTime: h.ModTime.UnixNano(), Size: n})
	}
}

// zipEntries lists the entries of a zip held in memory.
func zipEntries(t *testing.T, data []byte) []archiveEntry {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	must(t, err)
	var out []archiveEntry
	for _, f := range zr.File {
		rc, err := f.Open()
		must(t, err)
		hs := sha256.New()
		n, err := io.Copy(hs, rc)
		must(t, err)
		rc.Close()
		out = append(out, archiveEntry{Name: f.Name, Type: fmt.Sprint(f.Method), SHA: hex.EncodeToString(hs.Sum(nil)),
			Mode: int64(f.ExternalAttrs), MTime: f.Modified.UnixNano(), Size: n, Extra: hex.EncodeToString(f.Extra)})
	}
	return out
}

// mountXFS mounts a fresh reflink-capable XFS at dir/xfs and returns it.
func mountXFS(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "xfs")
	testtool.MountXFS(t, dir, "300M")
	return dir
}

// buildCloneTree is buildTree plus what a clone could get wrong: special
// mode bits, unreadable and read-only directories, sub-second mtimes, a
// hard link whose other name is outside the data path, excluded files, a
// symlinked data path. It returns the data paths.
func buildCloneTree(t *testing.T, dir string) []string {
	t.Helper()
	src, single := buildTree(t, filepath.Join(dir, "data"))
	ns := time.Date(2022, 1, 2, 3, 4, 5, 123456789, time.UTC)
	setuid := filepath.Join(src, "modes", "setuid")
	mustWrite(t, setuid, []byte("#!/bin/sh\n"), 0o755)
	must(t, os.Chmod(setuid, 0o755|fs.ModeSetuid|fs.ModeSetgid))
	mustWrite(t, filepath.Join(src, "modes", "none"), []byte("no access\n"), 0)
	mustWrite(t, filepath.Join(src, "modes", "sticky", "f"), []byte("f\n"), 0o644)
	must(t, os.Chmod(filepath.Join(src, "modes", "sticky"), 0o777|fs.ModeSticky))
	mustWrite(t, filepath.Join(src, "modes", "setgid-dir", "f"), []byte("g\n"), 0o644)
	must(t, os.Chmod(filepath.Join(src, "modes", "setgid-dir"), 0o2750|fs.ModeSetgid))
	mustWrite(t, filepath.Join(src, "modes", "readonly", "f"), []byte("ro\n"), 0o444)
	mustWrite(t, filepath.Join(src, "ns.txt"), []byte("nanoseconds\n"), 0o644)
	must(t, os.Chtimes(filepath.Join(src, "ns.txt"), ns, ns))
	mustWrite(t, filepath.Join(src, "outside-linked.txt"), []byte("linked from outside\n"), 0o644)
	must(t, os.Link(filepath.Join(src, "outside-linked.txt"), filepath.Join(dir, "outside-link")))
	mustWrite(t, filepath.Join(src, "skip.tmp"), []byte("excluded\n"), 0o644)
	mustWrite(t, filepath.Join(src, "cache", "x"), []byte("excluded\n"), 0o644)
	if os.Geteuid() == 0 {
		must(t, os.Lchown(setuid, otherUID, otherGID))
		must(t, os.Chmod(setuid, 0o755|fs.ModeSetuid|fs.ModeSetgid)) // chown cleared them
		must(t, os.Lchown(filepath.Join(src, "modes", "setgid-dir"), otherUID, otherGID))
		must(t, os.Chmod(filepath.Join(src, "modes", "setgid-dir"), 0o750|fs.ModeSetgid))
	}
	for _, d := range []string{"modes/readonly", "modes/sticky", "modes/setgid-dir", "modes"} {
		ts := ns.Add(-time.Duration(len(d)) * time.Hour)
		must(t, os.Chtimes(filepath.Join(src, d), ts, ts))
	}
	must(t, os.Chmod(filepath.Join(src, "modes", "readonly"), 0o555))
	ts := baseTime.Add(-time.Hour)
	must(t, os.Chtimes(src, ts, ts))

	target := filepath.Join(dir, "data", "real-target")
	mustWrite(t, filepath.Join(target, "t.txt"), []byte("through a symlinked data path\n"), 0o600)
	link := filepath.Join(dir, "data", "linked")
	must(t, os.Symlink("real-target", link))
	return []string{src, single, link}
}

var cloneExcludes = []string{"*.tmp", "cache/"}

func archiveOf(t *testing.T, format string, write func(w io.Writer, opts Options) (Stats, error)) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := write(&buf, Options{Format: format, Exclude: cloneExcludes, Threads: 2, Logger: quietLogger})
	must(t, err)
	return buf.Bytes(), st
}

// TestCloneArchiveEqualsOriginal: on XFS with reflink, the archive written
// with WriteTree from a Clone equals, entry by entry (names, order, types,
// modes, owners and owner names, mtimes, link targets, contents; for zip
// also the extra fields), the archive Write makes from the data paths;
// for tar.gz the bytes are identical. The clone directory is 0700 and the
// copies carry the original owners, modes and mtimes.
func TestCloneArchiveEqualsOriginal(t *testing.T) {
	xfs := mountXFS(t)
	paths := buildCloneTree(t, xfs)
	stage := filepath.Join(xfs, "stage")
	var prog Progress
	cst, err := Clone(context.Background(), stage, paths, Options{Format: FormatTarGz, Exclude: cloneExcludes, Logger: quietLogger, Progress: &prog})
	if err != nil {
		t.Fatalf("Clone: %v", err)
	}
	fi, err := os.Stat(stage)
	must(t, err)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("clone directory mode %v, want 0700", fi.Mode().Perm())
	}
	if cst.Skipped != 1 || len(cst.Warnings) != 1 || !strings.Contains(cst.Warnings[0], "fifo") {
		t.Errorf("clone stats %+v: want the fifo skipped with a warning", cst)
	}
	if prog.Files() != cst.Files || prog.Bytes() != cst.BytesRead || cst.Files == 0 {
		t.Errorf("progress files=%d bytes=%d, stats %+v", prog.Files(), prog.Bytes(), cst)
	}
	roots := CloneRoots(stage, paths)
	// The copies themselves: same metadata as the originals (fifo and
	// excluded files left out).
	for i, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		must(t, err)
		o := snapOpts{dirMTimes: true, owners: true, hardlinks: true}
		want := snapshot(t, real, o)
		for k := range want {
			if strings.HasSuffix(k, ".tmp") || k == "cache" || strings.HasPrefix(k, "cache/") {
				delete(want, k)
			}
		}
		if d := cmp.Diff(want, snapshot(t, roots[i].Dir, o)); d != "" {
			t.Errorf("clone of %s differs (-original +clone):\n%s", p, d)
		}
	}

	for _, format := range []string{FormatTarGz, FormatZip} {
		t.Run(format, func(t *testing.T) {
			orig, wst := archiveOf(t, format, func(w io.Writer, o Options) (Stats, error) { return Write(context.Background(), w, paths, o) })
			clone, tst := archiveOf(t, format, func(w io.Writer, o Options) (Stats, error) { return WriteTree(context.Background(), w, roots, o) })
			entries := tarEntries
			if format == FormatZip {
				entries = zipEntries
			}
			want, got := entries(t, orig), entries(t, clone)
			if len(want) < 20 {
				t.Fatalf("only %d entries", len(want))
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("archive from the clone differs (-original +clone):\n%s", d)
			}
			if format == FormatTarGz && !bytes.Equal(orig, clone) {
				t.Error("tar.gz bytes differ")
			}
			if wst.Files != tst.Files || wst.Dirs != tst.Dirs || wst.Symlinks != tst.Symlinks || wst.Hardlinks != tst.Hardlinks || wst.BytesRead != tst.BytesRead {
				t.Errorf("stats from original %+v, from clone %+v", wst, tst)
			}
			// (zip stores hard links as files: only tar counts like Clone.)
			if format == FormatTarGz && (cst.Files != wst.Files || cst.Hardlinks != wst.Hardlinks || cst.Dirs != wst.Dirs ||
				cst.Symlinks != wst.Symlinks || cst.BytesRead != wst.BytesRead) {
				t.Errorf("clone stats %+v, archive stats %+v", cst, wst)
			}
		})
	}
	must(t, RemoveTree(stage))
	if _, err := os.Lstat(stage); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("clone not removed: %v", err)
	}
}

// statfsUsed returns the bytes used in dir's file system.
func statfsUsed(t *testing.T, dir string) int64 {
	t.Helper()
	must(t, exec.Command("sync", "-f", dir).Run())
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	return int64(st.Blocks-st.Bfree) * int64(st.Bsize)
}

// TestCloneSharesExtents: cloning a 100 MiB file costs (almost) no space,
// and filefrag reports the copy's extents as shared.
func TestCloneSharesExtents(t *testing.T) {
	xfs := mountXFS(t)
	data := filepath.Join(xfs, "data")
	mustWrite(t, filepath.Join(data, "big.bin"), pseudoRandom(100<<20, 7), 0o640)
	before := statfsUsed(t, xfs)
	stage := filepath.Join(xfs, "stage")
	if _, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	grew := statfsUsed(t, xfs) - before
	t.Logf("file system use grew by %d KiB for a clone of 100 MiB", grew>>10)
	if grew > 4<<20 {
		t.Errorf("clone of 100 MiB used %d MiB: not a reflink copy", grew>>20)
	}
	copyPath := filepath.Join(CloneRoots(stage, []string{data})[0].Dir, "big.bin")
	a, err := os.ReadFile(copyPath)
	must(t, err)
	if !bytes.Equal(a, pseudoRandom(100<<20, 7)) {
		t.Error("clone content differs")
	}
	filefrag := testtool.Require(t, "filefrag", "e2fsprogs")
	out, err := exec.Command(filefrag, "-v", copyPath).CombinedOutput()
	must(t, err)
	if !strings.Contains(string(out), "shared") {
		t.Errorf("filefrag shows no shared extent:\n%s", out)
	}
}

// TestCloneUnsupported: where FICLONE cannot work — tmpfs, data and
// staging directory on two different XFS file systems, a data path with
// another file system mounted inside it (the first files cloned, then
// EXDEV) — Clone fails with ErrCloneUnsupported and leaves nothing behind.
func TestCloneUnsupported(t *testing.T) {
	check := func(t *testing.T, stage string, paths []string) {
		t.Helper()
		_, err := Clone(context.Background(), stage, paths, Options{Format: FormatTarGz, Logger: quietLogger})
		if !errors.Is(err, ErrCloneUnsupported) {
			t.Fatalf("want ErrCloneUnsupported, got %v", err)
		}
		t.Log(err)
		if _, err := os.Lstat(stage); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("partial clone left behind: %v", err)
		}
	}
	t.Run("tmpfs", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tmpfs")
		testtool.MountTmpfs(t, dir, "16m")
		mustWrite(t, filepath.Join(dir, "data", "sub", "f"), []byte("x"), 0o644)
		check(t, filepath.Join(dir, "stage"), []string{filepath.Join(dir, "data")})
	})
	t.Run("two file systems", func(t *testing.T) {
		a, b := mountXFS(t), mountXFS(t)
		mustWrite(t, filepath.Join(a, "data", "f"), []byte("x"), 0o644)
		check(t, filepath.Join(b, "stage"), []string{filepath.Join(a, "data")})
	})
	t.Run("mount inside the data path", func(t *testing.T) {
		xfs := mountXFS(t)
		data := filepath.Join(xfs, "data")
		mustWrite(t, filepath.Join(data, "a-first"), []byte("cloned"), 0o644)
		testtool.MountTmpfs(t, filepath.Join(data, "b-mnt"), "1m")
		mustWrite(t, filepath.Join(data, "b-mnt", "f"), []byte("on tmpfs"), 0o644)
		check(t, filepath.Join(xfs, "stage"), []string{data})
	})
}

// TestCloneErrors: a failure that is not "unsupported" (an I/O error), a
// cancellation and an existing clone directory are plain errors; the
// partial clone is removed (the existing directory is left alone). Runs
// on any file system: the FICLONE ioctl is replaced.
func TestCloneErrors(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for _, f := range []string{"a", "b/c", "b/d", "e"} {
		mustWrite(t, filepath.Join(data, f), []byte(f), 0o644)
	}
	must(t, os.Chmod(filepath.Join(data, "b"), 0o555))
	t.Cleanup(func() { os.Chmod(filepath.Join(data, "b"), 0o755) })
	calls := 0
	testHookFiclone = func(dst, src uintptr) error {
		calls++
		if calls == 3 {
			return syscall.EIO
		}
		return nil
	}
	defer func() { testHookFiclone, testHookVisit = nil, nil }()
	stage := filepath.Join(dir, "stage")
	_, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
	if err == nil || errors.Is(err, ErrCloneUnsupported) || !errors.Is(err, syscall.EIO) {
		t.Errorf("want a plain EIO error, got %v", err)
	}
	if _, err := os.Lstat(stage); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial clone left behind: %v", err)
	}

	testHookFiclone = func(dst, src uintptr) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testHookVisit = func(p string) {
		if filepath.Base(p) == "c" {
			cancel()
		}
	}
	_, err = Clone(ctx, stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("want context.Canceled, got %v", err)
	}
	if _, err := os.Lstat(stage); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial clone left behind: %v", err)
	}
	testHookVisit = nil

	must(t, os.Mkdir(stage, 0o755))
	if _, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("existing clone directory: want ErrExist, got %v", err)
	}
	if _, err := os.Lstat(stage); err != nil {
		t.Errorf("existing directory removed: %v", err)
	}
}

// TestCloneVanished: files and directories vanishing during the clone are
// warned about and left out, as Write does; a staging directory inside the
// data path is not cloned into itself.
func TestCloneVanished(t *testing.T) {
	dir := vanishingTree(t)
	testHookFiclone = func(dst, src uintptr) error { return nil }
	defer func() { testHookFiclone = nil }()
	stage := filepath.Join(dir, "z-stage")
	st, err := Clone(context.Background(), stage, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Warnings) != 4 || st.Files != 1 || st.Skipped != 1 {
		t.Errorf("want 3 vanish warnings, 1 skip, 1 file; got %+v", st)
	}
	var names []string
	must(t, filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(stage, p)
		names = append(names, rel)
		return err
	}))
	if d := cmp.Diff([]string{".", "0", "0/d-ok.txt"}, names); d != "" {
		t.Errorf("clone holds (-want +got):\n%s", d)
	}
}

// TestRemoveTreeReadOnly: without root, a clone of read-only directories
// is still removed.
func TestRemoveTreeReadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	mustWrite(t, filepath.Join(dir, "ro", "deeper", "f"), []byte("x"), 0o444)
	must(t, os.Chmod(filepath.Join(dir, "ro", "deeper"), 0o500))
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o000))
	must(t, RemoveTree(dir))
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("not removed: %v", err)
	}
	must(t, RemoveTree(dir)) // missing is fine
}

// TestCloneDirectorySwapped: whoever may rename entries next to the clone
// directory (a destination belongs to the archives' owner) cannot redirect
// it. Replacing the directory by a symlink while Clone runs does not move
// a single copy into the symlink's target; OpenClone refuses a symlink, a
// directory of another owner and one open to others, and once it has
// opened the clone, swapping the name does not change what WriteTree
// reads. Runs on any file system: the FICLONE ioctl is replaced.
func TestCloneDirectorySwapped(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for _, f := range []string{"a", "b/c", "d"} {
		mustWrite(t, filepath.Join(data, f), []byte(f), 0o644)
	}
	evil := filepath.Join(dir, "evil")
	mustWrite(t, filepath.Join(evil, "0", "planted"), []byte("planted"), 0o644)
	stage := filepath.Join(dir, "stage")
	moved := filepath.Join(dir, "moved")
	testHookFiclone = func(dst, src uintptr) error { return nil }
	testHookVisit = func(p string) {
		if filepath.Base(p) == "b" {
			must(t, os.Rename(stage, moved))
			must(t, os.Symlink(evil, stage))
		}
	}
	defer func() { testHookFiclone, testHookVisit = nil, nil }()
	if _, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	testHookVisit = nil
	var inEvil []string
	must(t, filepath.WalkDir(evil, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(evil, p)
		inEvil = append(inEvil, rel)
		return err
	}))
	if d := cmp.Diff([]string{".", "0", "0/planted"}, inEvil); d != "" {
		t.Errorf("copies went through the swapped name (-want +got):\n%s", d)
	}
	for _, f := range []string{"0/a", "0/b/c", "0/d"} {
		if _, err := os.Lstat(filepath.Join(moved, f)); err != nil {
			t.Errorf("copy missing in the real clone directory: %v", err)
		}
	}

	// OpenClone refuses what is not a private directory of ours.
	if _, _, err := OpenClone(stage, []string{data}); err == nil {
		t.Error("OpenClone followed a symlink")
	}
	open := filepath.Join(dir, "open")
	must(t, os.Mkdir(open, 0o755))
	if _, _, err := OpenClone(open, []string{data}); err == nil || !strings.Contains(err.Error(), "not a private clone directory") {
		t.Errorf("OpenClone of a 0755 directory: %v", err)
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(dir, "theirs")
		must(t, os.Mkdir(theirs, 0o700))
		must(t, os.Chown(theirs, otherUID, otherGID))
		if _, _, err := OpenClone(theirs, []string{data}); err == nil || !strings.Contains(err.Error(), "not a private clone directory") {
			t.Errorf("OpenClone of another user's directory: %v", err)
		}
	}

	// Opened, then swapped: WriteTree still reads the clone.
	must(t, os.Remove(stage))
	must(t, os.Rename(moved, stage))
	roots, release, err := OpenClone(stage, []string{data})
	must(t, err)
	defer release()
	must(t, os.Rename(stage, moved))
	must(t, os.Symlink(evil, stage))
	var buf bytes.Buffer
	if _, err := WriteTree(context.Background(), &buf, roots, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	name := EntryName(data)
	if d := cmp.Diff([]string{name + "/", name + "/a", name + "/b/", name + "/b/c", name + "/d"}, tarNames(t, buf.Bytes())); d != "" {
		t.Errorf("archived (-want +got):\n%s", d)
	}
}
