package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// noStop fails the test when systemctl was asked to stop anything.
func noStop(t *testing.T, e *testEnv) {
	t.Helper()
	for _, c := range e.calls() {
		if strings.HasPrefix(c, "stop ") {
			t.Errorf("a unit was stopped: %q", e.calls())
		}
	}
}

// TestOptionalDestinationMustBeMounted (issue 11 item 3): an optional
// destination that is an empty directory on its parent's file system (an
// unplugged disk's mount point) is skipped with a warning, and one below it
// is not created; once a real file system (tmpfs) is mounted there, the
// archive goes to it. The old worker wrote to the bare mount point and
// reported ok.
func TestOptionalDestinationMustBeMounted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	usb := filepath.Join(e.root, "mnt", "usb")
	must(t, os.MkdirAll(usb, 0o755))
	below := filepath.Join(usb, "backups")
	e.dests = []string{e.dests[0], usb, below}
	cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["optionalPaths"] = []string{usb, below} })
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("unmounted: exit %d", code)
	}
	if got := destFiles(t, usb); len(got) != 0 {
		t.Errorf("the bare mount point was written to: %v", got)
	}
	if log := e.logBuf.String(); !strings.Contains(log, "not a mount point: taken for an unmounted disk") {
		t.Error("no warning for the bare mount point")
	}
	assertOneArchive(t, e.dests[0])

	testtool.MountTmpfs(t, usb, "8m")
	// Right at the top of the mounted disk: used even while empty.
	must(t, os.Mkdir(below, 0o750))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("mounted: exit %d", code)
	}
	assertOneArchive(t, usb)
	assertOneArchive(t, below)
}

// TestRequiredDestinationUnderEmptyMountPoint (issue 11 item 3, by hand): a
// missing required destination below an empty directory that is not a
// mount point is not created on the parent disk: preflight fails before
// anything is stopped. Below a mounted tmpfs it is created as before.
func TestRequiredDestinationUnderEmptyMountPoint(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	disk := filepath.Join(e.root, "mnt", "disk")
	must(t, os.MkdirAll(disk, 0o755))
	e.dests = []string{filepath.Join(disk, "backups", "app")}
	cfg := e.config([]string{"app.service"}, nil)
	if code := e.run(cfg); code != ExitFailed {
		t.Fatalf("exit %d, want %d", code, ExitFailed)
	}
	noStop(t, e)
	if _, err := os.Lstat(filepath.Join(disk, "backups")); err == nil {
		t.Error("the destination was created on the parent file system")
	}
	if !strings.Contains(e.logBuf.String(), disk+" is an empty directory, not a mount point") {
		t.Error("the log does not say why")
	}

	testtool.MountTmpfs(t, disk, "8m")
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("mounted: exit %d", code)
	}
	assertOneArchive(t, e.dests[0])
}

// TestFstabMountPointNotMounted: a destination at or below a mount point
// that /etc/fstab declares but that is not mounted is not there, even when
// the bare directory holds files: required fails preflight, optional is
// skipped; mounted, both are used.
func TestFstabMountPointNotMounted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	disk := filepath.Join(e.root, "mnt", "my disk")
	e.writeFile(filepath.Join(disk, "stray"), []byte("left on the root disk\n"), 0o644)
	fstab := filepath.Join(e.root, "fstab")
	escaped := strings.ReplaceAll(disk, " ", `\040`)
	must(t, os.WriteFile(fstab, []byte("# test\nUUID=1234 / ext4 defaults 0 1\nLABEL=usb "+escaped+" ext4 noauto,nofail 0 2\n"), 0o644))
	e.seams.fstabPath = fstab

	e.dests = []string{disk}
	cfg := e.config([]string{"app.service"}, nil)
	if code := e.run(cfg); code != ExitFailed {
		t.Fatalf("required, unmounted: exit %d", code)
	}
	noStop(t, e)
	if !strings.Contains(e.logBuf.String(), "is a mount point in "+fstab+" but nothing is mounted there") {
		t.Error("the log does not say why")
	}
	e.dests = []string{filepath.Join(e.root, "local"), filepath.Join(disk, "sub")}
	cfg = e.config(nil, func(m map[string]any) { backupSettings(m)["optionalPaths"] = []string{e.dests[1]} })
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("optional, unmounted: exit %d", code)
	}
	if _, err := os.Lstat(e.dests[1]); err == nil {
		t.Error("the optional destination was created")
	}

	testtool.MountTmpfs(t, disk, "8m")
	must(t, os.Mkdir(e.dests[1], 0o750))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("mounted: exit %d", code)
	}
	assertOneArchive(t, e.dests[1])
}

// TestPreflightRefusesBeforeStop (issue 11 item 2, issue 10 item 13): what
// the run would trip over fails it before any unit is stopped, exit 1: a
// config no check-config saw (level 15 with tar.gz), an unknown user, a
// data path that is a symlink, two data paths that are one directory or
// nested through a symlinked parent, two destinations that are one
// directory through a symlink.
func TestPreflightRefusesBeforeStop(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		arm  func(e *testEnv) func(*Runner)
		want string
	}{
		"level 15 with tar.gz": {func(e *testEnv) func(*Runner) {
			return func(r *Runner) { r.Config.Backup.CompressionLevel = 15 }
		}, "tar.gz takes levels 1-9"},
		"exclude [unclosed": {func(e *testEnv) func(*Runner) {
			return func(r *Runner) { r.Config.Backup.Exclude = []string{"[unclosed"} }
		}, "not a valid glob"},
		"unknown user": {func(e *testEnv) func(*Runner) {
			return func(r *Runner) { r.Config.User = "no-such-user-xyz" }
		}, "unknown user no-such-user-xyz"},
		"data path symlink the service user could make": {func(e *testEnv) func(*Runner) {
			link := filepath.Join(e.root, "data", "link")
			must(t, os.Symlink("/etc", link))
			must(t, os.Lchown(link, 65534, 65534))
			e.dataPaths[1] = link
			return nil
		}, "refusing to follow"},
		"same data dir twice": {func(e *testEnv) func(*Runner) {
			link := filepath.Join(e.root, "alias")
			must(t, os.Symlink(filepath.Join(e.root, "data"), link))
			e.dataPaths[1] = filepath.Join(link, "app")
			return nil
		}, "are the same directory"},
		"nested data paths": {func(e *testEnv) func(*Runner) {
			link := filepath.Join(e.root, "alias")
			must(t, os.Symlink(e.dataPaths[0], link))
			e.dataPaths[1] = filepath.Join(link, "config")
			return nil
		}, "are nested"},
		"same destination twice": {func(e *testEnv) func(*Runner) {
			must(t, os.Mkdir(e.dests[0], 0o750))
			must(t, os.Symlink(e.dests[0], e.dests[1]))
			return nil
		}, "are the same directory (a symlink or bind mount)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			mutate := tc.arm(e)
			r := e.runner(e.config([]string{"app.service"}, nil))
			if mutate != nil {
				mutate(r)
			}
			code := r.Run(context.Background())
			t.Log(e.logBuf.String())
			if code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			noStop(t, e)
			if !strings.Contains(e.logBuf.String(), tc.want) {
				t.Errorf("the log lacks %q", tc.want)
			}
			if e.unitState("app.service") != "active" {
				t.Error("unit not active")
			}
		})
	}
}

// TestCheckConfigRejectsWhatRunRejects: issue 11's reproductions fail
// check-config (exit 2, the key and the fix named) and `run` exits before
// calling systemctl at all.
func TestCheckConfigRejectsWhatRunRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		mutate func(b map[string]any)
		want   string
	}{
		"tar.gz level 15":          {func(b map[string]any) { b["compressionLevel"] = 15 }, "backup.compressionLevel 15: tar.gz takes levels 1-9"},
		"tar.xz level 12":          {func(b map[string]any) { b["format"], b["compressionLevel"] = "tar.xz", 12 }, "backup.compressionLevel 12: tar.xz takes levels 1-9"},
		"exclude [unclosed":        {func(b map[string]any) { b["exclude"] = []string{"[unclosed"} }, `backup.exclude[0] "[unclosed": not a valid glob`},
		"threads 1e8":              {func(b map[string]any) { b["threads"] = 100000000 }, "backup.threads 100000000"},
		"state dir in destination": {func(b map[string]any) { b["stateDirectory"] = b["paths"].([]string)[0] + "/state" }, "backup.stateDirectory"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			path := e.configFile([]string{"app.service"}, func(m map[string]any) { tc.mutate(backupSettings(m)) })
			code, _, checkErr := e.checkConfigCmd(path, false)
			if code != ExitUsage {
				t.Errorf("check-config: exit %d, want %d", code, ExitUsage)
			}
			if !strings.Contains(checkErr, tc.want) {
				t.Errorf("check-config output lacks %q:\n%s", tc.want, checkErr)
			}
			var stdout, stderr strings.Builder
			if code := e.runCmd(path, false, &stdout, &stderr); code != ExitUsage {
				t.Errorf("run: exit %d, want %d", code, ExitUsage)
			}
			if calls := e.calls(); len(calls) != 0 {
				t.Errorf("systemctl called: %q", calls)
			}
		})
	}
}
