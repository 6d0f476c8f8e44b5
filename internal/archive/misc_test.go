package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	kgzip "github.com/klauspost/compress/gzip"
)

// tarNames lists the entry names of a tar.gz held in memory.
func tarNames(t *testing.T, data []byte) []string {
	t.Helper()
	zr, err := kgzip.NewReader(bytes.NewReader(data))
	must(t, err)
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		names = append(names, h.Name)
	}
	return names
}

func TestExclude(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"cache/x", "cache/sub/y", "keep/a.tmp", "keep/b.txt", "top.tmp", "cachefile.txt", "notcache/cache/z", "tmp.d/c.txt", "x.tmpl"} {
		mustWrite(t, filepath.Join(dir, f), []byte(f), 0o644)
	}
	var buf bytes.Buffer
	_, err := Write(context.Background(), &buf, []string{dir}, Options{Format: FormatTarGz, Exclude: []string{"cache/**", "*.tmp"}, Logger: quietLogger})
	must(t, err)
	got := tarNames(t, buf.Bytes())
	base := EntryName(dir)
	var want []string
	for _, n := range []string{"", "cachefile.txt", "keep/", "keep/b.txt", "notcache/", "notcache/cache/", "notcache/cache/z", "tmp.d/", "tmp.d/c.txt", "x.tmpl"} {
		if n == "" {
			want = append(want, base+"/")
		} else {
			want = append(want, base+"/"+n)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("entries (-want +got):\n%s", d)
	}
	// Entry order is deterministic (lexical walk order).
	var buf2 bytes.Buffer
	_, err = Write(context.Background(), &buf2, []string{dir}, Options{Format: FormatTarGz, Exclude: []string{"cache/**", "*.tmp"}, Logger: quietLogger})
	must(t, err)
	if d := cmp.Diff(tarNames(t, buf.Bytes()), tarNames(t, buf2.Bytes())); d != "" {
		t.Errorf("order not deterministic: %s", d)
	}
}

// vanishingTree makes a tree in which, while it is walked, a-early.txt
// vanishes between listing and lstat, b-late.txt between lstat and open,
// and c-dir before it is read; d-ok.txt stays. The test hooks are reset
// when the test ends.
func vanishingTree(t *testing.T) string {
	dir := t.TempDir()
	for _, f := range []string{"a-early.txt", "b-late.txt", "c-dir/x", "d-ok.txt"} {
		mustWrite(t, filepath.Join(dir, f), []byte(f), 0o644)
	}
	testHookVisit = func(p string) {
		switch filepath.Base(p) {
		case "a-early.txt":
			os.Remove(p)
		case "c-dir":
			os.RemoveAll(p)
		}
	}
	testHookBeforeOpen = func(p string) {
		if filepath.Base(p) == "b-late.txt" {
			os.Remove(p)
		}
	}
	t.Cleanup(func() { testHookVisit, testHookBeforeOpen = nil, nil })
	return dir
}

// TestVanished makes a file vanish between listing and lstat, a file between
// lstat and open and a directory before it is read: warnings, no error.
func TestVanished(t *testing.T) {
	dir := vanishingTree(t)
	var buf bytes.Buffer
	st, err := Write(context.Background(), &buf, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(st.Warnings) != 3 || st.Files != 1 {
		t.Errorf("want 3 vanish warnings and 1 file, got %+v", st)
	}
	for _, w := range st.Warnings {
		if !strings.Contains(w, "vanished") {
			t.Errorf("warning %q", w)
		}
	}
	if d := cmp.Diff([]string{EntryName(dir) + "/", EntryName(dir) + "/d-ok.txt"}, tarNames(t, buf.Bytes())); d != "" {
		t.Errorf("entries: %s", d)
	}
}

// TestOpenErrorClassification: permission denied is an error, vanishing is not.
func TestOpenErrorClassification(t *testing.T) {
	if openErrorIsVanished(&fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}) {
		t.Error("EACCES classified as vanished")
	}
	if !openErrorIsVanished(&fs.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}) {
		t.Error("ENOENT not classified as vanished")
	}
	if os.Geteuid() == 0 {
		t.Skip("running as root: cannot provoke permission denied for the end-to-end part")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "unreadable")
	mustWrite(t, p, []byte("x"), 0o000)
	_, err := Write(context.Background(), io.Discard, []string{dir}, Options{Format: FormatTarGz, Logger: quietLogger})
	if err == nil || !strings.Contains(err.Error(), p) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("want permission error naming %s, got %v", p, err)
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "big"), pseudoRandom(8<<20, 1), 0o644)
	mustWrite(t, filepath.Join(dir, "small"), []byte("x"), 0o644)
	for _, format := range Formats {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Write(ctx, io.Discard, []string{dir}, Options{Format: format, Logger: quietLogger})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: pre-cancelled: got %v", format, err)
		}
		// Cancel in the middle of the big copy.
		ctx, cancel = context.WithCancel(context.Background())
		n := 0
		w := writerFunc(func(p []byte) (int, error) {
			if n += len(p); n > 1<<20 {
				cancel()
			}
			return len(p), nil
		})
		_, err = Write(ctx, w, []string{dir}, Options{Format: format, Level: 1, Logger: quietLogger})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled mid-copy: got %v", format, err)
		}
		cancel()
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestEntryName(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/myapp/config": "var/lib/myapp/config",
		"/var/lib/x/":           "var/lib/x",
		"//a//b/../c":           "a/c",
		"/":                     ".",
	} {
		if got := EntryName(in); got != want {
			t.Errorf("EntryName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSafeJoin(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"a/b", "/t/a/b", true}, {"a/b/", "/t/a/b", true}, {"./a", "/t/a", true}, {".", "/t", true}, {"./", "/t", true},
		{"a\\..\\b", "/t/a\\..\\b", true}, {"..foo/x", "/t/..foo/x", true},
		{"", "", false}, {"..", "", false}, {"../a", "", false}, {"a/../b", "", false}, {"a/..", "", false},
		{"/etc/passwd", "", false}, {"a\x00b", "", false},
	} {
		got, err := SafeJoin("/t", tc.name)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("SafeJoin(/t, %q) = %q, %v", tc.name, got, err)
		}
	}
}

// FuzzSafeJoin: if SafeJoin accepts a name, the result lies inside target,
// and equals target exactly when the name cleans to ".".
func FuzzSafeJoin(f *testing.F) {
	for _, s := range []string{"a", "a/b", ".", "./", "..", "../x", "a/../../b", "/abs", "a\x00", "", "a//b/./c/", "...", "..a/..b", "a/.", "./..", "x/../", "\\..\\x"} {
		f.Add("/srv/target", s)
		f.Add("rel/target", s)
	}
	f.Fuzz(func(t *testing.T, target, name string) {
		if target == "" || strings.IndexByte(target, 0) >= 0 {
			return
		}
		got, err := SafeJoin(target, name)
		if err != nil {
			if !errors.Is(err, ErrUnsafeName) {
				t.Fatalf("error does not wrap ErrUnsafeName: %v", err)
			}
			return
		}
		rel, err := filepath.Rel(filepath.Clean(target), got)
		if err != nil {
			t.Fatalf("Rel(%q, %q): %v", target, got, err)
		}
		if rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("SafeJoin(%q, %q) = %q escapes target", target, name, got)
		}
		isRoot := rel == "."
		cleansToDot := filepath.Clean(filepath.FromSlash(name)) == "."
		if isRoot != cleansToDot {
			t.Fatalf("SafeJoin(%q, %q) = %q: root=%v but name cleans to %q", target, name, got, isRoot, filepath.Clean(name))
		}
		if strings.HasPrefix(name, "/") || strings.IndexByte(name, 0) >= 0 {
			t.Fatalf("accepted %q", name)
		}
	})
}
