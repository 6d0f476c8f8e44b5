package main

// Faults caused for real against the built binary: SIGKILL in the middle of
// the archive, an unreadable file with the worker running unprivileged,
// 200,000 files under a memory bound, and file modes observed while a run
// is in progress. See docs/RELIABILITY.md.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
)

// editConfig rewrites the test's config file through mutate.
func (e *e2e) editConfig(mutate func(m map[string]any)) {
	e.t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatal(err)
	}
	mutate(m)
	if b, err = json.Marshal(m); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(e.config, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func backupOf(m map[string]any) map[string]any { return m["backup"].(map[string]any) }

func (e *e2e) setUnit(unit, state string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.sysDir, unit+".state"), []byte(state+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) dataDir() string { return filepath.Join(e.root, "data", "app") }

func (e *e2e) stateFile() string { return filepath.Join(e.root, "state", "app.stopped") }

func (e *e2e) lockFile() string { return filepath.Join(e.root, "state", "app.lock") }

// slowData makes the archive slow enough to catch a run mid-stream: a few
// MiB of incompressible data in tar.xz (the slowest format, pure Go).
func (e *e2e) slowData(mib int) {
	e.t.Helper()
	b := make([]byte, mib<<20)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(e.dataDir(), "slow.bin"), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.editConfig(func(m map[string]any) { backupOf(m)["format"] = "tar.xz" })
}

var (
	tempRE  = regexp.MustCompile(`^\.app-\d{8}T\d{6}Z\.tar\.\w+(\.sha256)?\.tmp-[0-9a-f]{8}$`)
	finalRE = regexp.MustCompile(`^app-\d{8}T\d{6}Z\.tar\.\w+$`)
)

// scanDests returns the temp files and the final-named archives in every
// destination.
func (e *e2e) scanDests() (temps, finals []string) {
	for _, d := range e.dests {
		entries, _ := os.ReadDir(d)
		for _, en := range entries {
			switch {
			case tempRE.MatchString(en.Name()):
				temps = append(temps, filepath.Join(d, en.Name()))
			case finalRE.MatchString(en.Name()):
				finals = append(finals, filepath.Join(d, en.Name()))
			}
		}
	}
	return temps, finals
}

// startWorker starts the binary and returns it with its stderr.
func (e *e2e) startWorker(prefix []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	argv := append(slices.Clone(prefix), e.binPath)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = e.env
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	// A test that fails early must not leave a (possibly SIGSTOPped)
	// worker behind; whoever called Wait reaps it.
	e.t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, &errb
}

// waitForTempInEveryDest polls (every millisecond) until every destination
// holds a temp file of the run. A final-named archive appearing first fails
// the test: the run must still be streaming.
func (e *e2e) waitForTempInEveryDest(cmd *exec.Cmd, exited <-chan struct{}) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		temps, finals := e.scanDests()
		if len(finals) > 0 {
			e.t.Fatalf("final archive appeared before the kill: %v", finals)
		}
		dirs := map[string]bool{}
		for _, p := range temps {
			dirs[filepath.Dir(p)] = true
		}
		if len(dirs) == len(e.dests) {
			return
		}
		select {
		case <-exited:
			e.t.Fatalf("the worker exited before a temp file appeared in every destination")
		case <-time.After(time.Millisecond):
		}
	}
	e.t.Fatal("no temp file appeared")
}

// TestSIGKILLDuringArchive kills the real binary with SIGKILL while it
// streams the archive (units stopped, temp files half written), then runs
// what the unit's ExecStopPost runs (`recover`) and a new `run`.
func TestSIGKILLDuringArchive(t *testing.T) {
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	e.slowData(4)

	cmd, stderr := e.startWorker(nil, "run", "--config", e.config)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.waitForTempInEveryDest(cmd, exited)
	// Freeze it where it is, so what we check is what SIGKILL interrupts.
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	checkKilledState := func(when string) {
		t.Helper()
		// Units are started again as soon as the stream is complete, so an
		// inactive unit proves the kill lands mid-archive.
		if s := e.unitState("app.service"); s != "inactive" {
			t.Fatalf("%s: unit %q, want inactive (the kill must land mid-archive)", when, s)
		}
		b, err := os.ReadFile(e.stateFile())
		if err != nil || !strings.Contains(string(b), `"app.service"`) {
			t.Errorf("%s: state file %q, %v; want it to list app.service", when, b, err)
		}
		temps, finals := e.scanDests()
		if len(finals) != 0 {
			t.Errorf("%s: final-named files exist: %v", when, finals)
		}
		if len(temps) < len(e.dests) {
			t.Errorf("%s: temp files %v, want one per destination", when, temps)
		}
		for _, p := range temps {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: %s has mode %v mid-stream, want 0600", when, p, fi.Mode().Perm())
			}
		}
	}
	checkKilledState("frozen")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("worker ended with %v, want killed by SIGKILL", cmd.ProcessState)
	}
	t.Logf("killed run's output:\n%s", stderr.String())
	if strings.Contains(stderr.String(), "backup finished") {
		t.Error("the killed run got to its summary; the kill came too late")
	}
	checkKilledState("after SIGKILL")
	staleTemps, _ := e.scanDests()

	// ExecStopPost: recover starts the unit from the state file.
	code, _, rerr := e.worker("recover", "--config", e.config)
	if code != 0 {
		t.Fatalf("recover: exit %d, want 0", code)
	}
	if !strings.Contains(rerr, "starting units left stopped by an interrupted backup") || !strings.Contains(rerr, `msg=recovered`) {
		t.Errorf("recover's log does not say what it started:\n%s", rerr)
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("after recover: unit %q, want active", s)
	}
	if _, err := os.Lstat(e.stateFile()); !os.IsNotExist(err) {
		t.Errorf("after recover: state file still there (%v)", err)
	}
	if temps, finals := e.scanDests(); len(finals) != 0 || !slices.Equal(temps, staleTemps) {
		t.Errorf("recover touched the destinations: temps %v finals %v", temps, finals)
	}

	// The next run succeeds and removes the killed run's temp files.
	code, _, rerr = e.worker("run", "--config", e.config)
	if code != 0 {
		t.Fatalf("run after recover: exit %d, want 0", code)
	}
	if n := strings.Count(rerr, "removed temp file left by an interrupted run"); n != len(staleTemps) {
		t.Errorf("%d stale temp files reported removed, want %d", n, len(staleTemps))
	}
	if !strings.Contains(rerr, "result=success") {
		t.Error("summary does not say success")
	}
	temps, finals := e.scanDests()
	if len(temps) != 0 {
		t.Errorf("temp files left: %v", temps)
	}
	if len(finals) != len(e.dests) {
		t.Errorf("archives %v, want one per destination", finals)
	}
	for _, f := range finals {
		if _, err := os.Stat(f + ".sha256"); err != nil {
			t.Errorf("%s: checksum missing: %v", f, err)
		}
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("after the new run: unit %q, want active", s)
	}
	if code, out, _ := e.worker("verify", "--config", e.config); code != 0 || strings.Count(out, "OK ") != len(e.dests) {
		t.Errorf("verify after the new run: exit %d\n%s", code, out)
	}
}

// makeTraversable lets other users reach p: o+x on every directory from p
// up to (not including) /tmp's parent; t.TempDir creates them 0700.
func makeTraversable(t *testing.T, p string) {
	t.Helper()
	for d := p; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o005); err != nil {
				t.Fatal(err)
			}
		}
		if d == os.TempDir() {
			return
		}
	}
}

// TestUnreadableFileAsNobody runs the worker as the unprivileged user
// nobody against data holding a root-only file: the run fails with the
// file's name, writes no archive and leaves no temp file, and the unit it
// stopped is running again.
func TestUnreadableFileAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a root-owned file and switch to nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	group, err := user.LookupGroupId(nobody.Gid)
	if err != nil {
		t.Skipf("nobody's group: %v", err)
	}

	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	secret := filepath.Join(e.dataDir(), "sub", "secret.db")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Everything else is readable by nobody (big.bin was written 0600).
	os.Chmod(filepath.Join(e.dataDir(), "sub", "big.bin"), 0o644)
	stateDir := filepath.Join(e.root, "state")
	// The signing key's directory is the (unprivileged) worker's own.
	for _, d := range append([]string{stateDir, filepath.Join(e.root, "keys")}, e.dests...) {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	// The stand-in systemctl runs as nobody too and keeps its state here.
	filepath.WalkDir(e.sysDir, func(p string, _ fs.DirEntry, _ error) error { return os.Chown(p, uid, gid) })
	for _, p := range []string{e.binPath, e.config, e.dataDir(), filepath.Join(e.root, "bin", "systemctl"), e.sysDir, stateDir} {
		makeTraversable(t, p)
	}
	e.editConfig(func(m map[string]any) { m["user"], m["group"] = nobody.Username, group.Name })

	cmd, out := e.startWorker([]string{setpriv, "--reuid=" + nobody.Uid, "--regid=" + nobody.Gid, "--clear-groups"},
		"run", "--config", e.config)
	err = cmd.Wait()
	t.Logf("output:\n%s", out.String())
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d (%v), want 1", code, err)
	}
	log := out.String()
	if !strings.Contains(log, secret+": permission denied") {
		t.Errorf("the error does not name %s with permission denied", secret)
	}
	if !strings.Contains(log, "result=failed") {
		t.Error("summary does not say failed")
	}
	// The stand-in recorded that the worker, as nobody, stopped and
	// started the unit.
	calls, _ := os.ReadFile(filepath.Join(e.sysDir, "calls.log"))
	if !strings.Contains(string(calls), "stop app.service\n") || !strings.Contains(string(calls), "start app.service\n") {
		t.Errorf("systemctl calls:\n%s", calls)
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("unit %q after the run, want active", s)
	}
	for _, d := range e.dests {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s is not empty: %v", d, entries)
		}
	}
	if _, err := os.Lstat(e.stateFile()); !os.IsNotExist(err) {
		t.Errorf("state file left (%v)", err)
	}
}

// TestManySmallFilesBoundedMemory archives 200,000 small files in 1,000
// directories with the real binary and bounds its peak RSS. It is a memory
// bound, not a time limit: the time is only logged.
func TestManySmallFilesBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 200,000 files; skipped with -short")
	}
	const (
		dirs      = 1000
		perDir    = 200
		rssLimit  = 256 << 20
		fileBytes = 64
	)
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	// On tmpfs when possible: creating and removing 200,000 files on a
	// busy disk takes minutes and measures the disk, not the worker.
	many := filepath.Join(e.dataDir(), "many")
	if err := os.MkdirAll(many, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1g,nr_inodes=400k", "tmpfs", many).CombinedOutput(); err != nil {
		t.Logf("no tmpfs (%v %s); using the temp dir", err, bytes.TrimSpace(out))
	} else {
		t.Cleanup(func() {
			if out, err := exec.Command("umount", many).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", many, err, out)
			}
		})
	}
	start := time.Now()
	content := bytes.Repeat([]byte("x"), fileBytes)
	for i := 0; i < dirs; i++ {
		d := filepath.Join(many, fmt.Sprintf("d%04d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < perDir; j++ {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", j)), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("created %d files in %v", dirs*perDir, time.Since(start).Round(time.Millisecond))

	cmd, out := e.startWorker(nil, "run", "--config", e.config)
	start = time.Now()
	err := cmd.Wait()
	elapsed := time.Since(start)
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d (%v)\n%s", code, err, out.String())
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024 // KiB on Linux
	t.Logf("200,000 files: run took %v, peak RSS %.1f MiB", elapsed.Round(time.Millisecond), float64(rss)/(1<<20))
	if rss > rssLimit {
		t.Errorf("peak RSS %d MiB, want below %d MiB", rss>>20, rssLimit>>20)
	}
	if !strings.Contains(out.String(), "result=success") {
		t.Errorf("summary does not say success:\n%s", out.String())
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("unit %q after the run, want active", s)
	}
	temps, finals := e.scanDests()
	if len(temps) != 0 || len(finals) != len(e.dests) {
		t.Fatalf("temps %v, archives %v; want none and one per destination", temps, finals)
	}
	// Every file is in the archive.
	st, err := archive.VerifyFile(context.Background(), finals[0], "tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	if st.Files < dirs*perDir {
		t.Errorf("archive holds %d files, want at least %d", st.Files, dirs*perDir)
	}
}

// TestFileModesDuringRun watches the destinations and the state directory
// while a slow run is in progress, with umask 000 so that only the modes the
// worker creates files with count: no archive byte is ever readable by
// others, and nothing is world-writable.
func TestFileModesDuringRun(t *testing.T) {
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	e.slowData(2)
	cmd, out := e.startWorker([]string{"sh", "-c", `umask 000 && exec "$0" "$@"`}, "run", "--config", e.config)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	type seen struct{ first, all []fs.FileMode }
	temps := map[string]*seen{}
	stateSeen := false
	observe := func() {
		for _, d := range e.dests {
			entries, _ := os.ReadDir(d)
			for _, en := range entries {
				if !tempRE.MatchString(en.Name()) {
					continue
				}
				p := filepath.Join(d, en.Name())
				fi, err := os.Lstat(p)
				if err != nil {
					continue // committed or removed meanwhile
				}
				s := temps[p]
				if s == nil {
					s = &seen{first: []fs.FileMode{fi.Mode().Perm()}}
					temps[p] = s
				}
				s.all = append(s.all, fi.Mode().Perm())
			}
		}
		for _, p := range []string{e.stateFile(), e.lockFile()} {
			if fi, err := os.Lstat(p); err == nil {
				stateSeen = stateSeen || p == e.stateFile()
				if fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
				}
			}
		}
	}
	for done := false; !done; {
		select {
		case <-exited:
			done = true
		case <-time.After(time.Millisecond):
		}
		observe()
	}
	t.Logf("output:\n%s", out.String())
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	// The archive's temp file lives for the whole (slow) stream, so the
	// poller must see it in every destination; the checksum's temp file
	// lives for microseconds and is checked whenever it is seen.
	for _, d := range e.dests {
		found := false
		for p := range temps {
			if filepath.Dir(p) == d && !strings.Contains(p, ".sha256.") {
				found = true
			}
		}
		if !found {
			t.Errorf("no archive temp file observed in %s (saw %v)", d, temps)
		}
	}
	if !stateSeen {
		t.Error("the state file was never observed during the run")
	}
	for p, s := range temps {
		// Created 0600; after fsync the protocol gives it its final owner
		// and mode 0640 while still under the temp name (then verifies it).
		if s.first[0] != 0o600 && !strings.Contains(p, ".sha256.") {
			t.Errorf("%s: first seen with mode %v, want 0600", p, s.first[0])
		}
		for _, m := range s.all {
			if m&0o027 != 0 {
				t.Errorf("%s: mode %v seen; others must never have access, the group never write", p, m)
			}
		}
	}
	_, finals := e.scanDests()
	if len(finals) != len(e.dests) {
		t.Fatalf("archives %v, want one per destination", finals)
	}
	for _, f := range finals {
		for _, p := range []string{f, f + ".sha256"} {
			if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("%s: %v %v, want mode 0640", p, fi, err)
			}
		}
	}
	for p, want := range map[string]fs.FileMode{
		e.dests[0]: 0o750, e.dests[1]: 0o750, // created by the worker
		filepath.Join(e.root, "state"): 0o700,
		e.lockFile():                   0o600,
	} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", p, fi, err, want)
		}
	}
	if _, err := os.Lstat(e.stateFile()); !os.IsNotExist(err) {
		t.Errorf("state file left (%v)", err)
	}
	if s := e.unitState("app.service"); s != "active" {
		t.Errorf("unit %q after the run, want active", s)
	}
}
