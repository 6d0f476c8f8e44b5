package worker

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// sameArchives checks that every dir holds one archive of app, all with the
// same name and bytes, each passing `sha256sum -c` beside it, mode 0640.
func sameArchives(t *testing.T, dirs ...string) {
	t.Helper()
	var first []byte
	var name string
	for _, d := range dirs {
		assertOneArchive(t, d)
		a := archivesIn(t, d, "tar.gz")[0]
		b, err := os.ReadFile(filepath.Join(d, a))
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(filepath.Join(d, a)); fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, want 0640", a, fi.Mode().Perm())
		}
		if first == nil {
			first, name = b, a
		} else if a != name || !bytes.Equal(b, first) {
			t.Errorf("%s/%s differs from the first destination's %s", d, a, name)
		}
		cmd := exec.Command("sha256sum", "-c", a+".sha256")
		cmd.Dir = d
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c in %s: %v\n%s", d, err, out)
		}
	}
}

// TestRunSameFileSystemDestinationsAreCopied: the stream goes to the first
// destination of each file system; the others on it are copied from it.
func TestRunSameFileSystemDestinationsAreCopied(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	e.dests = append(e.dests, filepath.Join(e.root, "dest3"))
	other := ""
	if os.Geteuid() == 0 {
		other = filepath.Join(e.root, "other")
		testtool.MountTmpfs(t, other, "16m")
		e.dests = append(e.dests, other)
	}
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	sameArchives(t, e.dests...)
	log := e.logBuf.String()
	for _, want := range []string{
		"destination=" + e.dests[0] + " archive=",
		"destination=" + e.dests[1] + " ",
		"written=\"copied from " + e.dests[0] + "\"",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Count(log, "written=streamed") != len(e.dests)-2 {
		t.Errorf("want %d streamed destinations (one per file system) in the log", len(e.dests)-2)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
}

// TestRunCopyFailsPrimaryKept: a copy that does not fit (ENOSPC during
// copy_file_range) fails alone; its primary is committed and pruned, the
// copy's destination keeps its old archives and no temp file.
func TestRunCopyFailsPrimaryKept(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	fsDir := filepath.Join(e.root, "small")
	// The archive is about 350 KB (random data): one fits, two do not.
	testtool.MountTmpfs(t, fsDir, "600k")
	e.dests = []string{filepath.Join(fsDir, "a"), filepath.Join(fsDir, "b")}
	old := "app-20200101T000000Z.tar.gz"
	for _, d := range e.dests {
		e.writeSummedArchive(d, old)
	}
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 1
	})
	if code := e.run(cfg); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	if got := archivesIn(t, e.dests[0], "tar.gz"); len(got) != 1 || got[0] == old {
		t.Errorf("primary holds %v, want only the new archive", got)
	}
	if got := archivesIn(t, e.dests[1], "tar.gz"); len(got) != 1 || got[0] != old {
		t.Errorf("failed copy's destination holds %v, want only the old archive", got)
	}
	assertNoTemps(t, e.dests...)
	log := e.logBuf.String()
	if !strings.Contains(log, "copy from "+e.dests[0]) || !strings.Contains(log, "no space left on device") {
		t.Error("log does not name the failed copy and the full disk")
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
}

// TestRunPrimaryFailsItsCopiesFail: when the stream to a file system fails
// (full mid-stream), the other destinations on it fail with it; another
// file system's destination is committed.
func TestRunPrimaryFailsItsCopiesFail(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	tiny := filepath.Join(e.root, "tiny")
	testtool.MountTmpfs(t, tiny, "64k")
	e.dests = []string{filepath.Join(e.root, "dest1"), filepath.Join(tiny, "a"), filepath.Join(tiny, "b")}
	// A small old archive makes the preflight estimate small, so the
	// tiny file system fills up mid-stream.
	old := "app-20200101T000000Z.tar.gz"
	for _, d := range e.dests[1:] {
		e.writeFile(filepath.Join(d, old), []byte("old archive"), 0o640)
	}
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	assertOneArchive(t, e.dests[0])
	for _, d := range e.dests[1:] {
		if got := archivesIn(t, d, "tar.gz"); len(got) != 1 || got[0] != old {
			t.Errorf("%s holds %v, want only the old archive", d, got)
		}
	}
	assertNoTemps(t, e.dests...)
	if log := e.logBuf.String(); !strings.Contains(log, "the copy in "+e.dests[1]+", on the same file system, failed") {
		t.Error("log does not say why the copy destination failed")
	}
}

// TestRunCopiesShareExtentsOnXFS: on a file system with reflink, a copy
// shares its primary's extents (copy_file_range cloned it): the second
// archive costs no data blocks.
func TestRunCopiesShareExtentsOnXFS(t *testing.T) {
	t.Parallel()
	filefrag := testtool.Require(t, "filefrag", "e2fsprogs")
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	xfs := filepath.Join(e.root, "xfs")
	testtool.MountXFS(t, xfs, "300M")
	e.dests = []string{filepath.Join(xfs, "a"), filepath.Join(xfs, "b")}
	if code := e.run(e.config([]string{"app.service"}, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	sameArchives(t, e.dests...)
	for _, d := range e.dests {
		p := filepath.Join(d, archivesIn(t, d, "tar.gz")[0])
		out, err := exec.Command(filefrag, "-v", p).CombinedOutput()
		if err != nil {
			t.Fatalf("filefrag: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "shared") {
			t.Errorf("%s: extents not shared (no reflink):\n%s", p, out)
		}
	}
}
