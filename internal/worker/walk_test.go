//go:build linux

package worker

import (
	"github.com/backupgen/backupgen/internal/testtool"

	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
)

// Worker-level tests of the archive writer's walk (issue 10 items 1, 2, 3
// (capture), 9, 10): full runs with the recording systemctl stand-in.

// archiveContents returns name -> content of every entry of a tar.gz.
func archiveContents(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = string(b)
	}
}

func asNobodyArgs(t *testing.T, args ...string) {
	t.Helper()
	setpriv := testtool.Require(t, "setpriv", "util-linux")
	cmd := exec.Command(setpriv, append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v\n%s", args, err, b)
	}
}

// TestRunDataPathSymlinkToEtc (item 1): the service user, owning the data
// path's parent, replaces the data path by a symlink to /etc. The run
// fails before anything is stopped, naming the data path and the rule; no
// archive is written.
func TestRunDataPathSymlinkToEtc(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newTestEnv(t)
	for _, d := range []string{e.root, filepath.Dir(e.root)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	parent := filepath.Dir(e.dataPaths[0])
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(parent, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asNobodyArgs(t, "mv", e.dataPaths[0], e.dataPaths[0]+".old")
	asNobodyArgs(t, "ln", "-s", "/etc", e.dataPaths[0])
	e.setUnit("app.service", "active")
	code := e.run(e.config([]string{"app.service"}, nil))
	if code != ExitFailed {
		t.Fatalf("exit %d, want %d", code, ExitFailed)
	}
	log := e.logBuf.String()
	if !strings.Contains(log, "nothing was stopped") || !strings.Contains(log, e.dataPaths[0]) || !strings.Contains(log, "refusing to follow") {
		t.Errorf("log does not name the refused data path and the rule")
	}
	for _, c := range e.calls() {
		if strings.HasPrefix(c, "stop") {
			t.Errorf("a unit was stopped: %q", c)
		}
	}
	assertNoArchives(t, e.dests...)
}

// TestRunSwapRaceLive (item 2): with the service running (a live backup),
// a goroutine swaps a sub-directory of the data path for a symlink to a
// directory holding a root-only secret, thousands of times; no archive of
// many runs, normal or captureFirst (tar capture), holds the secret.
func TestRunSwapRaceLive(t *testing.T) {
	t.Parallel()
	for _, captureFirstMode := range []bool{false, true} {
		name := "normal"
		if captureFirstMode {
			name = "captureFirst"
		}
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			const secret = "root:SECRET-HASH:19000"
			secretDir := filepath.Join(e.root, "etc")
			sub := filepath.Join(e.dataPaths[0], "config")
			for _, n := range []string{"app.conf", "nested", "shadow"} {
				e.writeFile(filepath.Join(secretDir, n), []byte(secret), 0o600)
			}
			stop := make(chan struct{})
			var swaps atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if os.Rename(sub, sub+".aside") == nil {
						os.Symlink(secretDir, sub)
						os.Remove(sub)
						os.Rename(sub+".aside", sub)
						swaps.Add(1)
					}
				}
			}()
			defer func() { close(stop); wg.Wait() }()
			cfg := e.config(nil, func(m map[string]any) {
				b := backupSettings(m)
				b["paths"] = e.dests[:1]
				b["retentionSnapshots"] = 1000
				if captureFirstMode {
					b["captureFirst"] = true
				}
			})
			seen := map[string]bool{}
			deadline := time.Now().Add(5 * time.Second)
			runs := 0
			for ; runs < 3 || time.Now().Before(deadline); runs++ {
				e.logBuf = &syncBuffer{}
				r := e.runner(cfg)
				at := time.Now().Add(time.Duration(runs) * time.Minute) // distinct archive names
				r.Now = func() time.Time { return at }
				code := r.Run(context.Background())
				if code != ExitOK && code != ExitWarning {
					t.Fatalf("run %d: exit %d\n%s", runs, code, e.logBuf.String())
				}
				for _, a := range archivesIn(t, e.dests[0], "tar.gz") {
					if seen[a] {
						continue
					}
					seen[a] = true
					for n, c := range archiveContents(t, filepath.Join(e.dests[0], a)) {
						if strings.Contains(c, secret) {
							t.Fatalf("run %d: the secret was archived as %s in %s", runs, n, a)
						}
					}
				}
			}
			t.Logf("%d runs, %d archives checked, %d swaps", runs, len(seen), swaps.Load())
			if swaps.Load() < 1000 {
				t.Errorf("only %d swaps", swaps.Load())
			}
		})
	}
}

// TestRunCaptureFileSwapped (item 3, capture): the destination's owner
// replaces the tar capture by a symlink to another tar (holding a secret)
// between capture and compression. The archive is made from the capture
// the run wrote (read back through its descriptor), not from the symlink.
func TestRunCaptureFileSwapped(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	const secret = "planted-SECRET"
	evilDir := filepath.Join(e.root, "evil")
	e.writeFile(filepath.Join(evilDir, "shadow"), []byte(secret), 0o600)
	evilTar := filepath.Join(e.root, "evil.tar")
	f, err := os.Create(evilTar)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Capture(context.Background(), f, []string{evilDir}, archive.Options{Format: "tar.gz"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["captureFirst"] = true
		backupSettings(m)["paths"] = e.dests[:1]
	})
	e.setUnit("app.service", "active")
	r := e.runner(cfg)
	swapped := false
	r.captureData = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		st, err := archive.Capture(ctx, w, paths, opts)
		if f, ok := w.(*os.File); ok && err == nil {
			name := f.Name()
			if os.Rename(name, name+".moved") == nil && os.Symlink(evilTar, name) == nil {
				swapped = true
			}
		}
		return st, err
	}
	code := r.Run(context.Background())
	t.Log(e.logBuf.String())
	if code != ExitOK || !swapped {
		t.Fatalf("exit %d, swapped %v", code, swapped)
	}
	names := archivesIn(t, e.dests[0], "tar.gz")
	if len(names) != 1 {
		t.Fatalf("archives %v", names)
	}
	got := archiveContents(t, filepath.Join(e.dests[0], names[0]))
	for n, c := range got {
		if strings.Contains(c, secret) {
			t.Fatalf("the planted capture was archived (%s)", n)
		}
	}
	if got[archive.EntryName(filepath.Join(e.dataPaths[0], "config", "app.conf"))] != "listen = 8080\n" {
		t.Errorf("the data is not in the archive")
	}
}

// TestRunDestinationBindMounted (item 9): a destination bind-mounted into
// a data path is left out of the walk (warning naming it); over several
// runs the archive does not grow.
func TestRunDestinationBindMounted(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount")
	}
	for _, captureFirstMode := range []bool{false, true} {
		e := newTestEnv(t)
		mnt := filepath.Join(e.dataPaths[0], "mnt")
		if err := os.MkdirAll(e.dests[0], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("mount", "--bind", e.dests[0], mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot bind-mount: %v %s", err, b)
		}
		t.Cleanup(func() { exec.Command("umount", mnt).Run() })
		cfg := e.config(nil, func(m map[string]any) {
			b := backupSettings(m)
			b["paths"] = e.dests[:1]
			b["retentionSnapshots"] = 100
			b["captureFirst"] = captureFirstMode
		})
		var sizes []int64
		for i := 0; i < 4; i++ {
			e.logBuf = &syncBuffer{}
			if code := e.runner(cfg).Run(context.Background()); code != ExitOK {
				t.Fatalf("captureFirst=%v run %d: exit %d\n%s", captureFirstMode, i, code, e.logBuf.String())
			}
			if !strings.Contains(e.logBuf.String(), "it is the destination "+e.dests[0]) {
				t.Errorf("run %d: no warning about the destination in the data path", i)
			}
			names := archivesIn(t, e.dests[0], "tar.gz")
			fi, err := os.Stat(filepath.Join(e.dests[0], names[len(names)-1]))
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, fi.Size())
		}
		t.Logf("captureFirst=%v sizes %v", captureFirstMode, sizes)
		for _, s := range sizes[1:] {
			if s > sizes[0]+4096 {
				t.Errorf("captureFirst=%v: archive grew: %v", captureFirstMode, sizes)
			}
		}
	}
}

// waitOpen polls this process's descriptors until one is open on path; false
// when stop is closed first.
func waitOpen(path string, stop <-chan struct{}) bool {
	for {
		select {
		case <-stop:
			return false
		default:
		}
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && l == path {
				return true
			}
		}
	}
}

// TestRunChangedFileWarns (item 10): during a live backup a file that keeps
// growing, or is cut short, while it is read ends the run with exit 5
// "warning", a warning naming the file, and the changed file count in the
// summary line.
func TestRunChangedFileWarns(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"grow", "shrink"} {
		t.Run(mode, func(t *testing.T) {
			e := newTestEnv(t)
			big := filepath.Join(e.dataPaths[0], "live.log")
			e.writeFile(big, randomBytes(t, 48<<20), 0o644)
			cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["paths"] = e.dests[:1] })
			r := e.runner(cfg)
			// The service writes its log while the archive reads it: as
			// soon as the archiver has the file open (seen in
			// /proc/self/fd), it is appended to in a loop (grow) or cut to
			// 1 MiB (shrink) until the archive is written.
			r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					if !waitOpen(big, stop) {
						return
					}
					f, err := os.OpenFile(big, os.O_WRONLY|os.O_APPEND, 0)
					if err != nil {
						return
					}
					defer f.Close()
					if mode == "shrink" {
						f.Truncate(1 << 20)
						return
					}
					for {
						select {
						case <-stop:
							return
						default:
							f.Write([]byte("another log line\n"))
						}
					}
				}()
				defer func() { close(stop); wg.Wait() }()
				return archive.Write(ctx, w, paths, opts)
			}
			code := r.Run(context.Background())
			t.Logf("exit %d; log:\n%s", code, e.logBuf.String())
			if code != ExitWarning {
				t.Fatalf("exit %d, want %d (warning)", code, ExitWarning)
			}
			log := e.logBuf.String()
			if !strings.Contains(log, "changed as we read") || !strings.Contains(log, big) {
				t.Errorf("no warning naming %s", big)
			}
			if !strings.Contains(log, "result=warning") || !strings.Contains(log, "changed_files=") {
				t.Errorf("summary line lacks result=warning / changed_files")
			}
			assertOneArchive(t, e.dests[0])
		})
	}
}
