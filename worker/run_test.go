package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/archive"
	"github.com/backupgen/backupgen/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// treeOf describes a directory tree (type, mode, content, link target) for
// comparison, keyed by path relative to root.
func treeOf(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
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

func assertSameTree(t *testing.T, want, got string) {
	t.Helper()
	w, g := treeOf(t, want), treeOf(t, got)
	for k, v := range w {
		if g[k] != v {
			t.Errorf("%s: %q differs from the original", filepath.Join(got, k), trunc(g[k]))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: not in the original", filepath.Join(got, k))
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func TestRunHappyPath(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	hookLog := filepath.Join(e.root, "hooks.log")
	metrics := filepath.Join(e.root, "metrics", "app.prom")
	os.MkdirAll(filepath.Dir(metrics), 0o755)
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		// Numeric ids that exist nowhere: chown must use them verbatim
		// (only root may give files away).
		if os.Geteuid() == 0 {
			m["user"], m["group"] = "1234", "5678"
		}
		b := backupSettings(m)
		b["preBackup"] = `echo "pre $BACKUP_NAME" >> ` + hookLog
		b["postBackup"] = `echo "post $BACKUP_NAME $BACKUP_RESULT" >> ` + hookLog
		b["prometheusTextfile"] = metrics
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	wantCalls := []string{
		"is-active app.service",
		"stop app.service",
		"start app.service",
		"is-active app.service",
	}
	if got := e.callsWithoutPolls(); !slices.Equal(got, wantCalls) {
		t.Errorf("systemctl calls = %q, want %q", got, wantCalls)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not active after the run")
	}
	var names []string
	for _, dest := range e.dests {
		archives := archivesIn(t, dest, "tar.gz")
		if len(archives) != 1 {
			t.Fatalf("%s: archives %v, want exactly one", dest, archivesIn(t, dest, "tar.gz"))
		}
		names = append(names, archives[0])
		path := filepath.Join(dest, archives[0])
		for _, p := range []string{path, path + ".sha256"} {
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			wantUID, wantGID := uint32(1234), uint32(5678)
			if os.Geteuid() != 0 {
				wantUID, wantGID = uint32(os.Getuid()), uint32(os.Getgid())
			}
			if fi.Mode().Perm() != 0o640 || st.Uid != wantUID || st.Gid != wantGID {
				t.Errorf("%s: mode %v owner %d:%d, want 0640 %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid, wantUID, wantGID)
			}
		}
		// The real sha256sum accepts the checksum file.
		cmd := exec.Command("sha256sum", "-c", archives[0]+".sha256")
		cmd.Dir = dest
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c in %s: %v\n%s", dest, err, out)
		}
		// GNU tar extracts it to the original tree.
		out := filepath.Join(e.root, "untar-"+filepath.Base(dest))
		os.MkdirAll(out, 0o755)
		if b, err := exec.Command("tar", "-xzf", path, "-C", out).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, b)
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, dp, filepath.Join(out, archive.EntryName(dp)))
		}
		if files := destFiles(t, dest); len(files) != 3 {
			t.Errorf("%s holds %v, want the archive, its checksum and its signature only", dest, files)
		}
		if err := checkTrust(context.Background(), e.key(), dest, filepath.Base(path)); err != nil {
			t.Errorf("the run's own archive is not trusted: %v", err)
		}
	}
	if names[0] != names[1] {
		t.Errorf("archive names differ: %v", names)
	}
	assertNoTemps(t, e.dests...)
	if _, err := os.Lstat(stateFilePath(e.stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file still there: %v", err)
	}
	hooks, _ := os.ReadFile(hookLog)
	if string(hooks) != "pre app\npost app success\n" {
		t.Errorf("hooks ran as %q", hooks)
	}
	prom, err := os.ReadFile(metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`backupgen_last_success_timestamp_seconds{service="app"} `,
		`backupgen_last_run_success{service="app"} 1`,
		`backupgen_archives{service="app",destination="` + e.dests[0] + `"} 1`,
		`backupgen_last_run_downtime_seconds{service="app"} `,
		`backupgen_last_run_archive_bytes{service="app"} `,
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("metrics lack %q:\n%s", want, prom)
		}
	}
	log := e.logBuf.String()
	// The unit comes back as soon as the stream is complete, before the
	// copies are verified.
	if started, verified := strings.Index(log, `msg="unit started"`), strings.Index(log, `msg="archive written and verified"`); started < 0 || verified < 0 || started > verified {
		t.Errorf("unit started at %d, verification logged at %d; want the restart first", started, verified)
	}
	if n := strings.Count(log, `msg="backup finished"`); n != 1 {
		t.Errorf("%d summary lines, want 1", n)
	}
	for _, want := range []string{"result=success", "bytes_read=", "bytes_written=", "downtime=", "destinations." + e.dests[0] + "=ok"} {
		if !strings.Contains(log, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func TestRunPanicRestartsUnits(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	r := e.runner(e.config([]string{"app.service"}, nil))
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		w.Write(make([]byte, 2<<20))
		panic("injected panic")
	}
	code := r.Run(context.Background())
	t.Log(e.logBuf.String())
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted after panic")
	}
	assertNoArchives(t, e.dests...)
	if _, err := os.Lstat(stateFilePath(e.stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file left behind")
	}
}

func TestRunServiceInactiveIsNotStarted(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "inactive")
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if got := e.calls(); !slices.Equal(got, []string{"is-active app.service"}) {
		t.Errorf("calls = %q, want only is-active", got)
	}
	if e.unitState("app.service") != "inactive" {
		t.Error("inactive unit was started")
	}
}

func TestRunWithoutUnitsCallsNoSystemctl(t *testing.T) {
	e := newTestEnv(t)
	if code := e.run(e.config(nil, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if got := e.calls(); len(got) != 0 {
		t.Errorf("calls = %q, want none", got)
	}
	for _, d := range e.dests {
		if len(archivesIn(t, d, "tar.gz")) != 1 {
			t.Errorf("%s: no archive", d)
		}
	}
}

func TestRunTwoUnitsStopInOrderStartInReverse(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app-db.service", "active")
	e.setUnit("app-web.service", "active")
	if code := e.run(e.config([]string{"app-web.service", "app-db.service"}, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	want := []string{
		"is-active app-web.service",
		"stop app-web.service",
		"is-active app-db.service",
		"stop app-db.service",
		"start app-db.service",
		"is-active app-db.service",
		"start app-web.service",
		"is-active app-web.service",
	}
	if got := e.callsWithoutPolls(); !slices.Equal(got, want) {
		t.Errorf("calls =\n%q\nwant\n%q", got, want)
	}
}

func TestRunArchiveFailsMidway(t *testing.T) {
	t.Run("injected", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		r := e.runner(e.config([]string{"app.service"}, nil))
		// The archiver fails after its output passed the 1 MiB buffer, so
		// destinations already hold partial temp files.
		var sawTemp bool
		r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
			if _, err := w.Write(make([]byte, 3<<20)); err != nil {
				return archive.Stats{}, err
			}
			for _, d := range e.dests {
				for _, n := range destFiles(t, d) {
					sawTemp = sawTemp || strings.Contains(n, ".tmp-")
				}
			}
			return archive.Stats{}, errors.New("injected archive failure")
		}
		code := r.Run(context.Background())
		t.Log(e.logBuf.String())
		if code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if !sawTemp {
			t.Error("test did not reach the point where temp files exist")
		}
		if e.unitState("app.service") != "active" {
			t.Error("unit not restarted")
		}
		assertNoArchives(t, e.dests...)
		if !strings.Contains(e.logBuf.String(), "injected archive failure") {
			t.Error("error not reported")
		}
	})
	t.Run("data path vanishes after stop", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		r := e.runner(e.config([]string{"app.service"}, nil))
		r.afterStop = func(context.Context) { os.RemoveAll(e.dataPaths[1]) }
		code := r.Run(context.Background())
		t.Log(e.logBuf.String())
		if code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if e.unitState("app.service") != "active" {
			t.Error("unit not restarted")
		}
		assertNoArchives(t, e.dests...)
	})
	t.Run("missing data path fails before stopping", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.dataPaths = append(e.dataPaths, filepath.Join(e.root, "nope"))
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called: %q", got)
		}
		if !strings.Contains(e.logBuf.String(), "nope") {
			t.Error("missing data path not named")
		}
	})
}

func TestRunOneDestinationFullDisk(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	testtool.MountTmpfs(t, e.dests[1], "64k")
	// A small previous archive in each destination makes the preflight
	// estimate small (newest archive + 10%), so the run gets past
	// preflight and the tiny disk fills up mid-stream, as when data grew.
	old := "app-20200101T000000Z.tar.gz"
	for _, d := range e.dests {
		e.writeFile(filepath.Join(d, old), []byte("old archive"), 0o640)
	}
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 1
	})
	if code := e.run(cfg); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
	good := archivesIn(t, e.dests[0], "tar.gz")
	if len(good) != 1 || good[0] == old {
		t.Errorf("good destination holds %v, want only the new archive (old one pruned)", good)
	}
	if got := destFiles(t, e.dests[1]); !slices.Equal(got, []string{old}) {
		t.Errorf("full destination holds %v, want only the untouched old archive", got)
	}
	log := e.logBuf.String()
	if !strings.Contains(log, "no space left on device") || !strings.Contains(log, "result=partial") {
		t.Error("log does not report the full disk and the partial result")
	}
}

func TestRunInterruptedDuringArchive(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	postLog := filepath.Join(e.root, "post.log")
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["postBackup"] = `echo "$BACKUP_RESULT" > ` + postLog
	})
	r := e.runner(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		// SIGTERM arrives after the archiver produced its first bytes.
		return archive.Write(ctx, &cancelAfter{w: w, after: 1000, cancel: cancel}, paths, opts)
	}
	code := r.Run(ctx)
	t.Log(e.logBuf.String())
	if code != ExitInterrupted {
		t.Fatalf("exit %d, want 130", code)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted after interruption")
	}
	assertNoArchives(t, e.dests...)
	if _, err := os.Lstat(stateFilePath(e.stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file left behind")
	}
	if b, _ := os.ReadFile(postLog); string(b) != "interrupted\n" {
		t.Errorf("post hook saw BACKUP_RESULT=%q", b)
	}
}

type cancelAfter struct {
	w      io.Writer
	after  int
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.n += len(p)
	if c.n > c.after {
		c.cancel()
	}
	return c.w.Write(p)
}

func TestRunLockHeld(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["lockTimeoutSec"] = 1
	})
	first := e.runner(cfg)
	inArchive := make(chan struct{})
	release := make(chan struct{})
	first.afterStop = func(context.Context) {
		close(inArchive)
		<-release
	}
	firstCode := make(chan int)
	go func() { firstCode <- first.Run(context.Background()) }()
	<-inArchive

	second := e.runner(cfg)
	var secondLog bytes.Buffer
	second.Log = newLogger(&secondLog, 0)
	start := time.Now()
	code := second.Run(context.Background())
	elapsed := time.Since(start)
	close(release)
	if code != ExitLockHeld {
		t.Errorf("second run: exit %d, want 4", code)
	}
	if elapsed < time.Second || elapsed > 3*time.Second {
		t.Errorf("second run gave up after %v, want about the 1s lock timeout", elapsed)
	}
	want := "another backup of app is running (lock " + lockFilePath(e.stateDir, "app") + " held for 1s)"
	if !strings.Contains(secondLog.String(), want) {
		t.Errorf("second run's message lacks %q:\n%s", want, secondLog.String())
	}
	if code := <-firstCode; code != ExitOK {
		t.Errorf("first run: exit %d, want 0\n%s", code, e.logBuf.String())
	}
	for _, d := range e.dests {
		if len(archivesIn(t, d, "tar.gz")) != 1 {
			t.Errorf("%s: first run's archive missing", d)
		}
	}
}

func TestRunStopFails(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app-web.service", "active")
	e.setUnit("app-db.service", "active")
	e.marker("app-db.service", "fail-stop")
	code := e.run(e.config([]string{"app-web.service", "app-db.service"}, nil))
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	assertNoArchives(t, e.dests...)
	log := e.logBuf.String()
	if !strings.Contains(log, "stop app-db.service") {
		t.Error("error does not name the unit")
	}
	if e.unitState("app-web.service") != "active" {
		t.Error("already-stopped unit not restarted")
	}
	calls := e.callsWithoutPolls()
	i := slices.Index(calls, "start app-web.service")
	if i < 0 || !slices.Contains(calls[i:], "start app-web.service") {
		t.Errorf("app-web not started again: %q", calls)
	}
	// The unit whose stop failed is started too (a no-op if it is still
	// running), and after app-web's stop came app-db's, so it goes first.
	if j := slices.Index(calls, "start app-db.service"); j < 0 || j > i {
		t.Errorf("want app-db started before app-web: %q", calls)
	}
	if _, err := os.Lstat(stateFilePath(e.stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file left behind")
	}
}

func TestRunStopFailsWithLiveBackupAllowed(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	e.marker("app.service", "fail-stop")
	code := e.run(e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["allowLiveBackup"] = true
	}))
	if code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if len(archivesIn(t, e.dests[0], "tar.gz")) != 1 {
		t.Error("no archive")
	}
}

func TestRunStartFails(t *testing.T) {
	for _, how := range []string{"fail-start", "no-come-back"} {
		t.Run(how, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			e.marker("app.service", how)
			code := e.run(e.config([]string{"app.service"}, nil))
			if code != ExitFailed {
				t.Fatalf("exit %d, want 1", code)
			}
			log := e.logBuf.String()
			if !strings.Contains(log, `level=ERROR msg="unit did not come back" service=app unit=app.service`) {
				t.Error("no ERROR line naming the unit")
			}
			for _, d := range e.dests {
				if len(archivesIn(t, d, "tar.gz")) != 1 {
					t.Errorf("%s: archive missing; it must stay", d)
				}
			}
			// The state file keeps the unit for `recover`.
			units, err := readStoppedState(stateFilePath(e.stateDir, "app"), []string{"app.service"})
			if err != nil || !slices.Equal(units, []string{"app.service"}) {
				t.Errorf("state file = %v, %v; want [app.service]", units, err)
			}
		})
	}
}

func TestRunRecoversStaleStateFirst(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "inactive")
	os.MkdirAll(e.stateDir, 0o700)
	if err := writeStoppedState(stateFilePath(e.stateDir, "app"), []string{"app.service"}); err != nil {
		t.Fatal(err)
	}
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	want := []string{
		"start app.service", "is-active app.service", // recovery of the stale state
		"stop app.service", "start app.service", "is-active app.service",
	}
	if got := e.callsWithoutPolls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not active")
	}
}

func TestRecoverCommand(t *testing.T) {
	e := newTestEnv(t)
	// As if the worker was SIGKILLed after stopping both units.
	e.setUnit("app-web.service", "inactive")
	e.setUnit("app-db.service", "inactive")
	cfgPath := e.configFile([]string{"app-web.service", "app-db.service"}, nil)
	os.MkdirAll(e.stateDir, 0o700)
	if err := writeStoppedState(stateFilePath(e.stateDir, "app"), []string{"app-web.service", "app-db.service"}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), "test", []string{"recover", "--config", cfgPath}, &stdout, &stderr)
	t.Log(stderr.String())
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, u := range []string{"app-web.service", "app-db.service"} {
		if e.unitState(u) != "active" {
			t.Errorf("%s not started", u)
		}
	}
	calls := e.callsWithoutPolls()
	want := []string{"start app-db.service", "is-active app-db.service", "start app-web.service", "is-active app-web.service"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls = %q, want %q", calls, want)
	}
	if _, err := os.Lstat(stateFilePath(e.stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file not removed")
	}
	// Nothing to do the second time.
	stderr.Reset()
	if code := Main(context.Background(), "test", []string{"recover", "--config", cfgPath}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("second recover: exit %d", code)
	}
	if !strings.Contains(stderr.String(), "nothing to recover") {
		t.Errorf("second recover said %q", stderr.String())
	}
}

func TestRunPreflight(t *testing.T) {
	t.Run("destination is a file: the others get the archive", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.writeFile(e.dests[1], []byte("not a dir"), 0o644)
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
			t.Fatalf("exit %d, want 3 (partial)", code)
		}
		if !strings.Contains(e.logBuf.String(), e.dests[1]+": not a directory") {
			t.Error("destination not named")
		}
		if e.unitState("app.service") != "active" {
			t.Error("unit not active after the run")
		}
		assertOneArchive(t, e.dests[0])
		if b, _ := os.ReadFile(e.dests[1]); string(b) != "not a dir" {
			t.Error("the file in the way was touched")
		}
	})
	t.Run("no usable destination: nothing is stopped", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.writeFile(e.dests[0], []byte("not a dir"), 0o644)
		e.writeFile(e.dests[1], []byte("not a dir"), 0o644)
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called before preflight passed: %q", got)
		}
		log := e.logBuf.String()
		for _, want := range []string{"no destination available", e.dests[0] + ": not a directory", e.dests[1] + ": not a directory"} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q", want)
			}
		}
	})
	t.Run("optional destination missing is skipped", func(t *testing.T) {
		e := newTestEnv(t)
		cfg := e.config(nil, func(m map[string]any) {
			backupSettings(m)["optionalPaths"] = []string{e.dests[1]}
		})
		if code := e.run(cfg); code != ExitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		if _, err := os.Stat(e.dests[1]); !errors.Is(err, os.ErrNotExist) {
			t.Error("optional destination was created")
		}
		if !strings.Contains(e.logBuf.String(), "optional destination missing") {
			t.Error("no warning")
		}
	})
	t.Run("missing destination is created", func(t *testing.T) {
		e := newTestEnv(t)
		if code := e.run(e.config(nil, nil)); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		fi, err := os.Stat(e.dests[0])
		if err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("destination: %v %v, want mode 0750", fi, err)
		}
	})
	t.Run("not enough space on one destination", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		testtool.MountTmpfs(t, e.dests[1], "64k")
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
			t.Fatalf("exit %d, want 3 (partial)", code)
		}
		if !strings.Contains(e.logBuf.String(), "the archive needs about") {
			t.Error("no space message")
		}
		assertOneArchive(t, e.dests[0])
		assertNoArchives(t, e.dests[1])
		assertNoTemps(t, e.dests[1])
		if e.unitState("app.service") != "active" {
			t.Error("unit not active after the run")
		}
	})
	t.Run("pre hook fails", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		cfg := e.config([]string{"app.service"}, func(m map[string]any) {
			backupSettings(m)["preBackup"] = "exit 7"
		})
		if code := e.run(cfg); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called: %q", got)
		}
	})
	t.Run("stale temp files removed", func(t *testing.T) {
		e := newTestEnv(t)
		stale := ".app-20240101T000000Z.tar.gz.tmp-0123abcd"
		foreign := ".app-db-20240101T000000Z.tar.gz.tmp-0123abcd"
		e.writeFile(filepath.Join(e.dests[0], stale), []byte("partial"), 0o600)
		e.writeFile(filepath.Join(e.dests[0], foreign), []byte("other service's"), 0o600)
		if code := e.run(e.config(nil, nil)); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		if _, err := os.Lstat(filepath.Join(e.dests[0], stale)); !errors.Is(err, os.ErrNotExist) {
			t.Error("stale temp file not removed")
		}
		if _, err := os.Lstat(filepath.Join(e.dests[0], foreign)); err != nil {
			t.Error("another service's temp file was removed")
		}
	})
}

func TestPruneNeverTouchesForeignFiles(t *testing.T) {
	e := newTestEnv(t)
	dest := e.dests[0]
	e.dests = e.dests[:1]
	own := []string{"app-20200101T000000Z.tar.gz", "app-20210101T000000Z.tar.gz"}
	foreign := []string{
		"app-db-20190101T000000Z.tar.gz",        // other service whose name starts with "app"
		"app-db-20190101T000000Z.tar.gz.sha256", // its checksum
		"app-20190101T000000Z.tar.xz",           // our name, other format
		"notes.txt",
		"app-20190101T000000Z.tar.gz.bak",
	}
	for _, n := range append(slices.Clone(own), foreign...) {
		e.writeFile(filepath.Join(dest, n), []byte(n), 0o644)
	}
	e.writeFile(filepath.Join(dest, own[0]+".sha256"), []byte("x  "+own[0]+"\n"), 0o644)
	// A directory and a symlink named exactly like old archives.
	dirLike := "app-20180101T000000Z.tar.gz"
	if err := os.MkdirAll(filepath.Join(dest, dirLike, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	linkLike := "app-20170101T000000Z.tar.gz"
	target := filepath.Join(e.root, "precious")
	e.writeFile(target, []byte("precious"), 0o644)
	if err := os.Symlink(target, filepath.Join(dest, linkLike)); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["retentionSnapshots"] = 1
		b["maxRetentionDays"] = 1
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	files := destFiles(t, dest)
	for _, n := range own {
		if slices.Contains(files, n) {
			t.Errorf("old archive %s not pruned", n)
		}
	}
	if slices.Contains(files, own[0]+".sha256") {
		t.Error("checksum of pruned archive left behind")
	}
	for _, n := range append(foreign, dirLike, linkLike) {
		if !slices.Contains(files, n) {
			t.Errorf("foreign %s was removed", n)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, dirLike, "inside")); err != nil {
		t.Error("directory named like an archive was touched")
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Error("symlink target touched")
	}
	if got := archivesIn(t, dest, "tar.gz"); len(got) != 3 { // new one + dir + symlink
		t.Errorf("archives now %v", got)
	}

	// The prune command agrees: nothing more to remove.
	var stdout, stderr bytes.Buffer
	cfgPath := filepath.Join(e.root, "config.json")
	if code := Main(context.Background(), "test", []string{"prune", "--config", cfgPath, "--dry-run"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "1 kept, 0 would remove") {
		t.Errorf("prune --dry-run said:\n%s", stdout.String())
	}
}

func TestPruneCommandDryRun(t *testing.T) {
	e := newTestEnv(t)
	dest := e.dests[0]
	e.dests = e.dests[:1]
	for _, n := range []string{"app-20200101T000000Z.tar.gz", "app-20210101T000000Z.tar.gz", "app-20220101T000000Z.tar.gz"} {
		e.writeSummedArchive(dest, n)
	}
	cfgPath := e.configFile(nil, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 2
	})
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), "test", []string{"prune", "--config", cfgPath, "--dry-run"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "would remove "+filepath.Join(dest, "app-20200101T000000Z.tar.gz")) {
		t.Errorf("dry run output:\n%s", stdout.String())
	}
	if len(archivesIn(t, dest, "tar.gz")) != 3 {
		t.Error("dry run deleted something")
	}
	stdout.Reset()
	if code := Main(context.Background(), "test", []string{"prune", "--config", cfgPath}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := archivesIn(t, dest, "tar.gz"); !slices.Equal(got, []string{"app-20210101T000000Z.tar.gz", "app-20220101T000000Z.tar.gz"}) {
		t.Errorf("after prune: %v", got)
	}
}

func TestListAndVerifyCommands(t *testing.T) {
	e := newTestEnv(t)
	cfgPath := e.configFile(nil, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	archiveName := archivesIn(t, e.dests[0], "tar.gz")[0]
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), "test", []string{"list", "--config", cfgPath, "--verify"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("list: exit %d\n%s", code, stderr.String())
	}
	if strings.Count(stdout.String(), archiveName) != 2 || !strings.Contains(stdout.String(), " ok") {
		t.Errorf("list output:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := Main(context.Background(), "test", []string{"verify", "--config", cfgPath}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if strings.Count(stdout.String(), "OK ") != 2 {
		t.Errorf("verify output:\n%s", stdout.String())
	}

	// Corrupt one copy (same size, one byte flipped).
	bad := filepath.Join(e.dests[1], archiveName)
	b, _ := os.ReadFile(bad)
	b[len(b)/2] ^= 0xff
	os.WriteFile(bad, b, 0o640)
	stdout.Reset()
	if code := Main(context.Background(), "test", []string{"verify", "--config", cfgPath}, &stdout, &stderr); code != ExitFailed {
		t.Fatalf("verify of corrupt archive: exit %d, want 1\n%s", code, stdout.String())
	}
	if !strings.Contains(stdout.String(), "FAILED "+bad) {
		t.Errorf("verify output:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := Main(context.Background(), "test", []string{"list", "--config", cfgPath, "--verify"}, &stdout, &stderr); code != ExitFailed {
		t.Errorf("list --verify of corrupt archive: exit %d", code)
	}
	if !strings.Contains(stdout.String(), "mismatch") {
		t.Errorf("list output:\n%s", stdout.String())
	}
	stdout.Reset()
	os.Remove(filepath.Join(e.dests[0], archiveName+".sha256"))
	Main(context.Background(), "test", []string{"list", "--config", cfgPath}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "missing") || !strings.Contains(stdout.String(), "present") {
		t.Errorf("list output:\n%s", stdout.String())
	}
}

func TestRestore(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	archivePath := filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0])
	// Keep a pristine copy of the data to compare against.
	pristine := filepath.Join(e.root, "pristine")
	for _, dp := range e.dataPaths {
		out := filepath.Join(pristine, archive.EntryName(dp))
		os.MkdirAll(filepath.Dir(out), 0o755)
		if b, err := exec.Command("cp", "-a", dp, out).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, b)
		}
	}

	t.Run("to target", func(t *testing.T) {
		target := filepath.Join(e.root, "restored")
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), "test", []string{"restore", "--config", cfgPath, "--archive", archivePath, "--target", target}, &stdout, &stderr)
		if code != ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
		}
		// Non-empty target refused.
		if code := Main(context.Background(), "test", []string{"restore", "--config", cfgPath, "--archive", archivePath, "--target", target}, &stdout, &stderr); code != ExitFailed {
			t.Errorf("restore into non-empty target: exit %d, want 1", code)
		}
	})

	t.Run("in place", func(t *testing.T) {
		os.Truncate(filepath.Join(e.dataPaths[0], "db.sqlite"), 10)
		e.writeFile(filepath.Join(e.dataPaths[0], "new-since-backup.txt"), []byte("new"), 0o644)
		os.RemoveAll(e.dataPaths[1])
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), "test", []string{"restore", "--config", cfgPath, "--archive", archivePath}, &stdout, &stderr); code != ExitUsage {
			t.Fatalf("restore in place without --yes: exit %d, want 2", code)
		}
		os.Remove(filepath.Join(e.sysDir, "calls.log"))
		code := Main(context.Background(), "test", []string{"restore", "--config", cfgPath, "--archive", archivePath, "--yes"}, &stdout, &stderr)
		t.Log(stderr.String())
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, filepath.Join(pristine, archive.EntryName(dp)), dp)
		}
		// The old data was moved aside, not deleted.
		matches, _ := filepath.Glob(e.dataPaths[0] + ".pre-restore-*")
		if len(matches) != 1 {
			t.Fatalf("moved-aside data: %v", matches)
		}
		if b, _ := os.ReadFile(filepath.Join(matches[0], "new-since-backup.txt")); string(b) != "new" {
			t.Error("moved-aside data incomplete")
		}
		if !strings.Contains(stdout.String(), "previous data moved to "+matches[0]) {
			t.Errorf("output does not say where the old data went:\n%s", stdout.String())
		}
		want := []string{"is-active app.service", "stop app.service", "start app.service", "is-active app.service"}
		if got := e.callsWithoutPolls(); !slices.Equal(got, want) {
			t.Errorf("calls = %q, want %q", got, want)
		}
		// No staging directories left.
		for _, dp := range e.dataPaths {
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(dp), ".*.restore-*")); len(m) > 0 {
				t.Errorf("staging left: %v", m)
			}
		}
	})

	t.Run("corrupt archive refused", func(t *testing.T) {
		bad := filepath.Join(e.root, "bad", filepath.Base(archivePath))
		os.MkdirAll(filepath.Dir(bad), 0o755)
		b, _ := os.ReadFile(archivePath)
		b[len(b)/2] ^= 0xff
		os.WriteFile(bad, b, 0o600)
		sum, _ := os.ReadFile(archivePath + ".sha256")
		os.WriteFile(bad+".sha256", sum, 0o600)
		os.Remove(filepath.Join(e.sysDir, "calls.log"))
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), "test", []string{"restore", "--config", cfgPath, "--archive", bad, "--yes"}, &stdout, &stderr)
		if code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if !strings.Contains(stderr.String(), "refusing to restore") {
			t.Errorf("stderr: %s", stderr.String())
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("units touched for a bad archive: %q", got)
		}
	})
}

func TestCheckConfigAndHelp(t *testing.T) {
	e := newTestEnv(t)
	good := e.configFile(nil, nil)
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), "test", []string{"check-config", good}, &stdout, &stderr); code != ExitOK || stdout.String() != "ok\n" {
		t.Errorf("check-config good: exit %d, %q", code, stdout.String())
	}
	bad := filepath.Join(e.root, "bad.json")
	os.WriteFile(bad, []byte(`{"name":"bad name","dataPaths":["rel"],"user":"","group":"g","backup":{"paths":["/x"],"format":"rar"}}`), 0o644)
	stdout.Reset()
	stderr.Reset()
	if code := Main(context.Background(), "test", []string{"check-config", bad}, &stdout, &stderr); code != ExitUsage {
		t.Errorf("check-config bad: exit %d, want 2", code)
	}
	for _, want := range []string{"name", "dataPaths[0]", "user", "backup.format"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("problems lack %q:\n%s", want, stderr.String())
		}
	}
	if code := Main(context.Background(), "test", []string{"run", "--config", bad}, &stdout, &stderr); code != ExitUsage {
		t.Errorf("run with bad config: exit %d, want 2", code)
	}
	if code := Main(context.Background(), "test", []string{"run"}, &stdout, &stderr); code != ExitUsage {
		t.Errorf("run without --config: exit %d, want 2", code)
	}
	for _, cmd := range []string{"run", "recover", "list", "verify", "prune", "restore", "check-config"} {
		stdout.Reset()
		if code := Main(context.Background(), "test", []string{cmd, "--help"}, &stdout, &stderr); code != ExitOK {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if !strings.Contains(stdout.String(), "Exit codes:") || !strings.Contains(stdout.String(), "130") {
			t.Errorf("%s --help lacks exit codes:\n%s", cmd, stdout.String())
		}
	}
	stdout.Reset()
	Main(context.Background(), "1.2.3", []string{"--version"}, &stdout, &stderr)
	if stdout.String() != "backup-worker 1.2.3\n" {
		t.Errorf("--version: %q", stdout.String())
	}
}

func TestAllFormats(t *testing.T) {
	for _, format := range config.Formats {
		t.Run(format, func(t *testing.T) {
			e := newTestEnv(t)
			e.dests = e.dests[:1]
			cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["format"] = format })
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			names := archivesIn(t, e.dests[0], format)
			if len(names) != 1 {
				t.Fatalf("archives: %v", destFiles(t, e.dests[0]))
			}
			out := filepath.Join(e.root, "out")
			os.MkdirAll(out, 0o755)
			if _, err := archive.ExtractFile(context.Background(), filepath.Join(e.dests[0], names[0]), format, out, archive.ExtractOptions{SameOwner: true}); err != nil {
				t.Fatal(err)
			}
			for _, dp := range e.dataPaths {
				assertSameTree(t, dp, filepath.Join(out, archive.EntryName(dp)))
			}
		})
	}
}

// mountReadOnly makes dir a read-only bind mount of itself.
func mountReadOnly(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount (need root in a mount-capable namespace): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v %s", err, out)
	}
}

// TestRunReadOnlyDestination: a destination on a read-only mount is left
// out before anything is stopped; the other destination gets the archive,
// the run ends partial, the unit is up, and the read-only one keeps its
// old archive.
func TestRunReadOnlyDestination(t *testing.T) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	old := "app-20200101T000000Z.tar.gz"
	e.writeFile(filepath.Join(e.dests[1], old), []byte("old archive"), 0o640)
	mountReadOnly(t, e.dests[1])
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial); log:\n%s", code, e.logBuf.String())
	}
	if !strings.Contains(e.logBuf.String(), e.dests[1]+": not writable") {
		t.Errorf("read-only destination not named in the log:\n%s", e.logBuf.String())
	}
	assertOneArchive(t, e.dests[0])
	entries, _ := os.ReadDir(e.dests[1])
	if len(entries) != 1 || entries[0].Name() != old {
		t.Errorf("read-only destination holds %v, want only %s", entries, old)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not active after the run")
	}
}
