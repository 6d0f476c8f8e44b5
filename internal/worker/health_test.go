package worker

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the health-checked restart: after the units are active again,
// backup.healthCheck probes the application; one that does not come back
// fails the run, keeps every committed archive and skips pruning.

// healthEnv is a test env whose app.service is running, with an old
// archive in dest1 that retentionSnapshots = 1 would prune.
func healthEnv(t *testing.T) *testEnv {
	e := newTestEnv(t)
	e.seams.healthRetry = 20 * time.Millisecond
	e.setUnit("app.service", "active")
	e.writeSummedArchive(e.dests[0], "app-20200101T000000Z.tar.gz")
	return e
}

func (e *testEnv) healthRun(check map[string]any) int {
	e.t.Helper()
	return e.run(e.config([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["retentionSnapshots"] = 1
		b["healthCheck"] = check
	}))
}

// assertKeptNotPruned: each destination holds the new archive, dest1 also
// the old one pruning would have removed.
func (e *testEnv) assertKeptNotPruned() {
	e.t.Helper()
	for i, d := range e.dests {
		want := 1
		if i == 0 {
			want = 2
		}
		if got := archivesIn(e.t, d, "tar.gz"); len(got) != want {
			e.t.Errorf("%s: archives %v, want %d (committed archives kept, nothing pruned)", d, got, want)
		}
	}
}

// TestRunHealthCheckURLComesUpLate: the application answers 503 three
// times, then 200: the run retries and succeeds, and prunes.
func TestRunHealthCheckURLComesUpLate(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.unitState("app.service") != "active" {
			t.Error("probed before the unit was active")
		}
		if hits.Add(1) <= 3 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if code := e.healthRun(map[string]any{"url": srv.URL + "/health", "timeoutSec": 60}); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if hits.Load() != 4 {
		t.Errorf("%d requests, want 4 (3 failures, then healthy)", hits.Load())
	}
	if !strings.Contains(e.logBuf.String(), `msg="application healthy"`) || !strings.Contains(e.logBuf.String(), "attempts=4") {
		t.Error("no log line saying the application is healthy after 4 attempts")
	}
	if got := archivesIn(t, e.dests[0], "tar.gz"); len(got) != 1 {
		t.Errorf("dest1: %v, want the old archive pruned", got)
	}
}

// TestRunHealthCheckURLNeverComesBack: a 500 until the timeout fails the
// run loudly, keeps the archives and prunes nothing.
func TestRunHealthCheckURLNeverComesBack(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	defer srv.Close()
	if code := e.healthRun(map[string]any{"url": srv.URL, "timeoutSec": 1}); code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	log := e.logBuf.String()
	for _, want := range []string{`level=ERROR msg="health check failed"`, "the application did not come back", "HTTP status 500", `msg="pruning skipped: the run failed"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if hits.Load() < 2 {
		t.Errorf("%d requests: the probe was not retried", hits.Load())
	}
	e.assertKeptNotPruned()
}

// TestRunHealthCheckTCP: a listening port is healthy; a closed one, never
// opened before the timeout, fails the run.
func TestRunHealthCheckTCP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := healthEnv(t)
	if code := e.healthRun(map[string]any{"tcp": ln.Addr().String()}); code != ExitOK {
		t.Fatalf("open port: exit %d, want 0", code)
	}

	closed := closedAddr(t)
	e = healthEnv(t)
	if code := e.healthRun(map[string]any{"tcp": closed, "timeoutSec": 1}); code != ExitFailed {
		t.Fatalf("closed port: exit %d, want 1", code)
	}
	if !strings.Contains(e.logBuf.String(), "connection refused") {
		t.Error("the error does not say the connection was refused")
	}
	e.assertKeptNotPruned()
}

// TestRunHealthCheckTCPComesUpLate: the port opens only some time after
// the unit is active; the probe keeps trying until it does.
func TestRunHealthCheckTCPComesUpLate(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	addr := closedAddr(t)
	done := make(chan struct{})
	defer close(done)
	go func() {
		// Open the port once the unit has been started, a little later.
		for !slices.Contains(e.calls(), "start app.service") {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		time.Sleep(200 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		<-done
		ln.Close()
	}()
	if code := e.healthRun(map[string]any{"tcp": addr, "timeoutSec": 60}); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if strings.Contains(e.logBuf.String(), "attempts=1 ") {
		t.Error("healthy at the first attempt: the port was open too early for this test")
	}
}

// TestRunHealthCheckCommand: the argv runs without a shell; exit 0 is
// healthy, anything else fails the run with the command's output.
func TestRunHealthCheckCommand(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	marker := filepath.Join(e.root, "probed")
	script := filepath.Join(e.root, "probe.sh")
	e.writeFile(script, []byte("#!/bin/sh\necho \"$@\" > '"+marker+"'\n"), 0o755)
	if code := e.healthRun(map[string]any{"command": []string{script, "a b", "$HOME"}}); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if got, _ := os.ReadFile(marker); string(got) != "a b $HOME\n" {
		t.Errorf("the probe got %q: arguments must reach it unchanged, without a shell", got)
	}

	e = healthEnv(t)
	bad := filepath.Join(e.root, "bad.sh")
	e.writeFile(bad, []byte("#!/bin/sh\necho database is replaying its log\nexit 3\n"), 0o755)
	if code := e.healthRun(map[string]any{"command": []string{bad}, "timeoutSec": 1}); code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(e.logBuf.String(), "database is replaying its log") {
		t.Error("the failing command's output is not in the error")
	}
	e.assertKeptNotPruned()
}

// TestRunUnitActivatingThenFailed: systemd reports the restarted unit
// "activating", then "failed": the run fails at once with a message naming
// the unit (not after startTimeoutSec), never probes the application,
// keeps the archives and leaves the unit for `recover`.
func TestRunUnitActivatingThenFailed(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	e.writeFile(filepath.Join(e.sysDir, "app.service.start-states"), []byte("activating\nactivating\nfailed\n"), 0o644)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	code := e.run(e.config([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["retentionSnapshots"] = 1
		b["startTimeoutSec"] = 30
		b["healthCheck"] = map[string]any{"url": srv.URL}
	}))
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(e.logBuf.String(), "start app.service: the unit failed after starting") {
		t.Error("the error does not say the unit failed after starting")
	}
	if hits.Load() != 0 {
		t.Error("the application was probed although its unit failed")
	}
	polls := 0
	for _, c := range e.calls() {
		if c == "is-active app.service" {
			polls++
		}
	}
	if polls != 4 { // one before the stop, three after the start
		t.Errorf("%d is-active calls, want 4: activating was not waited for, or failed not taken as final", polls)
	}
	units, err := readStoppedState(stateFilePath(e.stateDir, "app"), []string{"app.service"})
	if err != nil || !slices.Equal(units, []string{"app.service"}) {
		t.Errorf("state file = %v, %v; want [app.service] for recover", units, err)
	}
	e.assertKeptNotPruned()
}

// TestRunUnitActivatingThenActive: a unit that takes a while to become
// active is waited for, then probed.
func TestRunUnitActivatingThenActive(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	e.writeFile(filepath.Join(e.sysDir, "app.service.start-states"), []byte("activating\nactivating\nactive\n"), 0o644)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	if code := e.healthRun(map[string]any{"url": srv.URL}); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if hits.Load() != 1 {
		t.Errorf("%d probes, want 1", hits.Load())
	}
}

// TestRunHealthCheckSkippedWhenNotStopped: a service that was not running
// is not started, so it is not probed either.
func TestRunHealthCheckSkippedWhenNotStopped(t *testing.T) {
	t.Parallel()
	e := healthEnv(t)
	e.setUnit("app.service", "inactive")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	if code := e.healthRun(map[string]any{"url": srv.URL}); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if hits.Load() != 0 {
		t.Error("probed a service the run did not start")
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
