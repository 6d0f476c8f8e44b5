package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maintText makes a command's output comparable across runs: the test's
// root, the run's archive name and timestamps, sizes and ages become
// placeholders, and the spaces tabwriter aligns columns with become one.
func (e *e2e) maintText(s, archive string) string {
	s = strings.ReplaceAll(s, e.root, "ROOT")
	s = strings.ReplaceAll(s, archive, "ARCHIVE")
	s = regexp.MustCompile(`\d+(\.\d)? (B|KiB|MiB)`).ReplaceAllString(s, "SIZE")
	s = regexp.MustCompile(`\b(\d+s|\d+d\d+h)\b`).ReplaceAllString(s, "AGE")
	s = regexp.MustCompile(`pre-restore-\d{8}T\d{6}Z`).ReplaceAllString(s, "pre-restore-TS")
	return regexp.MustCompile(` {2,}`).ReplaceAllString(s, " ")
}

// TestMaintenanceCommandsOutput pins what list, verify, prune and restore
// print (stdout, line by line) and their exit codes, on a run's archive
// in two destinations and an unsigned archive planted beside it.
func TestMaintenanceCommandsOutput(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"app.service"})
	os.WriteFile(filepath.Join(e.sysDir, "app.service.state"), []byte("active\n"), 0o644)
	if code, _, _ := e.worker("run", "--config", e.config); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	m, _ := filepath.Glob(filepath.Join(e.dests[0], "app-*.tar.zst"))
	if len(m) != 1 {
		t.Fatalf("archives %v", m)
	}
	archive := filepath.Base(m[0])
	planted := "app-20200101T000000Z.tar.zst"
	content, _ := os.ReadFile(m[0])
	sum := sha256.Sum256(content)
	os.WriteFile(filepath.Join(e.dests[1], planted), content, 0o600)
	os.WriteFile(filepath.Join(e.dests[1], planted+".sha256"), []byte(fmt.Sprintf("%x  %s\n", sum, planted)), 0o600)
	data := filepath.Join(e.root, "data", "app")
	target := filepath.Join(e.root, "target")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"list"}, 0, `DESTINATION ARCHIVE SIZE AGE CHECKSUM SIGNATURE
ROOT/d1 ARCHIVE SIZE AGE present ok
ROOT/d2 ARCHIVE SIZE AGE present ok
ROOT/d2 app-20200101T000000Z.tar.zst SIZE AGE present missing (untrusted)
1 archive(s) untrusted: not counted for retention, never pruned, restored only with --trust-unsigned; adopt ones you vouch for with ` + "`backup-worker verify --adopt`" + `
`},
		{[]string{"verify", "--all"}, 1, `OK ROOT/d1/ARCHIVE
OK ROOT/d2/ARCHIVE
UNTRUSTED ROOT/d2/app-20200101T000000Z.tar.zst: unsigned: not written by this host's worker, or written before archives were signed (adopt it with ` + "`backup-worker verify --adopt`" + `)
`},
		{[]string{"prune", "--dry-run"}, 0, `policy: maxAge=none keepLast=3 minKeep=1
keep ROOT/d1/ARCHIVE: minKeep; last 3
ROOT/d1: 1 kept, 0 would remove
keep ROOT/d2/ARCHIVE: minKeep; last 3
untrusted, kept ROOT/d2/app-20200101T000000Z.tar.zst: unsigned: not written by this host's worker, or written before archives were signed (adopt it with ` + "`backup-worker verify --adopt`" + `)
ROOT/d2: 2 kept (0 of them bad, 1 untrusted), 0 would remove
`},
		{[]string{"restore", "--archive", archive, "--target", target}, 0, `restored ROOT/d1/ARCHIVE into ROOT/target
 ROOT/data/app -> ROOT/targetROOT/data/app
`},
		{[]string{"restore", "--archive", archive, "--destination", e.dests[1], "--yes"}, 0, `ROOT/data/app: previous data moved to ROOT/data/app.pre-restore-TS
restored ROOT/d2/ARCHIVE
`},
	} {
		code, stdout, _ := e.worker(append(tc.args, "--config", e.config)...)
		if got := e.maintText(stdout, archive); code != tc.code || got != tc.want {
			t.Errorf("%v: exit %d (want %d), stdout:\n%s\nwant:\n%s", tc.args, code, tc.code, got, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "file.txt")); err != nil || e.unitState("app.service") != "active" {
		t.Errorf("after restore in place: %v, unit %s", err, e.unitState("app.service"))
	}
}

// TestRestoreUsage: restore's argument errors are usage errors (exit 2),
// found before anything is read, stopped or moved.
func TestRestoreUsage(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"app.service"})
	os.WriteFile(filepath.Join(e.sysDir, "app.service.state"), []byte("active\n"), 0o644)
	data := filepath.Join(e.root, "data", "app")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore"}, "--archive NAME|PATH is required (and no other arguments)"},
		{[]string{"restore", "--archive", "a.tar.zst", "extra"}, "--archive NAME|PATH is required (and no other arguments)"},
		{[]string{"restore", "--archive", "app-20200101T000000Z.tar.zst.age", "--target", "t"}, `"app-20200101T000000Z.tar.zst.age" is encrypted: give --identity FILE`},
		{[]string{"restore", "--archive", "app-20200101T000000Z.tar.zst"}, "restoring in place stops app.service, moves " + data + " aside to <path>.pre-restore-<timestamp>"},
		{[]string{"restore", "--archive", "app-20200101T000000Z.tar.zst", "--path", data + "/file.txt", "--yes"}, "--path restores into --target DIR only"},
		{[]string{"restore", "--archive", "app-20200101T000000Z.tar.zst", "--path", "/etc/shadow", "--target", "t"}, `--path "/etc/shadow": not inside a data path of app`},
		{[]string{"verify", "nothing.rar"}, "nothing.rar: unknown archive extension"},
	} {
		code, _, stderr := e.worker(append(tc.args, "--config", e.config)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q in:\n%s", tc.args, code, tc.want, stderr)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(e.sysDir, "calls.log")); len(b) > 0 {
		t.Errorf("units touched: %s", b)
	}
	if _, err := os.Stat(filepath.Join(data, "file.txt")); err != nil {
		t.Errorf("data moved: %v", err)
	}
}
