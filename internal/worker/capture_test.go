package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

func captureFirst(format string) func(m map[string]any) {
	return func(m map[string]any) {
		b := backupSettings(m)
		b["captureFirst"] = true
		b["format"] = format
	}
}

// extractWithTool extracts an archive with GNU tar or unzip into a new dir.
func extractWithTool(t *testing.T, arch, format, root string) string {
	t.Helper()
	out, err := os.MkdirTemp(root, "x")
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if format == "zip" {
		cmd = exec.Command("unzip", "-q", arch, "-d", out)
	} else {
		cmd = exec.Command("tar", "-xf", arch, "-C", out)
	}
	if _, err := exec.LookPath(cmd.Args[0]); err != nil {
		t.Skipf("%s not installed", cmd.Args[0])
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, b)
	}
	return out
}

// summaryDurations returns downtime and duration from the summary line.
func summaryDurations(t *testing.T, log string) (downtime, duration time.Duration) {
	t.Helper()
	m := regexp.MustCompile(`msg="backup finished".* duration=(\S+) downtime=(\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatal("no summary line with duration and downtime")
	}
	duration, err1 := time.ParseDuration(m[1])
	downtime, err2 := time.ParseDuration(m[2])
	if err1 != nil || err2 != nil {
		t.Fatalf("summary durations %q %q: %v %v", m[1], m[2], err1, err2)
	}
	return downtime, duration
}

// TestCaptureFirst: in every format the capture-first run writes archives
// that GNU tar / unzip restore to the data; the unit is started while the
// capture exists and before any archive temp file exists; the capture is
// gone afterwards; downtime is shorter than the run.
func TestCaptureFirst(t *testing.T) {
	t.Parallel()
	for _, format := range config.Formats {
		t.Run(format, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			e.systemctlEnv("FAKE_SYSTEMCTL_LS", e.dests[0])
			if code := e.run(e.config([]string{"app.service"}, captureFirst(format))); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			if e.unitState("app.service") != "active" {
				t.Error("unit not active")
			}
			if got := e.callsWithoutPolls(); !slices.Equal(got, []string{"is-active app.service", "stop app.service", "start app.service", "is-active app.service"}) {
				t.Errorf("systemctl calls %q", got)
			}
			b, err := os.ReadFile(filepath.Join(e.sysDir, "start-ls.log"))
			if err != nil {
				t.Fatal(err)
			}
			atStart := string(b)
			if !regexp.MustCompile(`(?m)^\.app-\d{8}T\d{6}Z\.capture\.tmp-[0-9a-f]{8}$`).MatchString(atStart) {
				t.Errorf("no capture file in the destination when the unit was started:\n%s", atStart)
			}
			if strings.Contains(atStart, "."+format+".tmp-") || regexp.MustCompile(`(?m)^app-`).MatchString(atStart) {
				t.Errorf("archive temp file or archive existed before the unit was started (compression began while it was down):\n%s", atStart)
			}
			for _, d := range e.dests {
				names := archivesIn(t, d, format)
				if len(names) != 1 {
					t.Fatalf("%s: archives %v", d, destFiles(t, d))
				}
				assertNoTemps(t, d)
				out := extractWithTool(t, filepath.Join(d, names[0]), format, e.root)
				for _, dp := range e.dataPaths {
					assertSameTree(t, dp, filepath.Join(out, archive.EntryName(dp)))
				}
			}
			log := e.logBuf.String()
			downtime, duration := summaryDurations(t, log)
			if downtime <= 0 || downtime >= duration {
				t.Errorf("downtime %v, duration %v: want 0 < downtime < duration", downtime, duration)
			}
			if !strings.Contains(log, "data captured and units started again") {
				t.Error("capture/restart not logged")
			}
		})
	}
}

// TestCaptureFirstCleanup: the capture is removed when capturing fails,
// when compressing fails, and when the run is interrupted; the unit is
// always started again and no archive appears.
func TestCaptureFirstCleanup(t *testing.T) {
	t.Parallel()
	captureExists := func(t *testing.T, dir string) bool {
		for _, n := range destFiles(t, dir) {
			if strings.Contains(n, ".capture.tmp-") {
				return true
			}
		}
		return false
	}
	cases := []struct {
		name string
		want int
		set  func(e *testEnv, r *Runner, cancel func(), saw *bool)
	}{
		{"capture fails", ExitFailed, func(e *testEnv, r *Runner, _ func(), saw *bool) {
			r.captureData = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
				if _, err := w.Write(make([]byte, 1<<20)); err != nil {
					return archive.Stats{}, err
				}
				*saw = captureExists(e.t, e.dests[0])
				return archive.Stats{}, errors.New("injected capture failure")
			}
		}},
		{"compression fails", ExitFailed, func(e *testEnv, r *Runner, _ func(), saw *bool) {
			r.convertCapture = func(ctx context.Context, w io.Writer, rd io.Reader, opts archive.Options) (archive.Stats, error) {
				if _, err := w.Write(make([]byte, 3<<20)); err != nil {
					return archive.Stats{}, err
				}
				*saw = captureExists(e.t, e.dests[0])
				return archive.Stats{}, errors.New("injected compression failure")
			}
		}},
		{"interrupted while compressing", ExitInterrupted, func(e *testEnv, r *Runner, cancel func(), saw *bool) {
			r.convertCapture = func(ctx context.Context, w io.Writer, rd io.Reader, opts archive.Options) (archive.Stats, error) {
				*saw = captureExists(e.t, e.dests[0])
				return archive.Convert(ctx, &cancelAfter{w: w, after: 1000, cancel: cancel}, rd, opts)
			}
		}},
		{"interrupted while capturing", ExitInterrupted, func(e *testEnv, r *Runner, cancel func(), saw *bool) {
			r.captureData = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
				*saw = captureExists(e.t, e.dests[0])
				cancel()
				return archive.Capture(ctx, w, paths, opts)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			noReflink(&e.seams) // the cases inject into the tar capture
			r := e.runner(e.config([]string{"app.service"}, captureFirst("tar.gz")))
			e.runCaptureFault(r, c.want, "capture file", func(cancel context.CancelFunc, saw *bool) { c.set(e, r, cancel, saw) })
			for _, d := range e.dests {
				if got := destFiles(t, d); len(got) != 0 {
					t.Errorf("%s holds %v, want nothing", d, got)
				}
			}
		})
	}
}

// TestCaptureFirstRoom: the capture's space is checked before anything is
// stopped. A 600 KiB destination has room for the ~360 KiB archive but not
// for archive plus capture: alone, the run fails before stopping; listed
// first beside a roomy destination, the capture goes to the other one and
// both get the archive.
func TestCaptureFirstRoom(t *testing.T) {
	t.Parallel()
	mount := func(t *testing.T, dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount tmpfs (need root in a mount-capable namespace): %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
	}
	t.Run("no room anywhere", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.dests = e.dests[:1]
		mount(t, e.dests[0])
		if code := e.run(e.config([]string{"app.service"}, captureFirst("tar.gz"))); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called: %q", got)
		}
		if !strings.Contains(e.logBuf.String(), "no destination has room for the uncompressed capture") {
			t.Error("no capture-room message")
		}
		if got := destFiles(t, e.dests[0]); len(got) != 0 {
			t.Errorf("destination holds %v", got)
		}
	})
	t.Run("capture goes to the destination with room", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		mount(t, e.dests[0])
		e.systemctlEnv("FAKE_SYSTEMCTL_LS", e.dests[1])
		if code := e.run(e.config([]string{"app.service"}, captureFirst("tar.gz"))); code != ExitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		b, _ := os.ReadFile(filepath.Join(e.sysDir, "start-ls.log"))
		if !strings.Contains(string(b), ".capture.tmp-") {
			t.Errorf("capture not in %s when the unit started:\n%s", e.dests[1], b)
		}
		for _, d := range e.dests {
			assertOneArchive(t, d)
		}
	})
}

func TestCaptureFirstStaleCaptureRemoved(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	stale := ".app-20240101T000000Z.capture.tmp-0123abcd"
	foreign := ".app-db-20240101T000000Z.capture.tmp-0123abcd"
	e.writeFile(filepath.Join(e.dests[0], stale), []byte("capture"), 0o600)
	e.writeFile(filepath.Join(e.dests[0], foreign), []byte("other service's"), 0o600)
	if code := e.run(e.config(nil, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	names := destFiles(t, e.dests[0])
	if slices.Contains(names, stale) || !slices.Contains(names, foreign) {
		t.Errorf("destination holds %v: want the stale capture removed, the other service's kept", names)
	}
}

// TestProgressLogged: without a terminal, progress lines with files and
// bytes are logged at the (test-shortened) interval, in both modes.
func TestProgressLogged(t *testing.T) {
	t.Parallel()
	for _, capture := range []bool{false, true} {
		e := newTestEnv(t)
		noReflink(&e.seams) // the capture seam below is the tar capture's
		r := e.runner(e.config(nil, func(m map[string]any) { backupSettings(m)["captureFirst"] = capture }))
		r.progressInterval = 5 * time.Millisecond
		slow := func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
			st, err := archive.Write(ctx, w, paths, opts)
			time.Sleep(50 * time.Millisecond) // ticks see the final counters
			return st, err
		}
		r.writeArchive = slow
		r.captureData = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
			st, err := archive.Capture(ctx, w, paths, opts)
			time.Sleep(50 * time.Millisecond)
			return st, err
		}
		if code := r.Run(context.Background()); code != ExitOK {
			t.Fatalf("exit %d:\n%s", code, e.logBuf.String())
		}
		phase := "archiving"
		if capture {
			phase = "capturing"
		}
		re := regexp.MustCompile(`msg=progress service=app phase=` + phase + ` files=[1-9]\d* bytes=[1-9]\d* total_bytes=[1-9]\d* rate=".+/s" eta=`)
		if !re.MatchString(e.logBuf.String()) {
			t.Errorf("captureFirst=%v: no progress line for %s:\n%s", capture, phase, e.logBuf.String())
		}
	}
}

// TestProgressTerminal: on a terminal the line is drawn and erased.
func TestProgressTerminal(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	var out syncBuffer
	r := e.runner(e.config(nil, nil))
	r.progressTTY = func() bool { return true }
	r.progressOut = &out
	r.progressInterval = 5 * time.Millisecond
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		st, err := archive.Write(ctx, w, paths, opts)
		time.Sleep(50 * time.Millisecond)
		return st, err
	}
	if code := r.Run(context.Background()); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	s := out.String()
	if !regexp.MustCompile(`\r\x1b\[Karchiving: \S+ \S+ of ~\S+ \S+ \(\d+%\), [1-9]\d* files, \S+ \S+/s, ETA \S+`).MatchString(s) || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("terminal output %q", s)
	}
	if strings.Contains(e.logBuf.String(), "msg=progress") {
		t.Error("progress logged although a terminal shows it")
	}
}

// TestCaptureFirstKernelCopy: with the data and the staging destination on
// one ext4 (no reflinks), the tar capture's file contents are copied by
// the kernel (copy_file_range: copied_in_kernel logged, at least the big
// file), and the archive restores to the data; with the destination on
// another file system the contents are read and written
// (copied_in_kernel=0) and the archive is the same.
func TestCaptureFirstKernelCopy(t *testing.T) {
	for _, sameFS := range []bool{true, false} {
		t.Run(map[bool]string{true: "one ext4", false: "destination elsewhere"}[sameFS], func(t *testing.T) {
			e := newTestEnv(t)
			ext4 := filepath.Join(e.root, "ext4")
			testtool.MountExt4(t, ext4, "128M")
			var paths []string
			for _, dp := range e.dataPaths {
				p := filepath.Join(ext4, "data", filepath.Base(dp))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command("cp", "-a", dp, p).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				paths = append(paths, p)
			}
			const big = 3 << 20
			e.writeFile(filepath.Join(paths[0], "big.bin"), randomBytes(t, big), 0o600)
			e.dataPaths = paths
			e.dests = []string{filepath.Join(e.root, "dest")}
			if sameFS {
				e.dests = []string{filepath.Join(ext4, "dest")}
			}
			e.setUnit("app.service", "active")
			if code := e.run(e.config([]string{"app.service"}, captureFirst("tar.zst"))); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			log := e.logBuf.String()
			if method, _ := capturedWith(t, log); method != "tar" {
				t.Errorf("capture_method %s, want tar", method)
			}
			m := regexp.MustCompile(`msg="data captured".* bytes_read=(\d+) copied_in_kernel=(\d+)`).FindStringSubmatch(log)
			if m == nil {
				t.Fatalf("no copied_in_kernel in the \"data captured\" line:\n%s", log)
			}
			read, _ := strconv.ParseInt(m[1], 10, 64)
			kernel, _ := strconv.ParseInt(m[2], 10, 64)
			if sameFS && (kernel < big || kernel > read) || !sameFS && kernel != 0 {
				t.Errorf("copied_in_kernel=%d of bytes_read=%d (same file system: %v)", kernel, read, sameFS)
			}
			names := archivesIn(t, e.dests[0], "tar.zst")
			if len(names) != 1 {
				t.Fatalf("archives %v", destFiles(t, e.dests[0]))
			}
			assertNoTemps(t, e.dests[0])
			out := extractWithTool(t, filepath.Join(e.dests[0], names[0]), "tar.zst", e.root)
			for _, dp := range e.dataPaths {
				assertSameMeta(t, "extracted "+dp, dp, filepath.Join(out, archive.EntryName(dp)))
			}
		})
	}
}
