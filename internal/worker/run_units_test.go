package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
)

// Tests of the stop and start phases, and of recovering what a killed
// run left.

func TestRunPanicRestartsUnits(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

func TestRunStopFails(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
	e := newTestEnv(t)
	// As if the worker was SIGKILLed after stopping both units.
	e.setUnit("app-web.service", "inactive")
	e.setUnit("app-db.service", "inactive")
	cfgPath := e.configFile([]string{"app-web.service", "app-db.service"}, nil)
	os.MkdirAll(e.stateDir, 0o700)
	if err := writeStoppedState(stateFilePath(e.stateDir, "app"), []string{"app-web.service", "app-db.service"}); err != nil {
		t.Fatal(err)
	}
	code, stderr := e.recoverCmd(cfgPath)
	t.Log(stderr)
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
	code, stderr = e.recoverCmd(cfgPath)
	if code != ExitOK {
		t.Fatalf("second recover: exit %d", code)
	}
	if !strings.Contains(stderr, "nothing to recover") {
		t.Errorf("second recover said %q", stderr)
	}
}
