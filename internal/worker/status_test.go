package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
)

// statusOf runs `backup-worker status --config FILE [--json]`.
func (e *testEnv) statusOf(cfgPath string, args ...string) (int, string) {
	e.t.Helper()
	code, out := e.statusCmd(cfgPath, slices.Contains(args, "--json"))
	e.t.Logf("status exit %d\n%s", code, out)
	return code, out
}

func statusConfig(e *testEnv, check map[string]any) string {
	return e.configFile([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["onCalendar"] = []string{"*-*-* 02:00:00"}
		b["optionalPaths"] = []string{filepath.Join(e.root, "usb")}
		b["paths"] = append(e.dests, filepath.Join(e.root, "usb"))
		if check != nil {
			b["healthCheck"] = check
		}
	})
}

// TestStatusAfterRun: the run writes last-run.json (version 1, root-only,
// atomically); status shows its result, size and downtime, the next run
// from backup.onCalendar, the timer's state and each destination's
// archives (count, newest, total size), missing optional ones as such.
func TestStatusAfterRun(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := statusConfig(e, nil)
	for _, d := range e.dests {
		os.MkdirAll(d, 0o755)
	}
	if code, out := e.statusOf(cfgPath); code != ExitOK || !strings.Contains(out, "last run   no run recorded") {
		t.Fatalf("before any run: exit %d, %q", code, out)
	}
	e.writeSummedArchive(e.dests[0], "app-20200101T000000Z.tar.gz")
	if code := e.runner(loadCfg(t, cfgPath)).Run(context.Background()); code != ExitOK {
		t.Fatalf("run: exit %d\n%s", code, e.logBuf.String())
	}
	fi, err := os.Stat(filepath.Join(e.stateDir, "last-run.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("last-run.json: %v, mode %v; want 0600", err, fi)
	}
	code, out := e.statusOf(cfgPath, "--json")
	if code != ExitOK {
		t.Fatalf("status: exit %d", code)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	r := st.LastRun
	if r == nil || r.Version != 1 || r.Result != "success" || r.ExitCode != 0 || r.Service != "app" || r.DowntimeSec <= 0 || r.DataBytes <= 0 {
		t.Fatalf("lastRun = %+v", r)
	}
	archive := filepath.Join(e.dests[1], r.Archive)
	afi, err := os.Stat(archive)
	if err != nil || afi.Size() != r.SizeBytes {
		t.Errorf("archive %s: %v; size %d recorded", archive, err, r.SizeBytes)
	}
	if len(r.Destinations) != 3 || !r.Destinations[0].OK || r.Destinations[2].Status != "skipped" {
		t.Errorf("destinations = %+v", r.Destinations)
	}
	if st.NextRun == nil || !st.NextRun.After(time.Now()) || st.NextRun.Hour() != 2 || time.Until(*st.NextRun) > 24*time.Hour {
		t.Errorf("nextRun = %v, want the next 02:00", st.NextRun)
	}
	if st.Timer != "inactive" {
		t.Errorf("timer = %q, want the stand-in's inactive", st.Timer)
	}
	d0, d1, usb := st.Destinations[0], st.Destinations[1], st.Destinations[2]
	if d0.Archives != 2 || d1.Archives != 1 || d0.Newest != d1.Newest || d0.Newest == "" {
		t.Errorf("destinations = %+v", st.Destinations)
	}
	if old := int64(len("archive app-20200101T000000Z.tar.gz\n")); d0.TotalBytes != afi.Size()+old || d1.TotalBytes != afi.Size() {
		t.Errorf("total sizes %d, %d", d0.TotalBytes, d1.TotalBytes)
	}
	if !usb.Missing || usb.Error != "" {
		t.Errorf("optional missing destination = %+v", usb)
	}
	// The dry run estimates the next archive with this run's ratio.
	var dry, dryErr bytes.Buffer
	e.runCmd(cfgPath, true, &dry, &dryErr)
	if !strings.Contains(dry.String(), "the ratio of the last run)") {
		t.Errorf("dry run after a run:\n%s%s", dry.String(), dryErr.String())
	}
	_, human := e.statusOf(cfgPath)
	for _, want := range []string{"last run   success at ", "archive    " + r.Archive, "service down", "next run   ", "app-backup.timer inactive", ": 2, newest " + d0.Newest, "missing (optional)"} {
		if !strings.Contains(human, want) {
			t.Errorf("human status lacks %q", want)
		}
	}
}

// TestStatusAfterFailedHealthCheck: the record keeps the failure and the
// health check's error; status shows them.
func TestStatusAfterFailedHealthCheck(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.seams.healthRetry = 20 * time.Millisecond
	e.setUnit("app.service", "active")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }))
	defer srv.Close()
	cfgPath := statusConfig(e, map[string]any{"url": srv.URL, "timeoutSec": 1})
	if code := e.runner(loadCfg(t, cfgPath)).Run(context.Background()); code != ExitFailed {
		t.Fatalf("run: exit %d, want 1", code)
	}
	_, out := e.statusOf(cfgPath, "--json")
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if r := st.LastRun; r == nil || r.Result != "failed" || r.ExitCode != 1 || !strings.Contains(r.Health, "did not come back") || len(r.Errors) == 0 {
		t.Errorf("lastRun = %+v", r)
	}
	_, human := e.statusOf(cfgPath)
	if !strings.Contains(human, "last run   failed") || !strings.Contains(human, "health     the application did not come back") {
		t.Error("human status does not show the failure and the health check")
	}
}

// TestStatusRefusesUnknownVersion: a record of another format version is
// reported, not misread.
func TestStatusRefusesUnknownVersion(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfgPath := statusConfig(e, nil)
	if err := ensureStateDir(e.stateDir); err != nil {
		t.Fatal(err)
	}
	e.writeFile(filepath.Join(e.stateDir, "last-run.json"), []byte(`{"version": 2, "result": "success"}`), 0o600)
	code, out := e.statusOf(cfgPath)
	if code != ExitFailed || !strings.Contains(out, "format version 2, this worker reads version 1") {
		t.Errorf("exit %d, %q", code, out)
	}
}

func loadCfg(t *testing.T, path string) *config.Config {
	t.Helper()
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStatusAndDryRunSFTP: status lists a remote destination through the
// Destination interface (count, newest, total size as the server holds
// them); run --dry-run lists it as its preflight and changes nothing on
// the server (a real sshd).
func TestStatusAndDryRunSFTP(t *testing.T) {
	t.Parallel()
	e, srv, remote := sftpEnv(t)
	cfgPath := e.configFile(nil, withSFTP(srv, nil))
	if code := e.runner(loadCfg(t, cfgPath)).Run(t.Context()); code != ExitOK {
		t.Fatalf("run: exit %d\n%s", code, e.logBuf.String())
	}
	archives := archivesIn(t, remote, "tar.gz")
	if len(archives) != 1 {
		t.Fatalf("server holds %v", archives)
	}
	fi, err := os.Stat(filepath.Join(remote, archives[0]))
	if err != nil {
		t.Fatal(err)
	}
	code, out := e.statusOf(cfgPath, "--json")
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != ExitOK {
		t.Fatalf("status: exit %d, %v", code, err)
	}
	d := st.Destinations[1]
	if d.Path != srv.url("r") || d.Archives != 1 || d.Newest != archives[0] || d.TotalBytes != fi.Size() || d.Error != "" {
		t.Errorf("sftp destination = %+v, want 1 archive %s of %d bytes", d, archives[0], fi.Size())
	}
	before := treeSnapshot(t, filepath.Join(srv.root, "r"), "")
	var dry, dryErr bytes.Buffer
	code = e.runCmd(cfgPath, true, &dry, &dryErr)
	t.Logf("dry run: exit %d\n%s%s", code, dry.String(), dryErr.String())
	if code != ExitOK || !strings.Contains(dry.String(), srv.url("r")+": ok (reachable, archives listed") {
		t.Errorf("dry run did not list the SFTP destination as reachable")
	}
	after := treeSnapshot(t, filepath.Join(srv.root, "r"), "")
	if len(before) != len(after) {
		t.Errorf("the dry run changed the server: %d entries before, %d after", len(before), len(after))
	}
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s changed on the server", p)
		}
	}
}
