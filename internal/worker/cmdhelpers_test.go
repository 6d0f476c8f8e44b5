package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/backupgen/backupgen/internal/config"
)

// The commands run, check-config, recover and status live in cmd/backup-worker
// (flags, help, output; its tests pin those byte for byte); these helpers
// call the API they use the way they do, with this test's seams, so the
// tests here keep checking exit codes and messages.

// checkConfigCmd is `backup-worker check-config [--no-credentials] PATH`:
// exit code, stdout, stderr.
func (e *testEnv) checkConfigCmd(path string, noCredentials bool) (int, string, string) {
	cfg, err := LoadConfig(path)
	if err == nil && !noCredentials {
		err = CheckNotifyFiles(path, cfg)
	}
	if err != nil {
		return ExitUsage, "", fmt.Sprintf("backup-worker: %v\n", err)
	}
	return ExitOK, "ok\n", ""
}

// runCmd is `backup-worker run [--dry-run] --config PATH`.
func (e *testEnv) runCmd(path string, dry bool, stdout, stderr io.Writer) int {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "backup-worker: %v\n", err)
		return ExitUsage
	}
	log := NewLogger(stderr, slog.LevelInfo)
	if dry {
		s := e.seams
		s.withDefaults()
		return dryRun(context.Background(), cfg, s.systemd, &s, stdout, log)
	}
	r := &Runner{Config: cfg, Log: log, HookOutput: stderr, seams: e.seams}
	return r.Run(context.Background())
}

// recoverCmd is `backup-worker recover --config PATH`: exit code and log.
func (e *testEnv) recoverCmd(path string) (int, string) {
	e.t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		e.t.Fatal(err)
	}
	var log bytes.Buffer
	code := Recover(context.Background(), cfg, e.seams.systemd, NewLogger(&log, 0))
	return code, log.String()
}

// statusCmd is `backup-worker status --config PATH [--json]`: exit code and
// stdout.
func (e *testEnv) statusCmd(path string, asJSON bool) (int, string) {
	e.t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		e.t.Fatal(err)
	}
	var log, out bytes.Buffer
	st := ReadStatus(context.Background(), cfg, e.seams.systemd, NewLogger(&log, 0), time.Now())
	if asJSON {
		data, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintf(&out, "%s\n", data)
	} else {
		st.WriteText(&out, time.Now())
	}
	e.t.Logf("status log:\n%s", log.String())
	return st.ExitCode(), out.String()
}

// loadConfig loads path as the commands do, failing the test on a bad
// config.
func (e *testEnv) loadConfig(path string) *config.Config {
	e.t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// listCmd is `backup-worker list --config PATH [--verify]`: exit code,
// stdout, stderr.
func (e *testEnv) listCmd(path string, opts ListOptions) (int, string, string) {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	cfg := e.loadConfig(path)
	now := time.Now()
	res, err := List(context.Background(), cfg, NewLogger(&stderr, slog.LevelInfo), opts)
	if res.KeyErr != nil {
		fmt.Fprintf(&stderr, "backup-worker list: signatures not checked: %v\n", res.KeyErr)
	}
	res.WriteText(&stdout, now)
	return ExitCode(context.Background(), err), stdout.String(), stderr.String()
}
