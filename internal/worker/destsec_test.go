package worker

import (
	"bytes"
	"context"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// swapTemps plays the destination's owner: in a tight loop, it moves every
// temp archive of app in dir aside, puts a symlink to one of targets under
// its name, and moves the original back (so runs can still commit). It
// returns a stop function that reports how many swaps were made.
func swapTemps(t *testing.T, dir string, re *regexp.Regexp, targets []string) (stop func() int) {
	t.Helper()
	var done atomic.Bool
	var swaps int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !done.Load(); i++ {
			d, err := os.Open(dir)
			if err != nil {
				continue
			}
			names, _ := d.Readdirnames(-1)
			d.Close()
			for _, n := range names {
				if !re.MatchString(n) {
					continue
				}
				p := filepath.Join(dir, n)
				if os.Rename(p, p+".saved") != nil {
					continue
				}
				link := p + ".link"
				os.Remove(link)
				if os.Symlink(targets[i%len(targets)], link) == nil && os.Rename(link, p) == nil {
					swaps++
				}
				time.Sleep(50 * time.Microsecond)
				os.Rename(p+".saved", p)
			}
		}
	}()
	return func() int {
		done.Store(true)
		wg.Wait()
		return swaps
	}
}

// TestTempSwapRace (issue 10 item 3): two destinations on one file system,
// so the second is copied from the first's temp file, which its owner keeps
// swapping for a symlink to a root-only secret or to another root-only
// archive, during many runs. No committed archive may hold the secret or be
// the other archive: each must be the archive of the data, trusted.
// (The worker used to re-open the temp file by name for the copy and for
// verification, and leaked the secret or committed the other archive.)
// captureFirst: the same with the tar capture, which was re-opened by name
// to be compressed.
func TestTempSwapRace(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "tar", "tar")
	for _, tc := range []struct {
		name, temp   string
		captureFirst bool
		runs         int
	}{
		{"archive temp", `^\.app-\d{8}T\d{6}Z\.tar\.gz\.tmp-[0-9a-f]{8}$`, false, 25},
		{"tar capture", `^\.app-\d{8}T\d{6}Z\.capture\.tmp-[0-9a-f]{8}$`, true, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			// No reflink copy: the tar capture is the one under test.
			noReflink(&e.seams)
			secret, others := e.rootOnlyTargets()
			// Enough data that the stream, copy and verification take a while.
			e.writeFile(filepath.Join(e.dataPaths[0], "big.bin"), randomBytes(t, 2<<20), 0o600)
			cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["captureFirst"] = tc.captureFirst })

			stop := swapTemps(t, e.dests[0], regexp.MustCompile(tc.temp), append([]string{secret}, others...))
			base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			deadline := time.Now().Add(25 * time.Second)
			runs := 0
			for i := 0; i < tc.runs && time.Now().Before(deadline); i++ {
				r := e.runner(cfg)
				r.Now = func() time.Time { return base.Add(time.Duration(i) * time.Hour) }
				r.Run(context.Background())
				runs++
			}
			swaps := stop()
			if swaps < runs {
				t.Fatalf("only %d swaps in %d runs: the race was not exercised", swaps, runs)
			}
			committed := e.checkCommitted(t)
			t.Logf("%d runs, %d swaps, %d archives committed", runs, swaps, committed)
			if committed == 0 {
				t.Error("no run committed anything")
			}
		})
	}
}

const secretMarker = "TOPSECRET-do-not-archive"

// rootOnlyTargets writes a root-only secret file, and another root-only
// archive (tar.gz) and capture (tar) of a tree holding the secret.
func (e *testEnv) rootOnlyTargets() (secret string, others []string) {
	t := e.t
	secret = filepath.Join(e.root, "secret")
	e.writeFile(secret, []byte(secretMarker+"\n"), 0o600)
	otherDir := filepath.Join(e.root, "other", "x")
	e.writeFile(filepath.Join(otherDir, "other.txt"), []byte(secretMarker+"\n"), 0o600)
	for _, tc := range []struct {
		name  string
		write archiveWriter
	}{{"other.tar.gz", archive.Write}, {"other.tar", archive.Capture}} {
		p := filepath.Join(e.root, tc.name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.write(context.Background(), f, []string{otherDir}, archive.Options{Format: "tar.gz"}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		others = append(others, p)
	}
	return secret, others
}

// checkCommitted checks that every committed archive in the destinations
// is a trusted tar.gz of the data without the secret, and counts them.
func (e *testEnv) checkCommitted(t *testing.T) int {
	committed := 0
	for _, d := range e.dests {
		for _, n := range archivesIn(t, d, "tar.gz") {
			committed++
			p := filepath.Join(d, n)
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte(secretMarker)) {
				t.Errorf("%s holds the secret", p)
			}
			out := t.TempDir()
			if msg, err := exec.Command("tar", "-xzf", p, "-C", out).CombinedOutput(); err != nil {
				t.Errorf("%s is not a tar.gz: %v\n%s", p, err, msg)
				continue
			}
			if msg, _ := exec.Command("grep", "-r", "-l", secretMarker, out).CombinedOutput(); len(msg) > 0 {
				t.Errorf("%s holds the secret: %s", p, msg)
			}
			if _, err := os.Stat(filepath.Join(out, archive.EntryName(e.dataPaths[0]), "big.bin")); err != nil {
				t.Errorf("%s is not the archive of the data: %v", p, err)
			}
			if err := checkTrust(context.Background(), e.key(), d, n); err != nil {
				t.Errorf("committed archive not trusted: %v", err)
			}
		}
	}
	if strings.Contains(e.logBuf.String(), secretMarker) {
		t.Error("the log shows the secret")
	}
	return committed
}

// asNobody runs script with sh as the unprivileged user nobody (setpriv),
// standing in for the service user.
func asNobody(t *testing.T, script string) {
	t.Helper()
	setpriv := testtool.Require(t, "setpriv", "util-linux")
	nobody := lookupNobody(t)
	cmd := exec.Command(setpriv, "--reuid="+nobody.Uid, "--regid="+nobody.Gid, "--clear-groups", "sh", "-ec", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

func lookupNobody(t *testing.T) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to nobody")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	return u
}

// giveToNobody makes dir the service user's (nobody's), as the generated
// tmpfiles rules make a destination.
func giveToNobody(t *testing.T, dir string) {
	t.Helper()
	u := lookupNobody(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	makeTraversableUpTo(t, dir)
}

// makeTraversableUpTo lets others traverse every parent of p (t.TempDir
// makes 0700 directories).
func makeTraversableUpTo(t *testing.T, p string) {
	for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o011 == 0o011 {
			continue // already traversable: never touch /tmp (1777)
		}
		// Keep the sticky, setuid and setgid bits: os.Chmod with Perm()
		// alone once turned /tmp into 0777.
		keep := fi.Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)
		os.Chmod(d, keep|0o011)
	}
}

// TestPlantedArchiveUntrusted (issue 10 item 4): the service user plants a
// newer archive with a valid .sha256 (and a .sig copied from a real
// archive) in a destination. It is untrusted: it takes no retention slot
// (the real archive it would have pushed out stays), it is not pruned,
// list and verify report it, and restore refuses it unless
// --trust-unsigned. A real archive whose signature was altered is refused
// the same way. (The worker used to trust any archive with a matching
// .sha256.)
func TestPlantedArchiveUntrusted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.dests = e.dests[:1]
	dest := e.dests[0]
	giveToNobody(t, dest)
	cfgPath := e.configFile(nil, func(m map[string]any) { backupSettings(m)["retentionSnapshots"] = 2 })
	cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["retentionSnapshots"] = 2 })
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	runAt := func(h int) {
		r := e.runner(cfg)
		r.Now = func() time.Time { return t0.Add(time.Duration(h) * time.Hour) }
		if code := r.Run(context.Background()); code != ExitOK {
			t.Fatalf("run at +%dh: exit %d\n%s", h, code, e.logBuf.String())
		}
	}
	runAt(0)
	runAt(1)
	real0, real1 := archivesIn(t, dest, "tar.gz")[0], archivesIn(t, dest, "tar.gz")[1]

	// The user's forged archive: the data with a setuid "shell" in it.
	e.writeFile(filepath.Join(e.dataPaths[0], "evil"), []byte("#!/bin/sh\n"), 0o4755)
	forgedSrc := filepath.Join(e.root, "forged.tar.gz")
	f, _ := os.OpenFile(forgedSrc, os.O_WRONLY|os.O_CREATE, 0o644)
	if _, err := archive.Write(context.Background(), f, e.dataPaths, archive.Options{Format: "tar.gz"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Remove(filepath.Join(e.dataPaths[0], "evil"))
	makeTraversableUpTo(t, forgedSrc)
	os.Chmod(filepath.Join(dest, real1+".sig"), 0o644)
	planted := "app-20300101T020000Z.tar.gz"
	asNobody(t, fmt.Sprintf("cd %s && cp %s %s && sha256sum %s > %s.sha256 && cp %s.sig %s.sig",
		dest, forgedSrc, planted, planted, planted, real1, planted))

	runAt(3)
	files := destFiles(t, dest)
	for _, want := range []string{real1, planted, planted + ".sha256"} {
		if !slices.Contains(files, want) {
			t.Errorf("%s was removed; destination holds %v", want, files)
		}
	}
	if slices.Contains(files, real0) {
		t.Errorf("%s kept: retentionSnapshots=2 keeps the run's own archive and %s", real0, real1)
	}
	if !strings.Contains(e.logBuf.String(), "archive is untrusted") || !strings.Contains(e.logBuf.String(), "archive="+planted) {
		t.Error("no warning naming the planted archive")
	}

	if code, out, errOut := e.listCmd(cfgPath, ListOptions{Verify: true}); !regexp.MustCompile(planted + `\s.*\sok\s+bad \(untrusted\)`).MatchString(errOut + out) {
		t.Errorf("list --verify (exit %d) does not show the planted archive as untrusted:\n%s", code, out)
	}
	if code, out := joined(e.verifyCmd(cfgPath, VerifyOptions{Archives: []string{filepath.Join(dest, planted)}})); code == ExitOK || !strings.Contains(out, "UNTRUSTED") {
		t.Errorf("verify of the planted archive: exit %d\n%s", code, out)
	}
	target := filepath.Join(e.root, "restored")
	if code, out := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: filepath.Join(dest, planted), Target: target})); code == ExitOK || !strings.Contains(out, "--trust-unsigned") {
		t.Errorf("restore of the planted archive: exit %d\n%s", code, out)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("restore wrote %d entries into the target", len(entries))
	}
	if code, out := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: filepath.Join(dest, planted), Target: target, TrustUnsigned: true})); code != ExitOK {
		t.Errorf("restore --trust-unsigned: exit %d\n%s", code, out)
	}

	// A real archive with an altered signature.
	sigPath := filepath.Join(dest, real1+".sig")
	sig, _ := os.ReadFile(sigPath)
	sig[len(sig)-2] ^= 0x01
	os.WriteFile(sigPath, sig, 0o640)
	target2 := filepath.Join(e.root, "restored2")
	if code, out := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: filepath.Join(dest, real1), Target: target2})); code == ExitOK || !strings.Contains(out, "not trusted") {
		t.Errorf("restore with a tampered signature: exit %d\n%s", code, out)
	}
	if code, out := joined(e.verifyCmd(cfgPath, VerifyOptions{Archives: []string{filepath.Join(dest, real1)}})); code == ExitOK || !strings.Contains(out, "UNTRUSTED") {
		t.Errorf("verify with a tampered signature: exit %d\n%s", code, out)
	}
}

// TestAdoptUnsignedArchive: an archive written before signing existed
// (no .sig) is untrusted until `verify --adopt` signs it; adopt refuses an
// archive that does not match its .sha256.
func TestAdoptUnsignedArchive(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.dests = e.dests[:1]
	dest := e.dests[0]
	cfgPath := e.configFile(nil, nil)
	if code := e.run(e.config(nil, nil)); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	name := archivesIn(t, dest, "tar.gz")[0]
	os.Remove(filepath.Join(dest, name+".sig"))
	if err := checkTrust(context.Background(), e.key(), dest, name); err == nil {
		t.Fatal("unsigned archive trusted")
	}
	e.writeFile(filepath.Join(dest, "app-20000101T000000Z.tar.gz"), []byte("damaged"), 0o640)
	e.writeFile(filepath.Join(dest, "app-20000101T000000Z.tar.gz.sha256"), []byte(checksumLine(make([]byte, 32), "app-20000101T000000Z.tar.gz")), 0o640)
	code, out := joined(e.verifyCmd(cfgPath, VerifyOptions{All: true, Adopt: true}))
	t.Log(out)
	if code == ExitOK || !strings.Contains(out, "adopted") || !strings.Contains(out, "FAILED "+filepath.Join(dest, "app-20000101T000000Z.tar.gz")) {
		t.Errorf("verify --adopt: exit %d", code)
	}
	if err := checkTrust(context.Background(), e.key(), dest, name); err != nil {
		t.Errorf("adopted archive: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, "app-20000101T000000Z.tar.gz.sig")); err == nil {
		t.Error("the damaged archive was signed")
	}
}

// TestShrinkGuard (issue 10 item 7): retentionSnapshots=2, three good runs,
// then the data paths are emptied (a disk that failed to mount) and three
// more runs follow: each commits its archive, skips pruning and exits 5
// with the reason in the summary and the metrics, and the good archives
// all survive. A much smaller archive is held back the same way unless
// minSizeRatio is 0. (The worker used to exit 0 and prune the real
// backups away.)
func TestShrinkGuard(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	metrics := filepath.Join(e.root, "metrics.prom")
	mutate := func(ratio any) func(m map[string]any) {
		return func(m map[string]any) {
			b := backupSettings(m)
			b["retentionSnapshots"] = 2
			b["prometheusTextfile"] = metrics
			if ratio != nil {
				b["minSizeRatio"] = ratio
			}
		}
	}
	cfg := e.config(nil, mutate(nil))
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	hour := 0
	runAt := func(cfg *config.Config, want int) {
		t.Helper()
		e.logBuf.b.Reset()
		r := e.runner(cfg)
		h := hour
		hour++
		r.Now = func() time.Time { return t0.Add(time.Duration(h) * time.Hour) }
		if code := r.Run(context.Background()); code != want {
			t.Fatalf("run %d: exit %d, want %d\n%s", h, code, want, e.logBuf.String())
		}
	}
	for i := 0; i < 3; i++ {
		runAt(cfg, ExitOK)
	}
	good := archivesIn(t, e.dests[0], "tar.gz")
	if len(good) != 2 {
		t.Fatalf("after three good runs: %v", good)
	}
	for _, dp := range e.dataPaths {
		entries, _ := os.ReadDir(dp)
		for _, en := range entries {
			os.RemoveAll(filepath.Join(dp, en.Name()))
		}
	}
	for i := 0; i < 3; i++ {
		runAt(cfg, ExitWarning)
		log := e.logBuf.String()
		if !strings.Contains(log, `result=warning`) || !strings.Contains(log, "pruning was skipped") || !strings.Contains(log, "hold no files at all") {
			t.Errorf("summary does not give the reason:\n%s", log)
		}
		m, _ := os.ReadFile(metrics)
		if !strings.Contains(string(m), `reason="empty"} 1`) || !strings.Contains(string(m), "backupgen_last_run_warnings{service=\"app\"} 1") {
			t.Errorf("metrics do not show the guard:\n%s", m)
		}
	}
	for _, d := range e.dests {
		have := archivesIn(t, d, "tar.gz")
		for _, g := range good {
			if !slices.Contains(have, g) {
				t.Errorf("%s: good archive %s was pruned; have %v", d, g, have)
			}
		}
		if len(have) != 5 {
			t.Errorf("%s: %d archives, want 2 good + 3 empty", d, len(have))
		}
	}

	// Data back, but a small fraction of it: shrunk.
	e.writeFile(filepath.Join(e.dataPaths[0], "small.txt"), []byte("small\n"), 0o644)
	e.writeFile(filepath.Join(e.dataPaths[1], "small.txt"), []byte("small\n"), 0o644)
	// The newest trusted archive before it is the last empty one: put a
	// full one back in front.
	e.writeFile(filepath.Join(e.dataPaths[0], "db.sqlite"), randomBytes(t, 300_000), 0o600)
	runAt(cfg, ExitOK)
	os.Remove(filepath.Join(e.dataPaths[0], "db.sqlite"))
	runAt(cfg, ExitWarning)
	if log := e.logBuf.String(); !strings.Contains(log, "smaller than 0.5 × the previous verified archive") {
		t.Errorf("no shrink reason:\n%s", log)
	}
	if m, _ := os.ReadFile(metrics); !strings.Contains(string(m), `reason="shrunk"} 1`) {
		t.Errorf("metrics do not show the shrink:\n%s", m)
	}
	// minSizeRatio 0 turns the size check off (never the empty check).
	runAt(e.config(nil, mutate(0)), ExitOK)
}

// TestRunCorruptNewestDoNotCount (issue 10 item 8): the two newest
// archives are bit-flipped; with retentionSnapshots=2 the run keeps the
// older good archive (the flipped ones take no slot) and the flipped ones
// as evidence. (Plan used to verify only until minKeep good archives were
// found, counted the flipped ones and pruned the good one.)
func TestRunCorruptNewestDoNotCount(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.dests = e.dests[:1]
	dest := e.dests[0]
	olderGood := "app-20240101T000000Z.tar.gz"
	flipped := []string{"app-20240102T000000Z.tar.gz", "app-20240103T000000Z.tar.gz"}
	for _, n := range append([]string{olderGood}, flipped...) {
		e.writeSummedArchive(dest, n)
	}
	for _, n := range flipped {
		p := filepath.Join(dest, n)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x01
		os.WriteFile(p, b, 0o640)
	}
	cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["retentionSnapshots"] = 2 })
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	have := archivesIn(t, dest, "tar.gz")
	for _, n := range append([]string{olderGood}, flipped...) {
		if !slices.Contains(have, n) {
			t.Errorf("%s removed; have %v", n, have)
		}
	}
}

// TestShrinkGuardOneEmptyDataPath: one data path of two is empty (its disk
// did not mount) while the other still has files: the run warns and does
// not prune.
func TestShrinkGuardOneEmptyDataPath(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.dests = e.dests[:1]
	cfg := e.config(nil, func(m map[string]any) {
		backupSettings(m)["retentionSnapshots"] = 1
		backupSettings(m)["minSizeRatio"] = 0
	})
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, want := range []int{ExitOK, ExitWarning} {
		if i == 1 {
			os.RemoveAll(e.dataPaths[1])
			os.Mkdir(e.dataPaths[1], 0o755)
		}
		r := e.runner(cfg)
		r.Now = func() time.Time { return t0.Add(time.Duration(i) * time.Hour) }
		if code := r.Run(context.Background()); code != want {
			t.Fatalf("run %d: exit %d, want %d\n%s", i, code, want, e.logBuf.String())
		}
	}
	if !strings.Contains(e.logBuf.String(), "data path "+e.dataPaths[1]+" is empty") {
		t.Error("no warning naming the empty data path")
	}
	if n := len(archivesIn(t, e.dests[0], "tar.gz")); n != 2 {
		t.Errorf("%d archives, want 2 (nothing pruned)", n)
	}
}
