package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withDrill adds backup.drill to e's config file.
func (e *e2e) withDrill() {
	e.t.Helper()
	data, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		e.t.Fatal(err)
	}
	cfg["backup"].(map[string]any)["drill"] = map[string]any{
		"onCalendar":        []string{"Sun *-*-* 05:00:00"},
		"scratchDirectory":  filepath.Join(e.root, "scratch"),
		"manifestDirectory": filepath.Join(e.root, "manifests"),
	}
	data, _ = json.Marshal(cfg)
	if err := os.WriteFile(e.config, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// TestBackupWorkerDrill: the drill command of the built binary, after a
// run: every destination ok, exit 0, and status shows it. Without
// backup.drill it refuses (exit 2): no manifest was written.
func TestBackupWorkerDrill(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	if code, _, stderr := e.worker("drill", "--config", e.config); code != 2 || !strings.Contains(stderr, "has no backup.drill") {
		t.Fatalf("drill without backup.drill: exit %d\n%s", code, stderr)
	}
	e.withDrill()
	if code, _, _ := e.worker("run", "--config", e.config); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	code, stdout, _ := e.worker("drill", "--config", e.config)
	if code != 0 || strings.Count(stdout, ": ok: app-") != 2 {
		t.Fatalf("drill: exit %d\n%s", code, stdout)
	}
	if code, stdout, _ := e.worker("drill", "--config", e.config, "--destination", e.dests[1]); code != 0 || strings.Count(stdout, ": ok: ") != 1 {
		t.Fatalf("drill --destination: exit %d\n%s", code, stdout)
	}
	if code, stdout, _ := e.worker("status", "--config", e.config); code != 0 || !strings.Contains(stdout, "last drill ok at ") {
		t.Errorf("status: exit %d\n%s", code, stdout)
	}
	if code, _, stderr := e.worker("drill", "--config", e.config, "--destination", "/elsewhere"); code != 2 || !strings.Contains(stderr, "--destination /elsewhere is not one of the service's destinations") {
		t.Errorf("drill --destination not of the service: exit %d\n%s", code, stderr)
	}
}
