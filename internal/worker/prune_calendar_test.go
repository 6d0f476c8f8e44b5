package worker

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/retention"
)

// TestRunPrunesByCalendarRules: a real run at 2026-12-01T04:00Z over two
// local destinations that hold a verified archive every day at 03:00 since
// August, one more early on December 1st, and a corrupt one that is the
// newest of October. With keepDaily 3, keepWeekly 2 and keepMonthly 3
// exactly the run's archive, November 30th and 29th (days; the 29th is
// also week 2026-W48), October 31st 03:00 (month 2026-10: the corrupt
// archive is read, found bad and takes no period) and the corrupt archive
// (evidence) survive, and the log and prune --dry-run say why.
func TestRunPrunesByCalendarRules(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	name := func(t time.Time) string { return retention.FileName("app", "tar.gz", t) }
	corrupt := name(time.Date(2026, 10, 31, 12, 0, 0, 0, time.UTC))
	for _, dest := range e.dests {
		for d := time.Date(2026, 8, 1, 3, 0, 0, 0, time.UTC); d.Before(now); d = d.AddDate(0, 0, 1) {
			e.writeSummedArchive(dest, name(d))
		}
		e.writeSummedArchive(dest, name(time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)))
		e.writeSummedArchive(dest, corrupt)
		e.writeFile(filepath.Join(dest, corrupt), []byte("bit rot\n"), 0o640)
	}
	cfg := e.config(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["keepDaily"], b["keepWeekly"], b["keepMonthly"] = 3, 2, 3
	})
	r := e.runner(cfg)
	r.Now = func() time.Time { return now }
	if code := r.Run(context.Background()); code != ExitOK {
		t.Fatalf("exit %d\n%s", code, e.logBuf.String())
	}
	want := []string{
		name(time.Date(2026, 10, 31, 3, 0, 0, 0, time.UTC)),
		corrupt,
		name(time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)),
		name(time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)),
		name(now),
	}
	for _, dest := range e.dests {
		got := archivesIn(t, dest, "tar.gz")
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %v\nwant %v", dest, got, want)
		}
		for _, n := range got {
			if _, err := os.Stat(filepath.Join(dest, n+".sha256")); err != nil {
				t.Errorf("%s: checksum of kept %s: %v", dest, n, err)
			}
		}
	}
	log := e.logBuf.String()
	for _, line := range []string{
		`msg="pruned archive" service=app destination=` + e.dests[0] + ` archive=app-20261201T010000Z.tar.gz why="daily 2026-12-01 keeps a newer archive; weekly 2026-W49 keeps a newer archive; monthly 2026-12 keeps a newer archive"`,
		`msg="kept archive" service=app destination=` + e.dests[0] + ` archive=app-20261031T030000Z.tar.gz why="monthly 2026-10"`,
		`msg="archive failed its checksum check; kept as evidence and not counted for retention" service=app destination=` + e.dests[0] + ` archive=` + corrupt,
		`msg="kept archive" service=app destination=` + e.dests[1] + ` archive=app-20261129T030000Z.tar.gz why="daily 2026-11-29; weekly 2026-W48"`,
	} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %s\n%s", line, log)
		}
	}

	// Planned again (the dry run's clock is the real one; no age limit):
	// nothing more to remove, and each archive says why it stays.
	var stdout, stderr bytes.Buffer
	cfgPath := filepath.Join(e.root, "config.json")
	if code := e.pruneCmd(cfgPath, PruneOptions{DryRun: true}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, line := range []string{
		"policy: maxAge=none keepLast=off minKeep=1 daily=3 weekly=2 monthly=3\n",
		"keep " + filepath.Join(e.dests[0], name(now)) + ": minKeep; daily 2026-12-01; weekly 2026-W49; monthly 2026-12\n",
		"keep " + filepath.Join(e.dests[0], name(time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC))) + ": daily 2026-11-30; monthly 2026-11\n",
		"bad, kept " + filepath.Join(e.dests[0], corrupt),
		e.dests[0] + ": 5 kept (1 of them bad), 0 would remove\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("prune --dry-run lacks %q:\n%s", line, out)
		}
	}
}

// TestPruneDryRunSaysWhy: prune --dry-run names the rule that removes each
// archive (here the age limit, which a calendar rule does not override)
// and the one that keeps each survivor.
func TestPruneDryRunSaysWhy(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	dest := e.dests[0]
	e.dests = e.dests[:1]
	day := 24 * time.Hour
	now := time.Now().UTC()
	var names []string
	for _, age := range []time.Duration{2 * time.Hour, day + 2*time.Hour, 40 * day} {
		n := retention.FileName("app", "tar.gz", now.Add(-age))
		names = append(names, n)
		e.writeSummedArchive(dest, n)
	}
	cfgPath := e.configFile(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["keepDaily"], b["maxRetentionDays"] = 3, 30
	})
	var stdout, stderr bytes.Buffer
	if code := e.pruneCmd(cfgPath, PruneOptions{DryRun: true}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, line := range []string{
		"keep " + filepath.Join(dest, names[0]) + ": minKeep; daily " + now.Add(-2*time.Hour).Format("2006-01-02") + "\n",
		"keep " + filepath.Join(dest, names[1]) + ": daily " + now.Add(-day-2*time.Hour).Format("2006-01-02") + "\n",
		"would remove " + filepath.Join(dest, names[2]) + ": older than maxRetentionDays (30d); although daily " + now.Add(-40*day).Format("2006-01-02") + "\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("prune --dry-run lacks %q:\n%s", line, out)
		}
	}
	if len(archivesIn(t, dest, "tar.gz")) != 3 {
		t.Error("dry run deleted something")
	}
}
