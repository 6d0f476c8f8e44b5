package worker

// Retention under faults: corrupt archives and clock skew. See
// docs/RELIABILITY.md.

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

// corruptions damage an archive the way disks and interrupted copies do.
var corruptions = map[string]func(t *testing.T, path string){
	"bit flipped": func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	},
	"truncated": func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	},
	"checksum missing": func(t *testing.T, path string) {
		if err := os.Remove(path + ".sha256"); err != nil {
			t.Fatal(err)
		}
	},
	"checksum garbage": func(t *testing.T, path string) {
		if err := os.WriteFile(path+".sha256", []byte("not a checksum\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	},
}

// TestPruneNeverCountsCorruptArchives: the newest archive is damaged,
// minKeep=1 and retentionSnapshots=1. The older, good archive satisfies
// the floor and is kept; the damaged one is kept as evidence and named in a
// warning; `prune --dry-run` shows it as "bad, kept".
func TestPruneNeverCountsCorruptArchives(t *testing.T) {
	t.Parallel()
	const older, newer = "app-20240101T000000Z.tar.gz", "app-20240102T000000Z.tar.gz"
	for how, corrupt := range corruptions {
		t.Run(how, func(t *testing.T) {
			e := newTestEnv(t)
			e.dests = e.dests[:1]
			dest := e.dests[0]
			e.writeSummedArchive(dest, older)
			e.writeSummedArchive(dest, newer)
			corrupt(t, filepath.Join(dest, newer))
			before := destFiles(t, dest)
			cfgPath := e.configFile(nil, func(m map[string]any) {
				b := backupSettings(m)
				b["retentionSnapshots"] = 1
				b["minKeep"] = 1
			})

			var stdout, stderr bytes.Buffer
			code := e.pruneCmd(cfgPath, PruneOptions{DryRun: true}, &stdout, &stderr)
			t.Logf("dry run:\n%s%s", stdout.String(), stderr.String())
			if code != ExitOK {
				t.Fatalf("prune --dry-run: exit %d", code)
			}
			if !strings.Contains(stdout.String(), "bad, kept "+filepath.Join(dest, newer)) {
				t.Error("dry run does not show the damaged archive as bad, kept")
			}
			if !strings.Contains(stdout.String(), "2 kept (1 of them bad), 0 would remove") {
				t.Error("dry run would remove something")
			}

			stdout.Reset()
			stderr.Reset()
			code = e.pruneCmd(cfgPath, PruneOptions{}, &stdout, &stderr)
			t.Logf("prune:\n%s%s", stdout.String(), stderr.String())
			if code != ExitOK {
				t.Fatalf("prune: exit %d", code)
			}
			if after := destFiles(t, dest); !slices.Equal(after, before) {
				t.Errorf("prune changed the destination: %v -> %v", before, after)
			}
			if !strings.Contains(stderr.String(), `level=WARN msg="archive failed its checksum check; kept as evidence and not counted for retention"`) ||
				!strings.Contains(stderr.String(), "archive="+newer) {
				t.Error("no warning naming the damaged archive")
			}
			assertNoTemps(t, dest)
		})
	}
}

// TestRunPruneSkipsCorruptArchives: in a real run, damaged archives among
// the newest do not count towards minKeep, so the good older ones the floor
// needs survive, and the damaged ones are not deleted.
func TestRunPruneSkipsCorruptArchives(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	const (
		oldest = "app-20240101T000000Z.tar.gz" // good, beyond the floor: pruned
		good   = "app-20240102T000000Z.tar.gz" // good: the floor's second archive
		bad1   = "app-20240103T000000Z.tar.gz" // damaged
		bad2   = "app-20240104T000000Z.tar.gz" // damaged
	)
	for _, d := range e.dests {
		for _, n := range []string{oldest, good, bad1, bad2} {
			e.writeSummedArchive(d, n)
		}
		corruptions["bit flipped"](t, filepath.Join(d, bad1))
		corruptions["checksum missing"](t, filepath.Join(d, bad2))
	}
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["retentionSnapshots"] = 1
		b["minKeep"] = 2
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("unit %q, want active", s)
	}
	log := e.logBuf.String()
	for _, d := range e.dests {
		got := archivesIn(t, d, "tar.gz")
		if len(got) != 4 || slices.Contains(got, oldest) || !slices.Contains(got, good) || !slices.Contains(got, bad1) || !slices.Contains(got, bad2) {
			t.Errorf("%s: archives %v, want the new one, %s and both damaged ones", d, got, good)
		}
		if _, err := os.Stat(filepath.Join(d, oldest+".sha256")); !os.IsNotExist(err) {
			t.Errorf("%s: checksum of the pruned archive left", d)
		}
		assertNoTemps(t, d)
		for _, n := range []string{bad1, bad2} {
			if !strings.Contains(log, "destination="+d+" archive="+n) {
				t.Errorf("no warning naming %s in %s", n, d)
			}
		}
	}
	if !strings.Contains(log, "result=success") || !strings.Contains(log, "ok, pruned 1") {
		t.Error("summary does not report success with one pruned archive per destination")
	}
}

// TestRunClockSkew runs with the clock set back and set forward (Runner.Now)
// against destinations holding archives from "now" and one dated far in the
// future: the newest archive is never removed and at least minKeep good
// archives not dated in the future stay.
func TestRunClockSkew(t *testing.T) {
	t.Parallel()
	existing := []string{
		"app-20240101T000000Z.tar.gz",
		"app-20240102T000000Z.tar.gz",
		"app-20240103T000000Z.tar.gz",
		"app-20990101T000000Z.tar.gz", // a run with a clock far ahead wrote this
	}
	tests := []struct {
		name       string
		now        time.Time
		wantPruned []string
	}{
		// Every existing archive is in the future: none is removed.
		{"clock set back", time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC), nil},
		// Everything looks ancient: only minKeep (2) good past archives,
		// the new one included, and the future one survive.
		{"clock set forward", time.Date(2040, 6, 1, 0, 0, 0, 0, time.UTC),
			[]string{"app-20240101T000000Z.tar.gz", "app-20240102T000000Z.tar.gz"}},
		// For comparison: the future archive takes a KeepLast slot.
		{"clock right", time.Date(2024, 1, 3, 12, 0, 0, 0, time.UTC),
			[]string{"app-20240101T000000Z.tar.gz", "app-20240102T000000Z.tar.gz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			for _, d := range e.dests {
				for _, n := range existing {
					e.writeSummedArchive(d, n)
				}
			}
			cfg := e.config([]string{"app.service"}, func(m map[string]any) {
				b := backupSettings(m)
				b["retentionSnapshots"] = 2
				b["maxRetentionDays"] = 7
				b["minKeep"] = 2
			})
			r := e.runner(cfg)
			r.Now = func() time.Time { return tt.now }
			code := r.Run(context.Background())
			t.Logf("log:\n%s", e.logBuf.String())
			if code != ExitOK {
				t.Fatalf("exit %d, want 0", code)
			}
			if s := e.unitState("app.service"); s != "active" {
				t.Errorf("unit %q, want active", s)
			}
			newName := retention.FileName("app", "tar.gz", tt.now)
			for _, d := range e.dests {
				got := archivesIn(t, d, "tar.gz")
				var want []string
				for _, n := range append(slices.Clone(existing), newName) {
					if !slices.Contains(tt.wantPruned, n) {
						want = append(want, n)
					}
				}
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s: archives %v, want %v", d, got, want)
				}
				// The invariants, independent of the expected list.
				if !slices.Contains(got, "app-20990101T000000Z.tar.gz") {
					t.Errorf("%s: the newest archive was removed", d)
				}
				pastBefore, past := 1, 0 // the new archive, then the existing ones
				for _, n := range existing {
					if tm, _ := retention.ParseName("app", "tar.gz", n); !tm.After(tt.now) {
						pastBefore++
					}
				}
				for _, n := range got {
					if tm, _ := retention.ParseName("app", "tar.gz", n); !tm.After(tt.now) {
						past++
					}
				}
				if past < min(2, pastBefore) {
					t.Errorf("%s: %d archives not in the future left of %d, want at least minKeep=2", d, past, pastBefore)
				}
				assertNoTemps(t, d)
			}
			if !strings.Contains(e.logBuf.String(), "archive="+newName) || !strings.Contains(e.logBuf.String(), "result=success") {
				t.Error("summary does not name the new archive or success")
			}
		})
	}
}

// TestPruneInterruptedRemovesNothing: SIGTERM (a cancelled context) while
// prune re-reads archives removes nothing and reports no archive as bad.
func TestPruneInterruptedRemovesNothing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	dest := e.dests[0]
	for _, n := range []string{"app-20240101T000000Z.tar.gz", "app-20240102T000000Z.tar.gz", "app-20240103T000000Z.tar.gz"} {
		e.writeSummedArchive(dest, n)
	}
	before := destFiles(t, dest)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var logBuf bytes.Buffer
	res, err := pruneDir(ctx, e.key(), &localDir{dir: dest, name: "app"}, "tar.gz", retention.Policy{KeepLast: 1, MinKeep: 1}, nil,
		time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), false, nil, NewLogger(&logBuf, 0))
	if err == nil || !strings.Contains(err.Error(), "prune interrupted") {
		t.Errorf("err = %v, want prune interrupted", err)
	}
	if len(res.removed) != 0 || len(res.bad) != 0 {
		t.Errorf("removed %v, bad %v; want neither", res.removed, res.bad)
	}
	if after := destFiles(t, dest); !slices.Equal(after, before) {
		t.Errorf("destination changed: %v -> %v", before, after)
	}
	if strings.Contains(logBuf.String(), "failed its checksum check") {
		t.Errorf("an interrupted check was reported as a bad archive:\n%s", logBuf.String())
	}
}
