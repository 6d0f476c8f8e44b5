package worker

import (
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
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// metaTree describes every entry below root with what an archive keeps:
// type, permission and special bits, owner, mtime (truncated to prec; not
// for symlinks, whose times tar does not restore), content hash or link
// target.
func metaTree(t *testing.T, root string, prec time.Duration) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" mtime=%d sha=%s", fi.ModTime().Truncate(prec).UnixNano(), hex.EncodeToString(sum[:8]))
		case fi.IsDir():
			desc += fmt.Sprintf(" mtime=%d", fi.ModTime().Truncate(prec).UnixNano())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertSameMeta compares metaTree of want and got; mtimes to the
// nanosecond.
func assertSameMeta(t *testing.T, what, want, got string) {
	t.Helper()
	assertSameMetaPrec(t, what, want, got, 1)
}

func assertSameMetaPrec(t *testing.T, what, want, got string, prec time.Duration) {
	t.Helper()
	w, g := metaTree(t, want, prec), metaTree(t, got, prec)
	for _, k := range sortedKeys(w) {
		if g[k] != w[k] {
			t.Errorf("%s: %s: %q, original %q", what, k, g[k], w[k])
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: %s not in the original", what, k)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// reflinkEnv is a test env whose data paths lie on a fresh reflink-capable
// XFS (root and mkfs.xfs needed, else skipped), with files owned by other
// ids, setuid and read-only bits, sub-second mtimes and a hard link. The
// destinations are e.root/dest1 (not on the XFS) and XFS/dest2.
func reflinkEnv(t *testing.T) (e *testEnv, xfs string) {
	t.Helper()
	e = newTestEnv(t)
	xfs = filepath.Join(e.root, "xfs")
	testtool.MountXFS(t, xfs, "300M")
	d1, d2 := filepath.Join(xfs, "data", "app"), filepath.Join(xfs, "data", "app-extra")
	e.writeFile(filepath.Join(d1, "db.sqlite"), randomBytes(t, 3<<20), 0o600)
	e.writeFile(filepath.Join(d1, "config", "app.conf"), []byte("listen = 8080\n"), 0o644)
	e.writeFile(filepath.Join(d1, "bin", "helper"), []byte("#!/bin/sh\n"), 0o755)
	e.writeFile(filepath.Join(d1, "ro", "frozen"), []byte("frozen\n"), 0o444)
	e.writeFile(filepath.Join(d1, "empty.txt"), nil, 0o640)
	if err := os.MkdirAll(filepath.Join(d1, "empty-dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("config/app.conf", filepath.Join(d1, "current.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(d1, "config", "app.conf"), filepath.Join(d1, "app.conf.link")); err != nil {
		t.Fatal(err)
	}
	e.writeFile(filepath.Join(d2, "uploads", "a.bin"), randomBytes(t, 500_000), 0o644)
	e.writeFile(filepath.Join(d2, "uploads", "owned.txt"), []byte("someone else's\n"), 0o640)
	for _, c := range []struct {
		path     string
		uid, gid int
	}{
		{filepath.Join(d2, "uploads", "owned.txt"), 12345, 23456},
		{filepath.Join(d2, "uploads"), 12345, 23456},
		{filepath.Join(d1, "bin", "helper"), 0, 23456},
	} {
		if err := os.Lchown(c.path, c.uid, c.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(d1, "bin", "helper"), 0o755|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	ns := time.Date(2023, 4, 5, 6, 7, 8, 987654321, time.UTC)
	for i, p := range []string{filepath.Join(d1, "db.sqlite"), filepath.Join(d1, "config"), filepath.Join(d2, "uploads"), d1, d2} {
		ts := ns.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(d1, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	e.dataPaths = []string{d1, d2}
	e.dests = []string{filepath.Join(e.root, "dest1"), filepath.Join(xfs, "dest2")}
	return e, xfs
}

// setCloneData replaces the clone seam in s (a testEnv's, for the runners
// it makes next, or one Runner's).
func setCloneData(s *seams, f func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error)) {
	s.cloneData = f
}

// noReflink makes every reflink copy report ErrCloneUnsupported, for tests
// of the tar capture that must not depend on the file system under /tmp
// (btrfs, XFS, overlayfs on them support reflinks).
func noReflink(s *seams) {
	setCloneData(s, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
		return archive.Stats{}, fmt.Errorf("test: %w", archive.ErrCloneUnsupported)
	})
}

func setWriteTree(s *seams, f func(ctx context.Context, w io.Writer, roots []archive.Root, opts archive.Options) (archive.Stats, error)) {
	s.writeTree = f
}

var captureLineRE = regexp.MustCompile(`msg="data captured" service=app capture=(\S+) capture_method=(\w+)`)

// capturedWith returns the capture_method and capture path logged, and
// checks that the summary line reports the same method.
func capturedWith(t *testing.T, log string) (method, path string) {
	t.Helper()
	m := captureLineRE.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no \"data captured\" line with capture_method:\n%s", log)
	}
	if !regexp.MustCompile(`msg="backup finished".* capture_method=` + m[2]).MatchString(log) {
		t.Errorf("the summary line does not report capture_method=%s", m[2])
	}
	return m[2], m[1]
}

// TestCaptureFirstReflink: with the data on XFS with reflink and a
// destination on it (listed second, after one on another file system), the
// capture is a reflink copy in that destination: a 0700 directory whose
// copies have the originals' owners, modes and mtimes, present when the
// unit is started and gone after the run. The archives, extracted by GNU
// tar (unzip for zip), equal the data including owners and mtimes.
func TestCaptureFirstReflink(t *testing.T) {
	t.Parallel()
	for _, format := range config.Formats {
		t.Run(format, func(t *testing.T) {
			e, _ := reflinkEnv(t)
			e.setUnit("app.service", "active")
			e.systemctlEnv("FAKE_SYSTEMCTL_LS", e.dests[1])
			inspected := false
			setCloneData(&e.seams, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
				st, err := archive.Clone(ctx, dir, paths, opts)
				if err != nil {
					return st, err
				}
				inspected = true
				fi, err := os.Stat(dir)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
					t.Errorf("capture directory %v owned by %d, want 0700 and ours", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
				}
				if filepath.Dir(dir) != e.dests[1] {
					t.Errorf("capture in %s, want the destination on the data's file system %s", filepath.Dir(dir), e.dests[1])
				}
				for _, r := range archive.CloneRoots(dir, paths) {
					assertSameMeta(t, "clone of "+r.Name, r.Name, r.Dir)
				}
				return st, nil
			})
			if code := e.run(e.config([]string{"app.service"}, captureFirst(format))); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			if !inspected {
				t.Fatal("no clone made")
			}
			log := e.logBuf.String()
			method, path := capturedWith(t, log)
			if method != "reflink" || filepath.Dir(path) != e.dests[1] || strings.Contains(log, "not available") {
				t.Errorf("captured with %s in %s, want reflink in %s", method, path, e.dests[1])
			}
			b, err := os.ReadFile(filepath.Join(e.sysDir, "start-ls.log"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "\n"+filepath.Base(path)+"\n") || strings.Contains(string(b), "."+format+".tmp-") {
				t.Errorf("at start: want the capture directory and no archive temp file:\n%s", b)
			}
			if e.unitState("app.service") != "active" {
				t.Error("unit not active")
			}
			for _, d := range e.dests {
				assertNoTemps(t, d)
				names := archivesIn(t, d, format)
				if len(names) != 1 {
					t.Fatalf("%s: archives %v", d, destFiles(t, d))
				}
				var out string
				if format == "zip" {
					// -K keeps setuid/setgid bits, -X owners.
					unzip := testtool.Require(t, "unzip", "unzip")
					out = filepath.Join(e.root, "x-"+filepath.Base(d))
					if b, err := exec.Command(unzip, "-q", "-K", "-X", filepath.Join(d, names[0]), "-d", out).CombinedOutput(); err != nil {
						t.Fatalf("unzip: %v\n%s", err, b)
					}
				} else {
					out = extractWithTool(t, filepath.Join(d, names[0]), format, e.root)
				}
				prec := time.Duration(1)
				if format == "zip" {
					prec = time.Second // zip's extended timestamp
				}
				for _, dp := range e.dataPaths {
					assertSameMetaPrec(t, "extracted "+dp, dp, filepath.Join(out, archive.EntryName(dp)), prec)
				}
			}
			if downtime, duration := summaryDurations(t, log); downtime <= 0 || downtime >= duration {
				t.Errorf("downtime %v, duration %v", downtime, duration)
			}
		})
	}
}

// TestCaptureFirstReflinkFallback: without reflink support (tmpfs holding
// data and destination) the clone fails, is logged at Info and the tar
// capture is used in the same downtime; with the destination on another
// file system than the data, no clone is tried at all. The archives are
// right and no capture is left.
func TestCaptureFirstReflinkFallback(t *testing.T) {
	t.Parallel()
	t.Run("tmpfs has no reflink", func(t *testing.T) {
		e := newTestEnv(t)
		tmpfs := filepath.Join(e.root, "tmpfs")
		testtool.MountTmpfs(t, tmpfs, "64m")
		var paths []string
		for _, dp := range e.dataPaths {
			p := filepath.Join(tmpfs, "data", filepath.Base(dp))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", dp, p).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			paths = append(paths, p)
		}
		e.dataPaths = paths
		e.dests = []string{filepath.Join(tmpfs, "dest")}
		e.setUnit("app.service", "active")
		if code := e.run(e.config([]string{"app.service"}, captureFirst("tar.gz"))); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		log := e.logBuf.String()
		if !regexp.MustCompile(`level=INFO msg="reflink copy not available; capturing as an uncompressed tar instead".*operation not supported`).MatchString(log) {
			t.Error("fallback not logged at Info with the reason")
		}
		if method, _ := capturedWith(t, log); method != "tar" {
			t.Errorf("capture_method %s, want tar", method)
		}
		if got := e.callsWithoutPolls(); !slices.Equal(got, []string{"is-active app.service", "stop app.service", "start app.service", "is-active app.service"}) {
			t.Errorf("systemctl calls %q: want one stop and one start around both attempts", got)
		}
		assertOneArchive(t, e.dests[0])
		out := extractWithTool(t, filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0]), "tar.gz", e.root)
		for _, dp := range e.dataPaths {
			assertSameMeta(t, "extracted "+dp, dp, filepath.Join(out, archive.EntryName(dp)))
		}
	})
	t.Run("destination on another file system", func(t *testing.T) {
		e, _ := reflinkEnv(t)
		e.dests = e.dests[:1] // not on the XFS
		setCloneData(&e.seams, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
			t.Error("clone tried across file systems")
			return archive.Stats{}, archive.ErrCloneUnsupported
		})
		if code := e.run(e.config(nil, captureFirst("tar.gz"))); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		log := e.logBuf.String()
		if method, _ := capturedWith(t, log); method != "tar" || strings.Contains(log, "reflink") {
			t.Errorf("capture_method %s, or reflink mentioned", method)
		}
		assertOneArchive(t, e.dests[0])
	})
}

// TestCaptureFirstReflinkCleanup: the reflink copy is removed when the
// compression fails or is interrupted, when the clone is interrupted or
// fails, and when it turns out unsupported after files were cloned (then
// the tar capture takes over); the unit is always started again.
func TestCaptureFirstReflinkCleanup(t *testing.T) {
	t.Parallel()
	cloneExists := func(t *testing.T, dir string) bool {
		for _, n := range destFiles(t, dir) {
			if fi, err := os.Lstat(filepath.Join(dir, n)); err == nil && fi.IsDir() && strings.Contains(n, ".capture.tmp-") {
				return true
			}
		}
		return false
	}
	cases := []struct {
		name string
		want int
		set  func(t *testing.T, e *testEnv, r *Runner, cancel func(), saw *bool)
	}{
		{"compression fails", ExitFailed, func(t *testing.T, e *testEnv, r *Runner, _ func(), saw *bool) {
			setWriteTree(&r.seams, func(ctx context.Context, w io.Writer, roots []archive.Root, opts archive.Options) (archive.Stats, error) {
				if _, err := w.Write(make([]byte, 3<<20)); err != nil {
					return archive.Stats{}, err
				}
				*saw = cloneExists(t, e.dests[1])
				return archive.Stats{}, errors.New("injected compression failure")
			})
		}},
		{"interrupted while compressing", ExitInterrupted, func(t *testing.T, e *testEnv, r *Runner, cancel func(), saw *bool) {
			setWriteTree(&r.seams, func(ctx context.Context, w io.Writer, roots []archive.Root, opts archive.Options) (archive.Stats, error) {
				*saw = cloneExists(t, e.dests[1])
				return archive.WriteTree(ctx, &cancelAfter{w: w, after: 1000, cancel: cancel}, roots, opts)
			})
		}},
		{"interrupted while cloning", ExitInterrupted, func(t *testing.T, e *testEnv, r *Runner, cancel func(), saw *bool) {
			setCloneData(&r.seams, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
				*saw = true
				cancel()
				return archive.Clone(ctx, dir, paths, opts)
			})
		}},
		{"clone fails", ExitFailed, func(t *testing.T, e *testEnv, r *Runner, _ func(), saw *bool) {
			setCloneData(&r.seams, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
				st, err := archive.Clone(ctx, dir, paths, opts)
				*saw = err == nil && cloneExists(t, e.dests[1])
				return st, errors.New("injected clone failure")
			})
		}},
		{"unsupported after a partial clone: tar capture", ExitOK, func(t *testing.T, e *testEnv, r *Runner, _ func(), saw *bool) {
			setCloneData(&r.seams, func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error) {
				st, err := archive.Clone(ctx, dir, paths, opts)
				*saw = err == nil && cloneExists(t, e.dests[1])
				return st, fmt.Errorf("injected: %w", archive.ErrCloneUnsupported)
			})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _ := reflinkEnv(t)
			e.setUnit("app.service", "active")
			r := e.runner(e.config([]string{"app.service"}, captureFirst("tar.gz")))
			e.runCaptureFault(r, c.want, "clone", func(cancel context.CancelFunc, saw *bool) { c.set(t, e, r, cancel, saw) })
			for _, d := range e.dests {
				if c.want == ExitOK {
					assertOneArchive(t, d)
					continue
				}
				if got := destFiles(t, d); len(got) != 0 {
					t.Errorf("%s holds %v, want nothing", d, got)
				}
			}
			if c.want == ExitOK {
				if method, _ := capturedWith(t, e.logBuf.String()); method != "tar" {
					t.Errorf("capture_method %s, want tar", method)
				}
			}
		})
	}
}

// TestCaptureFirstStaleCloneRemoved: the reflink copy a killed run left
// (a real clone: read-only directories, files of other owners) is removed
// by the next run's preflight with everything in it; another service's
// capture directory, a directory named like an archive temp file and a
// symlink named like a capture directory (and what it points to) are kept.
func TestCaptureFirstStaleCloneRemoved(t *testing.T) {
	t.Parallel()
	e, xfs := reflinkEnv(t)
	dest := e.dests[1]
	if err := os.MkdirAll(dest, 0o750); err != nil {
		t.Fatal(err)
	}
	stale := ".app-20240101T000000Z.capture.tmp-0123abcd"
	if _, err := archive.Clone(context.Background(), filepath.Join(dest, stale), e.dataPaths, archive.Options{Format: "tar.gz"}); err != nil {
		t.Fatal(err)
	}
	keep := []string{
		".app-db-20240101T000000Z.capture.tmp-0123abcd", // another service's
		".app-20240101T000000Z.tar.gz.tmp-0123abcd",     // a directory, not a capture
		".app-20240101T000000Z.capture.tmp-0123abcdef",  // not the exact pattern
	}
	for _, k := range keep {
		e.writeFile(filepath.Join(dest, k, "inside"), []byte("keep"), 0o600)
	}
	outside := filepath.Join(xfs, "outside")
	e.writeFile(filepath.Join(outside, "precious"), []byte("keep"), 0o600)
	link := ".app-20240102T000000Z.capture.tmp-0123abcd"
	if err := os.Symlink(outside, filepath.Join(dest, link)); err != nil {
		t.Fatal(err)
	}
	if code := e.run(e.config(nil, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	names := destFiles(t, dest)
	if slices.Contains(names, stale) {
		t.Errorf("stale capture directory not removed: %v", names)
	}
	for _, k := range append(keep, link) {
		if !slices.Contains(names, k) {
			t.Errorf("%s removed", k)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
		t.Errorf("symlink target touched: %v", err)
	}
	if !strings.Contains(e.logBuf.String(), "removed capture directory left by an interrupted run") {
		t.Error("removal not logged")
	}
}
