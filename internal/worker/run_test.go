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

	"github.com/backupgen/backupgen/internal/archive"
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
	t.Parallel()
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

func TestRunArchiveFailsMidway(t *testing.T) {
	t.Parallel()
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

func TestRunInterruptedDuringArchive(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	second.Log = NewLogger(&secondLog, 0)
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
