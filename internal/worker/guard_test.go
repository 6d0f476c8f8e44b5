package worker

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnitStateUnknownFailsRun: when `systemctl is-active` fails (no bus)
// or prints a state the worker does not know, the run fails before
// anything is stopped or archived (issue 10 item 11). The old code took
// any non-zero exit for "not running" and backed up the live service with
// exit 0.
func TestUnitStateUnknownFailsRun(t *testing.T) {
	t.Parallel()
	for name, arm := range map[string]func(e *testEnv){
		"no bus":        func(e *testEnv) { e.setUnit("app.service", "active"); e.marker("app.service", "is-active-error") },
		"unknown state": func(e *testEnv) { e.setUnit("app.service", "bogus") },
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			arm(e)
			cfg := e.config([]string{"app.service"}, nil)
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			if got := e.calls(); !slices.Equal(got, []string{"is-active app.service"}) {
				t.Errorf("systemctl calls %q, want only the is-active check", got)
			}
			if !strings.Contains(e.logBuf.String(), "cannot tell whether app.service is running") {
				t.Error("the log does not say why")
			}
			assertNoArchives(t, e.dests...)
		})
	}
}

// TestUnitNotFoundFailsRun: a misspelt serviceName names a unit systemd
// does not know; `is-active` calls it "inactive", so the old run skipped
// the stop and archived the live application's data with exit 0. The run
// now fails before anything is archived and says to check serviceName.
// A unit that exists but is stopped is still left alone and backed up.
func TestUnitNotFoundFailsRun(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.marker("app.service", "not-found")
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitFailed {
		t.Fatalf("exit %d, want %d", code, ExitFailed)
	}
	if !strings.Contains(e.logBuf.String(), "app.service does not exist (LoadState=not-found): check serviceName") {
		t.Errorf("the log does not say why:\n%s", e.logBuf.String())
	}
	assertNoArchives(t, e.dests...)

	e = newTestEnv(t)
	e.setUnit("app.service", "inactive")
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitOK {
		t.Fatalf("stopped unit that exists: exit %d", code)
	}
	if got := e.calls(); !slices.Equal(got, []string{"is-active app.service"}) {
		t.Errorf("calls %q: a stopped unit must be left alone", got)
	}
	assertOneArchive(t, e.dests[0])
}

// TestUnitBusyStatesAreStopped: a unit that is starting or stopping may be
// writing its data: it is stopped (and started again) like an active one.
func TestUnitBusyStatesAreStopped(t *testing.T) {
	t.Parallel()
	for _, state := range []string{"activating", "deactivating", "reloading"} {
		t.Run(state, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", state)
			cfg := e.config([]string{"app.service"}, nil)
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			if got := e.callsWithoutPolls(); !slices.Equal(got[:2], []string{"is-active app.service", "stop app.service"}) {
				t.Errorf("calls %q: the %s unit was not stopped", got, state)
			}
			assertOneArchive(t, e.dests[0])
		})
	}
}

// TestSystemctlGetsDoubleDash: unit names reach systemctl after "--", so
// no name can be read as an option (the stand-in exits 64 otherwise).
func TestSystemctlGetsDoubleDash(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("x.service", "active")
	ctx := context.Background()
	for _, f := range []func() error{
		func() error { _, err := e.seams.systemd.ActiveState(ctx, "x.service"); return err },
		func() error { return e.seams.systemd.Stop(ctx, "x.service") },
		func() error { return e.seams.systemd.Start(ctx, "x.service") },
	} {
		if err := f(); err != nil {
			t.Error(err)
		}
	}
	if got := e.calls(); !slices.Equal(got, []string{"is-active x.service", "stop x.service", "start x.service"}) {
		t.Errorf("calls %q", got)
	}
}

// nobodyIDs returns nobody's uid and gid, skipping without root or setpriv.
func nobodyIDs(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to nobody")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// TestForgedStateFile is issue 10 item 5's attack: a user who can write the
// state directory plants app.stopped listing poweroff.target; the old
// worker ran `systemctl start poweroff.target` as root. Now the state
// directory is refused (not root's alone), and even in a root-owned one a
// unit outside serviceName is never started: run and recover fail with
// nothing started or stopped.
func TestForgedStateFile(t *testing.T) {
	t.Parallel()
	uid, gid := nobodyIDs(t)
	forged := `["poweroff.target"]`
	t.Run("user-owned state dir", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		openToNobody(t, e.root)
		must(t, os.Mkdir(e.stateDir, 0o755))
		must(t, os.Chown(e.stateDir, uid, gid))
		asNobody(t, "echo '"+forged+"' > "+stateFilePath(e.stateDir, "app"))
		cfg := e.config([]string{"app.service"}, nil)
		if code := e.run(cfg); code != ExitFailed {
			t.Fatalf("exit %d, want %d", code, ExitFailed)
		}
		if calls := e.calls(); len(calls) != 0 {
			t.Errorf("systemctl was called: %q", calls)
		}
		if !strings.Contains(e.logBuf.String(), "is owned by uid "+strconv.Itoa(uid)+", not root") {
			t.Error("the log does not name the unsafe owner")
		}
	})
	t.Run("world-writable state dir", func(t *testing.T) {
		e := newTestEnv(t)
		openToNobody(t, e.root)
		must(t, os.Mkdir(e.stateDir, 0o777))
		must(t, os.Chmod(e.stateDir, 0o777))
		asNobody(t, "echo '"+forged+"' > "+stateFilePath(e.stateDir, "app"))
		cfg := e.config([]string{"app.service"}, nil)
		if code := e.run(cfg); code != ExitFailed {
			t.Fatalf("exit %d", code)
		}
		if calls := e.calls(); len(calls) != 0 {
			t.Errorf("systemctl was called: %q", calls)
		}
		if !strings.Contains(e.logBuf.String(), "writable by group or others") {
			t.Error("the log does not say why")
		}
	})
	t.Run("unit not in serviceName", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		must(t, os.Mkdir(e.stateDir, 0o700))
		must(t, os.WriteFile(stateFilePath(e.stateDir, "app"), []byte(`["app.service","poweroff.target"]`), 0o600))
		cfg := e.config([]string{"app.service"}, nil)
		if code := e.run(cfg); code != ExitFailed {
			t.Fatalf("exit %d", code)
		}
		if calls := e.calls(); len(calls) != 0 {
			t.Errorf("systemctl was called: %q", calls)
		}
		code, stderr := e.recoverCmd(e.configFile([]string{"app.service"}, nil))
		if code != ExitFailed || len(e.calls()) != 0 {
			t.Errorf("recover: exit %d, calls %q\n%s", code, e.calls(), stderr)
		}
		if !strings.Contains(stderr, `lists \"poweroff.target\", which is not one of this service's units`) {
			t.Errorf("recover does not say why:\n%s", stderr)
		}
	})
}

// TestLockAndStateFilesNotFollowed: a dangling symlink as the lock made
// the old root worker create a file where the link pointed. Symlinks,
// FIFOs (which hung the old worker) and oversized files in place of the
// lock or state file are refused within a second, and nothing is created
// or stopped.
func TestLockAndStateFilesNotFollowed(t *testing.T) {
	t.Parallel()
	for name, plant := range map[string]func(e *testEnv, victim string){
		"dangling lock symlink": func(e *testEnv, victim string) { must(t, os.Symlink(victim, lockFilePath(e.stateDir, "app"))) },
		"lock FIFO":             func(e *testEnv, victim string) { must(t, syscall.Mkfifo(lockFilePath(e.stateDir, "app"), 0o600)) },
		"state symlink to /dev/zero": func(e *testEnv, victim string) {
			must(t, os.Symlink("/dev/zero", stateFilePath(e.stateDir, "app")))
		},
		"state FIFO": func(e *testEnv, victim string) { must(t, syscall.Mkfifo(stateFilePath(e.stateDir, "app"), 0o600)) },
		"huge state file": func(e *testEnv, victim string) {
			must(t, os.WriteFile(stateFilePath(e.stateDir, "app"), []byte(`["app.service"`+strings.Repeat(` ,"app.service"`, 10000)+`]`), 0o600))
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			must(t, os.Mkdir(e.stateDir, 0o700))
			victim := filepath.Join(e.root, "victim")
			plant(e, victim)
			cfg := e.config([]string{"app.service"}, nil)
			start := time.Now()
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
			if _, err := os.Lstat(victim); err == nil {
				t.Error("the symlink's target was created")
			}
			if calls := e.calls(); len(calls) != 0 {
				t.Errorf("systemctl was called: %q", calls)
			}
			assertNoArchives(t, e.dests...)
		})
	}
}

// TestEnsureStateDir: the ownership and mode rules on the state directory
// and its ancestors.
func TestEnsureStateDir(t *testing.T) {
	t.Parallel()
	uid, gid := nobodyIDs(t)
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755))
	mk := func(p string, mode os.FileMode) string {
		must(t, os.MkdirAll(p, 0o700))
		must(t, os.Chmod(p, mode))
		return p
	}
	sticky := mk(filepath.Join(root, "tmp"), 0o777|os.ModeSticky)
	groupW := mk(filepath.Join(root, "groupw"), 0o775)
	userOwned := mk(filepath.Join(root, "user"), 0o755)
	must(t, os.Chown(userOwned, uid, gid))
	good := mk(filepath.Join(root, "real", "state"), 0o700)
	must(t, os.Symlink(good, filepath.Join(root, "link")))
	cases := map[string]string{
		filepath.Join(sticky, "new", "state"):  "",
		filepath.Join(root, "fresh", "a", "b"): "",
		filepath.Join(root, "link", "sub"):     "",
		sticky:                                 "writable by group or others",
		filepath.Join(groupW, "state"):         "writable by group or others",
		filepath.Join(userOwned, "state"):      "not root",
		filepath.Join(root, "link"):            "is a symlink",
	}
	for dir, want := range cases {
		err := ensureStateDir(dir)
		if want == "" && err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: got %v, want %q", dir, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(groupW, "state")); err == nil {
		t.Error("a state directory was created under a group-writable parent")
	}
	if fi, err := os.Stat(filepath.Join(root, "fresh", "a", "b")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created state dir: %v %v", fi, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// openToNobody lets other users reach dir (t.TempDir's directories are 0700).
func openToNobody(t *testing.T, dir string) {
	t.Helper()
	must(t, os.Chmod(filepath.Dir(dir), 0o755))
	must(t, os.Chmod(dir, 0o755))
}
