package worker

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backupgen/backupgen/archive"
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
			noReflink(t)
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
