package worker

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// Tests of the maintenance commands: prune, list, verify, restore,
// check-config.

func TestPruneNeverTouchesForeignFiles(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	dest := e.dests[0]
	e.dests = e.dests[:1]
	own := []string{"app-20200101T000000Z.tar.gz", "app-20210101T000000Z.tar.gz"}
	foreign := []string{
		"app-db-20190101T000000Z.tar.gz",        // other service whose name starts with "app"
		"app-db-20190101T000000Z.tar.gz.sha256", // its checksum
		"app-20190101T000000Z.tar.xz",           // our name, other format
		"notes.txt",
		"app-20190101T000000Z.tar.gz.bak",
	}
	for _, n := range append(slices.Clone(own), foreign...) {
		e.writeFile(filepath.Join(dest, n), []byte(n), 0o644)
	}
	e.writeFile(filepath.Join(dest, own[0]+".sha256"), []byte("x  "+own[0]+"\n"), 0o644)
	// A directory and a symlink named exactly like old archives.
	dirLike := "app-20180101T000000Z.tar.gz"
	if err := os.MkdirAll(filepath.Join(dest, dirLike, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	linkLike := "app-20170101T000000Z.tar.gz"
	target := filepath.Join(e.root, "precious")
	e.writeFile(target, []byte("precious"), 0o644)
	if err := os.Symlink(target, filepath.Join(dest, linkLike)); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["retentionSnapshots"] = 1
		b["maxRetentionDays"] = 1
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	files := destFiles(t, dest)
	for _, n := range own {
		if slices.Contains(files, n) {
			t.Errorf("old archive %s not pruned", n)
		}
	}
	if slices.Contains(files, own[0]+".sha256") {
		t.Error("checksum of pruned archive left behind")
	}
	for _, n := range append(foreign, dirLike, linkLike) {
		if !slices.Contains(files, n) {
			t.Errorf("foreign %s was removed", n)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, dirLike, "inside")); err != nil {
		t.Error("directory named like an archive was touched")
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Error("symlink target touched")
	}
	if got := archivesIn(t, dest, "tar.gz"); len(got) != 3 { // new one + dir + symlink
		t.Errorf("archives now %v", got)
	}

	// The prune command agrees: nothing more to remove.
	var stdout, stderr bytes.Buffer
	cfgPath := filepath.Join(e.root, "config.json")
	if code := e.pruneCmd(cfgPath, PruneOptions{DryRun: true}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "1 kept, 0 would remove") {
		t.Errorf("prune --dry-run said:\n%s", stdout.String())
	}
}

func TestPruneCommandDryRun(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	dest := e.dests[0]
	e.dests = e.dests[:1]
	for _, n := range []string{"app-20200101T000000Z.tar.gz", "app-20210101T000000Z.tar.gz", "app-20220101T000000Z.tar.gz"} {
		e.writeSummedArchive(dest, n)
	}
	cfgPath := e.configFile(nil, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 2
	})
	var stdout, stderr bytes.Buffer
	if code := e.pruneCmd(cfgPath, PruneOptions{DryRun: true}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "would remove "+filepath.Join(dest, "app-20200101T000000Z.tar.gz")) {
		t.Errorf("dry run output:\n%s", stdout.String())
	}
	if len(archivesIn(t, dest, "tar.gz")) != 3 {
		t.Error("dry run deleted something")
	}
	stdout.Reset()
	if code := e.pruneCmd(cfgPath, PruneOptions{}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := archivesIn(t, dest, "tar.gz"); !slices.Equal(got, []string{"app-20210101T000000Z.tar.gz", "app-20220101T000000Z.tar.gz"}) {
		t.Errorf("after prune: %v", got)
	}
}

func TestListAndVerifyCommands(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfgPath := e.configFile(nil, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	archiveName := archivesIn(t, e.dests[0], "tar.gz")[0]
	if code, out, errOut := e.listCmd(cfgPath, ListOptions{Verify: true}); code != ExitOK {
		t.Fatalf("list: exit %d\n%s", code, errOut)
	} else if strings.Count(out, archiveName) != 2 || !strings.Contains(out, " ok") {
		t.Errorf("list output:\n%s", out)
	}
	if code, out, errOut := e.verifyCmd(cfgPath, VerifyOptions{}); code != ExitOK {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	} else if strings.Count(out, "OK ") != 2 {
		t.Errorf("verify output:\n%s", out)
	}

	// Corrupt one copy (same size, one byte flipped).
	bad := filepath.Join(e.dests[1], archiveName)
	b, _ := os.ReadFile(bad)
	b[len(b)/2] ^= 0xff
	os.WriteFile(bad, b, 0o640)
	if code, out, _ := e.verifyCmd(cfgPath, VerifyOptions{}); code != ExitFailed {
		t.Fatalf("verify of corrupt archive: exit %d, want 1\n%s", code, out)
	} else if !strings.Contains(out, "FAILED "+bad) {
		t.Errorf("verify output:\n%s", out)
	}
	code, out, _ := e.listCmd(cfgPath, ListOptions{Verify: true})
	if code != ExitFailed {
		t.Errorf("list --verify of corrupt archive: exit %d", code)
	}
	if !strings.Contains(out, "mismatch") {
		t.Errorf("list output:\n%s", out)
	}
	os.Remove(filepath.Join(e.dests[0], archiveName+".sha256"))
	if _, out, _ := e.listCmd(cfgPath, ListOptions{}); !strings.Contains(out, "missing") || !strings.Contains(out, "present") {
		t.Errorf("list output:\n%s", out)
	}
}

func TestRestore(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	archivePath := filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0])
	// Keep a pristine copy of the data to compare against.
	pristine := filepath.Join(e.root, "pristine")
	for _, dp := range e.dataPaths {
		out := filepath.Join(pristine, archive.EntryName(dp))
		os.MkdirAll(filepath.Dir(out), 0o755)
		if b, err := exec.Command("cp", "-a", dp, out).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, b)
		}
	}

	t.Run("to target", func(t *testing.T) {
		target := filepath.Join(e.root, "restored")
		if code, _, stderr := e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target}); code != ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
		}
		// Non-empty target refused.
		if code, _, _ := e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target}); code != ExitFailed {
			t.Errorf("restore into non-empty target: exit %d, want 1", code)
		}
	})

	// restore --target DIR --path P: only P comes back, the whole archive
	// is still verified, and a P the archive does not hold fails with the
	// target left as it was.
	t.Run("one path to target", func(t *testing.T) {
		file := filepath.Join(e.dataPaths[0], "db.sqlite")
		target := filepath.Join(e.root, "restored-one")
		code, stdout, stderr := e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target, Paths: []string{file}})
		if code != ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		got := filepath.Join(target, archive.EntryName(file))
		if want := file + " -> " + got; !strings.Contains(stdout, want) {
			t.Errorf("stdout %q lacks %q", stdout, want)
		}
		if a, b := mustReadFile(t, filepath.Join(pristine, archive.EntryName(file))), mustReadFile(t, got); !bytes.Equal(a, b) {
			t.Errorf("restored %s differs from the data", got)
		}
		var found []string
		filepath.WalkDir(target, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				found = append(found, p)
			}
			return err
		})
		if len(found) != 1 {
			t.Errorf("restored more than the one path: %v", found)
		}

		missing := filepath.Join(e.dataPaths[0], "never-there.txt")
		target2 := filepath.Join(e.root, "restored-missing")
		code, _, stderr = e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target2, Paths: []string{file, missing}})
		if code != ExitFailed || !strings.Contains(stderr, missing) {
			t.Errorf("a path the archive lacks: exit %d, want 1 naming %s\n%s", code, missing, stderr)
		}
		if _, err := os.Lstat(target2); !os.IsNotExist(err) {
			t.Errorf("the failed restore left its target: %v", err)
		}

		for _, bad := range []RestoreOptions{
			{Archive: archivePath, Target: filepath.Join(e.root, "r3"), Paths: []string{"/etc/shadow"}},
			{Archive: archivePath, Target: filepath.Join(e.root, "r3"), Paths: []string{e.dataPaths[0] + "/../x"}},
			{Archive: archivePath, Paths: []string{file}}, // in place: whole data paths only
		} {
			if code, _, stderr := e.restoreStrict(cfgPath, bad); code != ExitFailed || !strings.Contains(stderr, "--path") {
				t.Errorf("%+v: exit %d\n%s", bad.Paths, code, stderr)
			}
		}
		if _, err := os.Lstat(filepath.Join(e.root, "r3")); !os.IsNotExist(err) {
			t.Errorf("a refused --path made its target: %v", err)
		}
	})

	t.Run("in place", func(t *testing.T) {
		os.Truncate(filepath.Join(e.dataPaths[0], "db.sqlite"), 10)
		e.writeFile(filepath.Join(e.dataPaths[0], "new-since-backup.txt"), []byte("new"), 0o644)
		os.RemoveAll(e.dataPaths[1])
		// In place without --yes: cmd/backup-worker's TestRestoreUsage.
		os.Remove(filepath.Join(e.sysDir, "calls.log"))
		code, stdout, stderr := e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath})
		t.Log(stderr)
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, filepath.Join(pristine, archive.EntryName(dp)), dp)
		}
		// The old data was moved aside, not deleted.
		matches, _ := filepath.Glob(e.dataPaths[0] + ".pre-restore-*")
		if len(matches) != 1 {
			t.Fatalf("moved-aside data: %v", matches)
		}
		if b, _ := os.ReadFile(filepath.Join(matches[0], "new-since-backup.txt")); string(b) != "new" {
			t.Error("moved-aside data incomplete")
		}
		if !strings.Contains(stdout, "previous data moved to "+matches[0]) {
			t.Errorf("output does not say where the old data went:\n%s", stdout)
		}
		want := []string{"is-active app.service", "stop app.service", "start app.service", "is-active app.service"}
		if got := e.callsWithoutPolls(); !slices.Equal(got, want) {
			t.Errorf("calls = %q, want %q", got, want)
		}
		// No staging directories left.
		for _, dp := range e.dataPaths {
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(dp), ".*.restore-*")); len(m) > 0 {
				t.Errorf("staging left: %v", m)
			}
		}
	})

	t.Run("corrupt archive refused", func(t *testing.T) {
		bad := filepath.Join(e.root, "bad", filepath.Base(archivePath))
		os.MkdirAll(filepath.Dir(bad), 0o755)
		b, _ := os.ReadFile(archivePath)
		b[len(b)/2] ^= 0xff
		os.WriteFile(bad, b, 0o600)
		sum, _ := os.ReadFile(archivePath + ".sha256")
		os.WriteFile(bad+".sha256", sum, 0o600)
		os.Remove(filepath.Join(e.sysDir, "calls.log"))
		code, _, stderr := e.restoreStrict(cfgPath, RestoreOptions{Archive: bad})
		if code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if !strings.Contains(stderr, "refusing to restore") {
			t.Errorf("stderr: %s", stderr)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("units touched for a bad archive: %q", got)
		}
	})
}

func TestCheckConfigAndHelp(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	good := e.configFile(nil, nil)
	var stdout, stderr bytes.Buffer
	if code, out, _ := e.checkConfigCmd(good, false); code != ExitOK || out != "ok\n" {
		t.Errorf("check-config good: exit %d, %q", code, out)
	}
	bad := filepath.Join(e.root, "bad.json")
	os.WriteFile(bad, []byte(`{"name":"bad name","dataPaths":["rel"],"user":"","group":"g","backup":{"paths":["/x"],"format":"rar"}}`), 0o644)
	code, _, checkErr := e.checkConfigCmd(bad, false)
	if code != ExitUsage {
		t.Errorf("check-config bad: exit %d, want 2", code)
	}
	for _, want := range []string{"name", "dataPaths[0]", "user", "backup.format"} {
		if !strings.Contains(checkErr, want) {
			t.Errorf("problems lack %q:\n%s", want, checkErr)
		}
	}
	if code := e.runCmd(bad, false, &stdout, &stderr); code != ExitUsage {
		t.Errorf("run with bad config: exit %d, want 2", code)
	}
	// Every command's --help, --version, run without --config:
	// cmd/backup-worker's TestHelpAndVersion.
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
