package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	ageenc "filippo.io/age"

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

// pruneCmd is `backup-worker prune --config PATH [--dry-run]`.
func (e *testEnv) pruneCmd(path string, opts PruneOptions, stdout, stderr io.Writer) int {
	e.t.Helper()
	res, err := Prune(context.Background(), e.loadConfig(path), NewLogger(stderr, slog.LevelInfo), opts)
	res.WriteText(stdout)
	return ExitCode(context.Background(), err)
}

// verifyCmd is `backup-worker verify --config PATH [flags] [ARCHIVE...]`
// (opts.Identities: --identity; see identities): exit code, stdout, stderr.
func (e *testEnv) verifyCmd(path string, opts VerifyOptions) (int, string, string) {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	opts.Report = func(v Verdict) { fmt.Fprintln(&stdout, v) }
	opts.Warn = func(err error) { fmt.Fprintf(&stderr, "backup-worker verify: %v\n", err) }
	_, err := Verify(context.Background(), e.loadConfig(path), NewLogger(&stderr, slog.LevelInfo), opts)
	return ExitCode(context.Background(), err), stdout.String(), stderr.String()
}

// identities loads an identity file as --identity does.
func (e *testEnv) identities(file string) []ageenc.Identity {
	e.t.Helper()
	ids, err := LoadIdentities(file)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// joined is a command helper's result with stdout and stderr as one text,
// as a terminal shows them (stdout first).
func joined(code int, stdout, stderr string) (int, string) { return code, stdout + stderr }

// logged logs a command helper's result and returns it.
func (e *testEnv) logged(code int, stdout, stderr string) (int, string, string) {
	e.t.Helper()
	e.t.Logf("exit %d\n%s%s", code, stdout, stderr)
	return code, stdout, stderr
}

// pruneOut is pruneCmd with the output returned: exit code, stdout, stderr.
func (e *testEnv) pruneOut(path string, opts PruneOptions) (int, string, string) {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	code := e.pruneCmd(path, opts, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// restoreStrict is `backup-worker restore --config PATH ...` with opts as
// given (in place when opts.Target is "": --yes): exit code, stdout,
// stderr.
func (e *testEnv) restoreStrict(path string, opts RestoreOptions) (int, string, string) {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	res, err := Restore(context.Background(), e.loadConfig(path), e.seams.systemd, NewLogger(&stderr, slog.LevelInfo), opts)
	res.WriteText(&stdout)
	return ExitCode(context.Background(), err), stdout.String(), stderr.String()
}
