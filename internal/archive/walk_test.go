//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of the descriptor-based walk (fswalk.go): symlink rule for data
// paths, swap races, paths beyond PATH_MAX, files changed while read,
// directories left out by identity.

const nobodyUID, nobodyGID = 65534, 65534

// readTar returns name -> content of every regular file (and "" for other
// entries) of a tar stream, gzip-compressed when gz is set.
func readTar(t *testing.T, r io.Reader, gz bool) map[string]string {
	t.Helper()
	if gz {
		zr, err := gzip.NewReader(r)
		must(t, err)
		r = zr
	}
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		b, err := io.ReadAll(tr)
		must(t, err)
		out[h.Name] = string(b)
	}
}

// belowSymlink returns a description of the first entry of a tar stream
// that lies below an entry stored as a symlink ("" if none).
func belowSymlink(t *testing.T, r io.Reader, gz bool) string {
	t.Helper()
	if gz {
		zr, err := gzip.NewReader(r)
		must(t, err)
		r = zr
	}
	links := map[string]bool{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ""
		}
		must(t, err)
		name := strings.TrimSuffix(h.Name, "/")
		for p := filepath.Dir(name); p != "." && p != "/"; p = filepath.Dir(p) {
			if links[p] {
				return h.Name + " lies below the symlink entry " + p
			}
		}
		if h.Typeflag == tar.TypeSymlink {
			links[name] = true
		}
	}
}

// TestDataPathSymlinkRule (issue 10 item 1): a data path that its owner's
// service user replaced by a symlink (to /etc, here to a directory holding
// a root-only file) is refused with an error naming it and the rule, by
// Write and by CheckDataPaths; so is a symlinked parent in a directory
// that user owns, and a root-made symlink in a directory others can write.
// A symlink only root can have made (root-owned 0755 directory) is still
// followed.
func TestDataPathSymlinkRule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give directories to another user")
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o755))
	must(t, os.Chmod(filepath.Dir(dir), 0o755)) // nobody must reach app
	secret := filepath.Join(dir, "etc")
	mustWrite(t, filepath.Join(secret, "shadow"), []byte("root:SECRET"), 0o600)
	app := filepath.Join(dir, "app")
	must(t, os.Mkdir(app, 0o755))
	must(t, os.Chown(app, nobodyUID, nobodyGID))
	data := filepath.Join(app, "data")
	// As the service user would: setpriv runs ln as nobody.
	runAsNobody(t, "ln", "-s", secret, data)

	for _, tc := range []struct{ name, path, want string }{
		{"data path is a symlink", data, "belongs to uid 65534"},
		{"parent is a symlink", filepath.Join(app, "sub", "data"), "belongs to uid 65534"},
	} {
		if tc.name == "parent is a symlink" {
			runAsNobody(t, "ln", "-s", secret, filepath.Join(app, "sub"))
		}
		var buf bytes.Buffer
		_, err := Write(context.Background(), &buf, []string{tc.path}, Options{Format: FormatTarGz, Logger: quietLogger})
		if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "refusing to follow") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Write error %v, want a refusal naming %s", tc.name, err, tc.path)
		}
		if err == nil {
			for name, content := range readTar(t, &buf, true) {
				if strings.Contains(content, "SECRET") {
					t.Errorf("%s: the secret was archived as %s", tc.name, name)
				}
			}
		}
		if err := CheckDataPaths([]string{tc.path}); err == nil || !strings.Contains(err.Error(), "refusing to follow") {
			t.Errorf("%s: CheckDataPaths: %v", tc.name, err)
		}
	}

	// Root's own symlink, but in a directory others can write: refused.
	open := filepath.Join(dir, "open")
	must(t, os.Mkdir(open, 0o777))
	must(t, os.Chmod(open, 0o1777))
	must(t, os.Symlink(secret, filepath.Join(open, "data")))
	if err := CheckDataPaths([]string{filepath.Join(open, "data")}); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("symlink in a world-writable directory: %v", err)
	}

	// Root's symlink in a root-owned 0755 directory (/var/lib -> /data/...):
	// followed, archived under the data path's name.
	trusted := filepath.Join(dir, "lib")
	must(t, os.Mkdir(trusted, 0o755))
	real := filepath.Join(dir, "real-app")
	mustWrite(t, filepath.Join(real, "state"), []byte("state"), 0o644)
	must(t, os.Symlink(real, filepath.Join(trusted, "app")))
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, []string{filepath.Join(trusted, "app")}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatalf("trusted symlink: %v", err)
	}
	if got := readTar(t, &buf, true)[EntryName(filepath.Join(trusted, "app", "state"))]; got != "state" {
		t.Errorf("trusted symlink: state = %q", got)
	}
}

// runAsNobody runs a command as the unprivileged user nobody (setpriv).
func runAsNobody(t *testing.T, args ...string) {
	t.Helper()
	requireTool(t, "setpriv")
	cmd := exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %v: %v\n%s", args, err, out)
	}
}

// swapLoop swaps dir (a sub-directory of a data path) for a symlink to
// target and back in a tight loop until stop is closed; it returns the
// number of swaps through done.
func swapLoop(t *testing.T, dir, target string, stop <-chan struct{}) (done func() int64) {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	aside := dir + ".aside"
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if os.Rename(dir, aside) == nil {
				os.Symlink(target, dir)
				os.Remove(dir)
				os.Rename(aside, dir)
				n.Add(1)
			}
		}
	}()
	return func() int64 { wg.Wait(); return n.Load() }
}

// TestSwapRaceNeverLeaks (issue 10 item 2): while a goroutine swaps a
// sub-directory of the data path for a symlink to a directory holding a
// root-only secret, thousands of times, no archive (Write, tar.gz), no
// capture (Capture, the captureFirst tar) and no reflink copy (Clone) ever
// contains the secret, and no archive has an entry below a symlink entry
// (item 10: such an archive passed verify and restore refused it).
func TestSwapRaceNeverLeaks(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	secretDir := filepath.Join(dir, "etc")
	const secret = "TOPSECRET-7f3a9c"
	// The same names as in the swapped directory, so a walk that lists
	// through the symlink finds files it would open by the listed name.
	// Large enough for the capture to copy them with copy_file_range.
	pad := string(make([]byte, kernelCopyMin))
	for _, n := range []string{"a", "b", "shadow"} {
		mustWrite(t, filepath.Join(data, "sub", n), []byte("public "+n+pad), 0o644)
		mustWrite(t, filepath.Join(secretDir, n), []byte(secret+pad), 0o600)
	}
	for i := 0; i < 20; i++ {
		mustWrite(t, filepath.Join(data, "other", string(rune('a'+i))), []byte("x"), 0o644)
	}
	// The reflink capture: FICLONE is replaced by a check of what it
	// would share (any file system).
	var cloned atomic.Int64
	var leaked atomic.Value
	testHookFiclone = func(dst, src uintptr) error {
		b := make([]byte, 64)
		n, _ := syscall.Pread(int(src), b, 0)
		if strings.Contains(string(b[:n]), secret) {
			leaked.Store(true)
		}
		cloned.Add(1)
		return nil
	}
	defer func() { testHookFiclone = nil }()
	stop := make(chan struct{})
	swaps := swapLoop(t, filepath.Join(data, "sub"), secretDir, stop)
	deadline := time.Now().Add(4 * time.Second)
	runs := 0
	var kernelBytes int64
	for ; time.Now().Before(deadline); runs++ {
		var buf bytes.Buffer
		var err error
		if runs%3 == 2 {
			stage := filepath.Join(dir, "stage")
			_, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
			must(t, RemoveTree(stage))
			if err != nil || leaked.Load() != nil {
				close(stop)
				swaps()
				t.Fatalf("run %d (clone): err %v, secret cloned: %v", runs, err, leaked.Load() != nil)
			}
			continue
		}
		capture := runs%3 == 1
		if capture {
			// Into a file beside the data: the kernel copies the contents.
			var st Stats
			st, err = captureToFile(filepath.Join(dir, "capture.tar"), &buf, data)
			kernelBytes += st.CopiedInKernel
		} else {
			_, err = Write(context.Background(), &buf, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
		}
		if err != nil {
			close(stop)
			swaps()
			t.Fatalf("run %d: %v", runs, err)
		}
		raw := buf.Bytes()
		for name, content := range readTar(t, bytes.NewReader(raw), !capture) {
			if strings.Contains(content, secret) {
				close(stop)
				swaps()
				t.Fatalf("run %d (capture=%v): the secret was archived as %s", runs, capture, name)
			}
		}
		// The archive is consistent: nothing lies below a symlink entry
		// (restore would refuse such an archive).
		if bad := belowSymlink(t, bytes.NewReader(raw), !capture); bad != "" {
			close(stop)
			swaps()
			t.Fatalf("run %d (capture=%v): %s", runs, capture, bad)
		}
	}
	close(stop)
	n := swaps()
	t.Logf("%d runs, %d swaps, %d files cloned, %d bytes copied by the kernel into captures", runs, n, cloned.Load(), kernelBytes)
	if kernelBytes == 0 && kernelCopies(t, dir, dir) {
		t.Errorf("no capture used copy_file_range")
	}
	if n < 1000 || runs < 20 {
		t.Errorf("too little contention: %d runs, %d swaps", runs, n)
	}
}

// captureToFile captures data into the file path and reads it into buf.
func captureToFile(path string, buf *bytes.Buffer, data string) (Stats, error) {
	f, err := os.Create(path)
	if err != nil {
		return Stats{}, err
	}
	defer os.Remove(path)
	defer f.Close()
	st, err := Capture(context.Background(), f, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger})
	if err != nil {
		return st, err
	}
	_, err = buf.ReadFrom(io.NewSectionReader(f, 0, 1<<40))
	return st, err
}

// deepTree makes a chain of 25 directories of 200-byte names (a path of
// over 5000 bytes, beyond PATH_MAX) below root, through descriptors, with
// the file deep.txt at the bottom; it returns the relative path.
func deepTree(t *testing.T, root string) string {
	t.Helper()
	must(t, os.MkdirAll(root, 0o755))
	fd, err := syscall.Open(root, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	must(t, err)
	name := strings.Repeat("d", 200)
	rel := ""
	for i := 0; i < 25; i++ {
		must(t, syscall.Mkdirat(fd, name, 0o755))
		next, err := syscall.Openat(fd, name, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		must(t, err)
		syscall.Close(fd)
		fd = next
		rel += name + "/"
	}
	f, err := syscall.Openat(fd, "deep.txt", syscall.O_WRONLY|syscall.O_CREAT, 0o644)
	must(t, err)
	_, err = syscall.Write(f, []byte("bottom\n"))
	must(t, err)
	syscall.Close(f)
	syscall.Close(fd)
	return rel + "deep.txt"
}

// readDeep reads root/rel through descriptors (rel may exceed PATH_MAX).
func readDeep(t *testing.T, root, rel string) string {
	t.Helper()
	fd, err := syscall.Open(root, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	must(t, err)
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		next, err := syscall.Openat(fd, p, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		syscall.Close(fd)
		if err != nil {
			t.Fatalf("open %s below %s: %v", p[:10], root, err)
		}
		fd = next
	}
	defer syscall.Close(fd)
	f, err := syscall.Openat(fd, parts[len(parts)-1], syscall.O_RDONLY, 0)
	must(t, err)
	defer syscall.Close(f)
	b := make([]byte, 100)
	n, _ := syscall.Read(f, b)
	return string(b[:n])
}

// TestDeeperThanPathMax (issue 10 item 2): a tree whose paths exceed
// PATH_MAX (4096 bytes) is archived (Write and Capture) and cloned; GNU
// tar lists the archive and extracts the deep file's content.
func TestDeeperThanPathMax(t *testing.T) {
	requireTool(t, "tar")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	rel := deepTree(t, data)
	if len(rel) <= 4096 {
		t.Fatalf("tree not deep enough: %d", len(rel))
	}
	arch := filepath.Join(dir, "a.tar.gz")
	st := writeArchive(t, arch, FormatTarGz, []string{data}, Options{})
	if st.Files != 1 || st.Dirs != 26 {
		t.Errorf("stats %+v", st)
	}
	// GNU tar 1.34 reads the names (it cannot create them: it extracts by
	// path), and extracts the deep file's content to stdout.
	member := EntryName(filepath.Join(data, rel))
	list, err := exec.Command("tar", "-tzf", arch).Output()
	if err != nil || !strings.Contains(string(list), member+"\n") {
		t.Fatalf("GNU tar -t: %v; deep name listed: %v", err, strings.Contains(string(list), member))
	}
	if b, err := exec.Command("tar", "-xzOf", arch, member).Output(); err != nil || string(b) != "bottom\n" {
		t.Errorf("GNU tar -xO of the deep file: %q, %v", b, err)
	}
	var buf bytes.Buffer
	if _, err := Capture(context.Background(), &buf, []string{data}, Options{Format: FormatTarZst, Logger: quietLogger}); err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if got := readTar(t, &buf, false)[EntryName(filepath.Join(data, rel))]; got != "bottom\n" {
		t.Errorf("captured deep.txt = %q", got)
	}

	// The reflink copy (FICLONE replaced: any file system) holds the tree.
	testHookFiclone = func(dst, src uintptr) error { return nil }
	defer func() { testHookFiclone = nil }()
	stage := filepath.Join(dir, "stage")
	if _, err := Clone(context.Background(), stage, []string{data}, Options{Format: FormatTarGz, Logger: quietLogger}); err != nil {
		t.Fatalf("Clone: %v", err)
	}
	readDeep(t, filepath.Join(stage, "0"), rel) // exists (empty: no real clone)
}

// TestChangedWhileRead (issue 10 item 10): a file that shrinks and one that
// grows after being opened are counted and listed in Stats.Changed and
// warned about as "file changed as we read it"; the shrunk file is padded
// to its declared size (GNU tar extracts the archive), the grown one cut at
// it.
func TestChangedWhileRead(t *testing.T) {
	requireTool(t, "tar")
	for _, capture := range []bool{false, true} {
		dir := t.TempDir()
		data := filepath.Join(dir, "data")
		orig := pseudoRandom(256<<10, 7)
		mustWrite(t, filepath.Join(data, "grow.bin"), orig, 0o644)
		mustWrite(t, filepath.Join(data, "shrink.bin"), orig, 0o644)
		mustWrite(t, filepath.Join(data, "steady.txt"), []byte("steady"), 0o644)
		testHookAfterOpen = func(p string) {
			switch filepath.Base(p) {
			case "shrink.bin":
				must(t, os.Truncate(p, 1000))
			case "grow.bin":
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				must(t, err)
				f.Write(make([]byte, 5000))
				f.Close()
			}
		}
		arch := filepath.Join(dir, "a.tar")
		f, err := os.Create(arch)
		must(t, err)
		opts := Options{Format: FormatTarGz, Logger: quietLogger}
		var st Stats
		if capture {
			st, err = Capture(context.Background(), f, []string{data}, opts)
		} else {
			opts.Format = FormatTarXz
			st, err = Write(context.Background(), f, []string{data}, opts)
		}
		testHookAfterOpen = nil
		must(t, err)
		must(t, f.Close())
		want := []string{filepath.Join(data, "grow.bin"), filepath.Join(data, "shrink.bin")}
		if st.Changed != 2 || strings.Join(st.ChangedFiles, ",") != strings.Join(want, ",") {
			t.Errorf("capture=%v: Changed %d %v, want %v", capture, st.Changed, st.ChangedFiles, want)
		}
		if n := strings.Count(strings.Join(st.Warnings, "\n"), "file changed as we read it"); n != 2 {
			t.Errorf("capture=%v: warnings %q", capture, st.Warnings)
		}
		out := filepath.Join(dir, "out")
		must(t, os.Mkdir(out, 0o755))
		if b, err := exec.Command("tar", "-xf", arch, "-C", out).CombinedOutput(); err != nil {
			t.Fatalf("GNU tar: %v\n%s", err, b)
		}
		base := filepath.Join(out, EntryName(data))
		shrunk, _ := os.ReadFile(filepath.Join(base, "shrink.bin"))
		if len(shrunk) != len(orig) || !bytes.Equal(shrunk[:1000], orig[:1000]) || !bytes.Equal(shrunk[1000:], make([]byte, len(orig)-1000)) {
			t.Errorf("capture=%v: shrunk file: %d bytes, not the first 1000 bytes and zeros", capture, len(shrunk))
		}
		if grown, _ := os.ReadFile(filepath.Join(base, "grow.bin")); !bytes.Equal(grown, orig) {
			t.Errorf("capture=%v: grown file: %d bytes, want the %d read", capture, len(grown), len(orig))
		}
	}
}

// TestFifoSwappedIn: a regular file replaced by a FIFO between listing and
// opening is neither read nor waited for: skipped with a warning.
func TestFifoSwappedIn(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "a.txt"), []byte("a"), 0o644)
	mustWrite(t, filepath.Join(dir, "b.txt"), []byte("b"), 0o644)
	testHookBeforeOpen = func(p string) {
		if filepath.Base(p) == "a.txt" {
			must(t, os.Remove(p))
			must(t, syscall.Mkfifo(p, 0o644))
		}
	}
	defer func() { testHookBeforeOpen = nil }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var buf bytes.Buffer
	st, err := Write(ctx, &buf, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger})
	must(t, err)
	if st.Files != 1 || st.Skipped != 1 || !strings.Contains(strings.Join(st.Warnings, ","), "replaced") {
		t.Errorf("stats %+v", st)
	}
}

// TestSkipDirsBindMount (issue 10 item 9): a destination bind-mounted into
// the data path is left out of the walk by identity, with a warning; without
// SkipDirs it would be archived.
func TestSkipDirsBindMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	dest := filepath.Join(dir, "dest")
	mustWrite(t, filepath.Join(data, "f"), []byte("f"), 0o644)
	mustWrite(t, filepath.Join(dest, "app-old.tar.gz"), pseudoRandom(100_000, 3), 0o644)
	mnt := filepath.Join(data, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	if b, err := exec.Command("mount", "--bind", dest, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount: %v %s", err, b)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	id, err := DirIdentity(dest, "it is the destination "+dest)
	must(t, err)
	for _, skip := range []bool{false, true} {
		opts := Options{Format: FormatTarGz, Logger: quietLogger}
		if skip {
			opts.SkipDirs = []SkipDir{id}
		}
		var buf bytes.Buffer
		st, err := Write(context.Background(), &buf, []string{data}, opts)
		must(t, err)
		_, has := readTar(t, &buf, true)[EntryName(filepath.Join(mnt, "app-old.tar.gz"))]
		if has == skip {
			t.Errorf("skip=%v: destination archived: %v", skip, has)
		}
		if skip && (st.Skipped != 1 || !strings.Contains(strings.Join(st.Warnings, ","), "it is the destination "+dest)) {
			t.Errorf("skip: stats %+v", st)
		}
	}
}

// TestCheckDataPathsErrors: missing and special data paths are errors.
func TestCheckDataPathsErrors(t *testing.T) {
	dir := t.TempDir()
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	for _, p := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "fifo"), "relative"} {
		if err := CheckDataPaths([]string{p}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := CheckDataPaths([]string{dir}); err != nil {
		t.Error(err)
	}
}
