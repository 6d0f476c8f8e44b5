package worker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// Tests of the run against its destinations: preflight, a full or
// read-only destination, every format.

func TestRunOneDestinationFullDisk(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	testtool.MountTmpfs(t, e.dests[1], "64k")
	// A small previous archive in each destination makes the preflight
	// estimate small (newest archive + 10%), so the run gets past
	// preflight and the tiny disk fills up mid-stream, as when data grew.
	old := "app-20200101T000000Z.tar.gz"
	for _, d := range e.dests {
		e.writeFile(filepath.Join(d, old), []byte("old archive"), 0o640)
	}
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 1
	})
	if code := e.run(cfg); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
	good := archivesIn(t, e.dests[0], "tar.gz")
	if len(good) != 1 || good[0] == old {
		t.Errorf("good destination holds %v, want only the new archive (old one pruned)", good)
	}
	if got := destFiles(t, e.dests[1]); !slices.Equal(got, []string{old}) {
		t.Errorf("full destination holds %v, want only the untouched old archive", got)
	}
	log := e.logBuf.String()
	if !strings.Contains(log, "no space left on device") || !strings.Contains(log, "result=partial") {
		t.Error("log does not report the full disk and the partial result")
	}
}

func TestRunPreflight(t *testing.T) {
	t.Parallel()
	t.Run("destination is a file: the others get the archive", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.writeFile(e.dests[1], []byte("not a dir"), 0o644)
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
			t.Fatalf("exit %d, want 3 (partial)", code)
		}
		if !strings.Contains(e.logBuf.String(), e.dests[1]+": not a directory") {
			t.Error("destination not named")
		}
		if e.unitState("app.service") != "active" {
			t.Error("unit not active after the run")
		}
		assertOneArchive(t, e.dests[0])
		if b, _ := os.ReadFile(e.dests[1]); string(b) != "not a dir" {
			t.Error("the file in the way was touched")
		}
	})
	t.Run("no usable destination: nothing is stopped", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		e.writeFile(e.dests[0], []byte("not a dir"), 0o644)
		e.writeFile(e.dests[1], []byte("not a dir"), 0o644)
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called before preflight passed: %q", got)
		}
		log := e.logBuf.String()
		for _, want := range []string{"no destination available", e.dests[0] + ": not a directory", e.dests[1] + ": not a directory"} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q", want)
			}
		}
	})
	t.Run("optional destination missing is skipped", func(t *testing.T) {
		e := newTestEnv(t)
		cfg := e.config(nil, func(m map[string]any) {
			backupSettings(m)["optionalPaths"] = []string{e.dests[1]}
		})
		if code := e.run(cfg); code != ExitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		if _, err := os.Stat(e.dests[1]); !errors.Is(err, os.ErrNotExist) {
			t.Error("optional destination was created")
		}
		if !strings.Contains(e.logBuf.String(), "optional destination missing") {
			t.Error("no warning")
		}
	})
	t.Run("missing destination is created", func(t *testing.T) {
		e := newTestEnv(t)
		if code := e.run(e.config(nil, nil)); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		fi, err := os.Stat(e.dests[0])
		if err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("destination: %v %v, want mode 0750", fi, err)
		}
	})
	t.Run("not enough space on one destination", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		testtool.MountTmpfs(t, e.dests[1], "64k")
		if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
			t.Fatalf("exit %d, want 3 (partial)", code)
		}
		if !strings.Contains(e.logBuf.String(), "the archive needs about") {
			t.Error("no space message")
		}
		assertOneArchive(t, e.dests[0])
		assertNoArchives(t, e.dests[1])
		assertNoTemps(t, e.dests[1])
		if e.unitState("app.service") != "active" {
			t.Error("unit not active after the run")
		}
	})
	t.Run("pre hook fails", func(t *testing.T) {
		e := newTestEnv(t)
		e.setUnit("app.service", "active")
		cfg := e.config([]string{"app.service"}, func(m map[string]any) {
			backupSettings(m)["preBackup"] = "exit 7"
		})
		if code := e.run(cfg); code != ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("systemctl called: %q", got)
		}
	})
	t.Run("stale temp files removed", func(t *testing.T) {
		e := newTestEnv(t)
		stale := ".app-20240101T000000Z.tar.gz.tmp-0123abcd"
		foreign := ".app-db-20240101T000000Z.tar.gz.tmp-0123abcd"
		e.writeFile(filepath.Join(e.dests[0], stale), []byte("partial"), 0o600)
		e.writeFile(filepath.Join(e.dests[0], foreign), []byte("other service's"), 0o600)
		if code := e.run(e.config(nil, nil)); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		if _, err := os.Lstat(filepath.Join(e.dests[0], stale)); !errors.Is(err, os.ErrNotExist) {
			t.Error("stale temp file not removed")
		}
		if _, err := os.Lstat(filepath.Join(e.dests[0], foreign)); err != nil {
			t.Error("another service's temp file was removed")
		}
	})
}

func TestAllFormats(t *testing.T) {
	t.Parallel()
	for _, format := range config.Formats {
		t.Run(format, func(t *testing.T) {
			e := newTestEnv(t)
			e.dests = e.dests[:1]
			cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["format"] = format })
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			names := archivesIn(t, e.dests[0], format)
			if len(names) != 1 {
				t.Fatalf("archives: %v", destFiles(t, e.dests[0]))
			}
			out := filepath.Join(e.root, "out")
			os.MkdirAll(out, 0o755)
			if _, err := archive.ExtractFile(context.Background(), filepath.Join(e.dests[0], names[0]), format, out, archive.ExtractOptions{SameOwner: true}); err != nil {
				t.Fatal(err)
			}
			for _, dp := range e.dataPaths {
				assertSameTree(t, dp, filepath.Join(out, archive.EntryName(dp)))
			}
		})
	}
}

// mountReadOnly makes dir a read-only bind mount of itself.
func mountReadOnly(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount (need root in a mount-capable namespace): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v %s", err, out)
	}
}

// TestRunReadOnlyDestination: a destination on a read-only mount is left
// out before anything is stopped; the other destination gets the archive,
// the run ends partial, the unit is up, and the read-only one keeps its
// old archive.
func TestRunReadOnlyDestination(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	old := "app-20200101T000000Z.tar.gz"
	e.writeFile(filepath.Join(e.dests[1], old), []byte("old archive"), 0o640)
	mountReadOnly(t, e.dests[1])
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial); log:\n%s", code, e.logBuf.String())
	}
	if !strings.Contains(e.logBuf.String(), e.dests[1]+": not writable") {
		t.Errorf("read-only destination not named in the log:\n%s", e.logBuf.String())
	}
	assertOneArchive(t, e.dests[0])
	entries, _ := os.ReadDir(e.dests[1])
	if len(entries) != 1 || entries[0].Name() != old {
		t.Errorf("read-only destination holds %v, want only %s", entries, old)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not active after the run")
	}
}
