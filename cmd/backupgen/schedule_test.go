package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestScheduleNextCalendar: --next works for calendar expressions (it used
// to hand them to systemd-analyze with TZ=UTC) and prints the times in the
// zone the timer's machine runs in, labelled with it (it used to label
// cron's times UTC while timers fire at local time).
func TestScheduleNextCalendar(t *testing.T) {
	code, stdout, stderr := run(t, "schedule", "--next", "5", "--tz", "Europe/Berlin", "Mon..Fri *-*-* 02:00")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 8 || lines[0] != "Mon..Fri *-*-* 02:00" || lines[2] != "next 5 elapses (zone Europe/Berlin):" {
		t.Fatalf("output:\n%s", stdout)
	}
	re := regexp.MustCompile(`^(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 02:00:00 (CET|CEST)$`)
	var prev time.Time
	for _, l := range lines[3:] {
		if !re.MatchString(l) {
			t.Errorf("elapse %q is not a weekday at 02:00 Berlin time", l)
		}
		ts, err := time.Parse("Mon 2006-01-02 15:04:05 MST", l)
		if err != nil {
			t.Fatal(err)
		}
		if !ts.After(prev) {
			t.Errorf("elapses out of order at %q", l)
		}
		prev = ts
	}
}

// TestScheduleNextCronInZone: a cron schedule's times are those of its
// OnCalendar values, which a timer reads in its machine's zone.
func TestScheduleNextCronInZone(t *testing.T) {
	code, stdout, stderr := run(t, "schedule", "--next", "3", "--tz", "America/New_York", "30 3 * * *")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	re := regexp.MustCompile(`(?m)^\w{3} \d{4}-\d\d-\d\d 03:30:00 E[SD]T$`)
	if n := len(re.FindAllString(stdout, -1)); n != 3 || !strings.Contains(stdout, "(zone America/New_York)") {
		t.Errorf("want 3 elapses at 03:30 New York time, got:\n%s", stdout)
	}
	// An expression with its own zone is shown converted to --tz.
	code, stdout, _ = run(t, "schedule", "--next", "1", "--tz", "Asia/Tokyo", "*-*-* 00:00:00 UTC")
	if code != 0 || !strings.Contains(stdout, " 09:00:00 JST") {
		t.Errorf("UTC midnight in Tokyo: %d\n%s", code, stdout)
	}
	if code, _, stderr := run(t, "schedule", "--tz", "Mars/Olympus", "daily"); code != 2 || !strings.Contains(stderr, "--tz") {
		t.Errorf("unknown --tz: %d %q", code, stderr)
	}
}

// TestSchedulesSystemdRefuses: schedules that systemd refuses (the timer
// would never start a backup) are errors in every command, naming the
// key; they used to pass validate, generate, check and schedule.
func TestSchedulesSystemdRefuses(t *testing.T) {
	spec, err := os.ReadFile(exampleSpec)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.NewReplacer(`schedule = "0 2 * * *"`, `schedule = "every day"`,
		`schedule = "30 3 * * 1-5"`, `schedule = "Mon..Fri 25:00"`,
		`schedule = "0 */6 * * *"`, `schedule = "0 0 ? * *"`).Replace(string(spec))
	file := filepath.Join(t.TempDir(), "backup.toml")
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`defaults.backup.schedule: invalid calendar expression "every day"`,
		`services[1].backup.schedule: invalid calendar expression "Mon..Fri 25:00": hour 25 is out of range 0-23`,
		`services[2].backup.schedule: cron field "day-of-month" has invalid element "?"`,
	}
	for _, args := range [][]string{
		{"validate", "--spec", file},
		{"generate", "--spec", file, "--out", t.TempDir()},
		{"check", "--spec", file, "--out", t.TempDir()},
	} {
		code, _, stderr := run(t, args...)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", args[0], code)
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", args[0], w, stderr)
			}
		}
	}
	for expr, msg := range map[string]string{"every day": `"every day" is daily`, "nonsense": `"nonsense" is not a shorthand`,
		"Mon..Fri 25:00": "hour 25", "0 0 ? * *": "Quartz cron syntax", "*-02-30": "never elapses"} {
		if code, _, stderr := run(t, "schedule", expr); code != 1 || !strings.Contains(stderr, msg) {
			t.Errorf("schedule %q: exit %d, %q", expr, code, stderr)
		}
	}
}
