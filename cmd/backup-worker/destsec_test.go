package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plantSideFiles plants, in every destination, stand-in archives of app
// whose .sha256 and .sig are a FIFO (no writer: an open or read blocks
// forever) and a symlink to /dev/zero (endless), as the service user can.
func (e *e2e) plantSideFiles(ext string) {
	e.t.Helper()
	for _, d := range e.dests {
		os.MkdirAll(d, 0o750)
		fifo, zero := filepath.Join(d, "app-20200101T000000Z."+ext), filepath.Join(d, "app-20200102T000000Z."+ext)
		for _, a := range []string{fifo, zero} {
			if err := os.WriteFile(a, []byte("planted\n"), 0o640); err != nil {
				e.t.Fatal(err)
			}
		}
		for _, side := range []string{".sha256", ".sig"} {
			if err := syscall.Mkfifo(fifo+side, 0o666); err != nil {
				e.t.Fatal(err)
			}
			if err := os.Symlink("/dev/zero", zero+side); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// waitBounded waits for cmd; after limit it sends SIGTERM and waits 5 s
// more. It fails the test if the command did not end by itself.
func waitBounded(t *testing.T, cmd *exec.Cmd, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return
	case <-time.After(limit):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		t.Errorf("%v hung for %v (SIGTERM stopped it)", cmd.Args[1:], limit)
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("%v hung for %v and ignored SIGTERM", cmd.Args[1:], limit)
	}
}

// TestPlantedSideFilesDoNotHang (issue 10 item 6): a FIFO named
// NAME.sha256 (or .sig) hung list, prune and run, which then ignored
// SIGTERM and kept the lock; a .sha256 symlinked to /dev/zero was read
// until memory ran out. Each command now ends within a bound, refuses
// both files without reading them, and keeps its memory small.
func TestPlantedSideFilesDoNotHang(t *testing.T) {
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	e.editConfig(func(m map[string]any) { backupOf(m)["retentionSnapshots"] = 5 })
	e.plantSideFiles("tar.zst") // the config's format
	for _, args := range [][]string{
		{"list"}, {"list", "--verify"}, {"verify", "--all"}, {"prune", "--dry-run"}, {"prune"}, {"run"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd, out := e.startWorker(nil, append(args, "--config", e.config)...)
			start := time.Now()
			waitBounded(t, cmd, 20*time.Second)
			t.Logf("exit %d after %v:\n%s", cmd.ProcessState.ExitCode(), time.Since(start), out.String())
			if rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss; rss > 200<<10 {
				t.Errorf("max RSS %d KiB: something read the endless file", rss)
			}
			if strings.HasPrefix(args[0], "list") && !strings.Contains(out.String(), "refused") {
				t.Error("list does not report the planted files as refused")
			}
			if args[0] == "run" && cmd.ProcessState.ExitCode() != 0 {
				t.Errorf("run: exit %d, want 0 (the planted archives are not the run's business)", cmd.ProcessState.ExitCode())
			}
		})
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not active at the end")
	}
}

// TestSIGTERMWithPlantedFIFO: with the FIFOs planted, SIGTERM in the
// middle of a run still stops it (exit 130, unit started again).
func TestSIGTERMWithPlantedFIFO(t *testing.T) {
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	e.slowData(16)
	e.plantSideFiles("tar.xz")
	cmd, out := e.startWorker(nil, "run", "--config", e.config)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if temps, _ := e.scanDests(); len(temps) == len(e.dests) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitBounded(t, cmd, 20*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130\n%s", code, out.String())
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not started again after SIGTERM")
	}
}
