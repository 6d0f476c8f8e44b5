package schedule

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// findHarness returns shared/nixos-eval/eval-module.sh from the nearest
// directory above this package that has it (the project lives beside
// shared/). Without it the test is skipped loudly, and fails in CI.
func findHarness(t *testing.T) string {
	t.Helper()
	testtool.Require(t, "nix-instantiate", "nix-bin")
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "shared", "nixos-eval", "eval-module.sh")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "!!! shared/nixos-eval/eval-module.sh not found above the project: this check did NOT run"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set)")
	}
	t.Skip(msg)
	return ""
}

// TestNixOSScheduleRefused evaluates the generated example with the real
// NixOS module system and a host that sets the schedule, then runs the
// real backup-worker check-config (as the NixOS build does) on the worker
// JSON the module writes. Schedules systemd refuses used to pass both, and
// the timer then never started a backup.
func TestNixOSScheduleRefused(t *testing.T) {
	harness := findHarness(t)
	dir := t.TempDir()
	worker := filepath.Join(dir, "backup-worker")
	if out, err := exec.Command("go", "build", "-o", worker, "../../cmd/backup-worker").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for schedule, want := range map[string]string{
		"every day":      `backup.onCalendar[0] "every day"`,
		"Mon..Fri 25:00": "hour 25 is out of range 0-23",
		"*-02-30":        "never elapses",
		"0 0 ? * *":      `invalid schedule "0 0 ? * *": cron field "day-of-month" has invalid element "?"`,
		"0 4 * * *":      "",
	} {
		host := filepath.Join(dir, "host.nix")
		err := os.WriteFile(host, []byte(`{ pkgs, ... }: {
  backupgen.package = pkgs.writeShellScriptBin "backup-worker" "";
  users.users.myapp = { isSystemUser = true; group = "myapp"; };
  users.groups.myapp = { };
  modules.services.virtualization.myapp = {
    enable = true;
    backup.schedule = `+nixString(schedule)+`;
  };
}
`), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		files := filepath.Join(dir, "files-"+strings.NewReplacer(" ", "_", "*", "x", "?", "q", "/", "_").Replace(schedule))
		cmd := exec.Command(harness, "--compact", "--files-dir", files, "../../examples/homelab/backup/default.nix", host)
		out, err := cmd.Output()
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		if strings.Contains(want, "invalid schedule") {
			// Malformed cron: the option's type refuses it, or
			// cronToOnCalendar throws at evaluation.
			typeErr := strings.Contains(stderr, "backup.schedule' is not of type")
			if err == nil || !(strings.Contains(stderr, want) || typeErr) {
				t.Errorf("%q: evaluation error %v, want a throw containing %q:\n%s", schedule, err, want, stderr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: evaluation failed: %v\n%s", schedule, err, stderr)
		}
		var eval struct {
			Systemd struct {
				Timers map[string]struct {
					TimerConfig struct{ OnCalendar []string } `json:"timerConfig"`
				} `json:"timers"`
			} `json:"systemd"`
		}
		if err := json.Unmarshal(out, &eval); err != nil {
			t.Fatal(err)
		}
		cal, _ := ToOnCalendar(schedule)
		if want == "" && !equal(eval.Systemd.Timers["myapp-backup"].TimerConfig.OnCalendar, cal) {
			t.Errorf("%q: timer OnCalendar %q, want %q", schedule, eval.Systemd.Timers["myapp-backup"].TimerConfig.OnCalendar, cal)
		}
		config := workerJSON(t, files)
		got, err := exec.Command(worker, "check-config", "--no-credentials", config).CombinedOutput()
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: check-config refuses a valid schedule: %v\n%s", schedule, err, got)
		case want != "" && (err == nil || !strings.Contains(string(got), want)):
			t.Errorf("%q: check-config: %v, want a refusal containing %q:\n%s", schedule, err, want, got)
		}
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func nixString(s string) string {
	b, _ := json.Marshal(s) // the schedules here need no escaping beyond JSON's
	return string(b)
}

// workerJSON returns the myapp worker config the module wrote, as written
// by writeText (not the checked copy, which the harness does not build).
func workerJSON(t *testing.T, files string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(files, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index map[string]struct {
		Name   string `json:"name"`
		File   string `json:"file"`
		CopyOf string `json:"copyOf"`
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	for _, e := range index {
		if e.Name == "myapp-backup.json" && e.CopyOf == "" && e.File != "" {
			return filepath.Join(files, e.File)
		}
	}
	t.Fatalf("no myapp-backup.json in %s", files)
	return ""
}
