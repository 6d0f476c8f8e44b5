package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpAndVersion: every command's --help ends with the exit codes
// (exit 0), --version prints the build's version, an unknown command is a
// usage error with the command list.
func TestHelpAndVersion(t *testing.T) {
	for _, cmd := range []string{"run", "recover", "list", "verify", "prune", "restore", "check-config", "status"} {
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), []string{cmd, "--help"}, &stdout, &stderr); code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if !strings.Contains(stdout.String(), "Usage: backup-worker "+cmd) || !strings.Contains(stdout.String(), "Exit codes:") || !strings.Contains(stdout.String(), "130") {
			t.Errorf("%s --help lacks usage or exit codes:\n%s", cmd, stdout.String())
		}
	}
	old := version
	version = "1.2.3"
	defer func() { version = old }()
	var stdout, stderr bytes.Buffer
	Run(context.Background(), []string{"--version"}, &stdout, &stderr)
	if stdout.String() != "backup-worker 1.2.3\n" {
		t.Errorf("--version: %q", stdout.String())
	}
	stdout.Reset()
	if code := Run(context.Background(), []string{"run"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--config FILE is required") {
		t.Errorf("run without --config: exit %d, want 2\n%s", code, stderr.String())
	}
	stderr.Reset()
	if code := Run(context.Background(), []string{"backup"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "backup"`) || !strings.Contains(stderr.String(), "check-config FILE") {
		t.Errorf("unknown command: exit %d\n%s", code, stderr.String())
	}
}
