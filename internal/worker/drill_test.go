package worker

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
)

// withDrill turns backup.drill on with the scratch and manifest
// directories in the test's root (more adjusts the drill settings).
func (e *testEnv) withDrill(more func(b, d map[string]any)) func(m map[string]any) {
	return func(m map[string]any) {
		b := backupSettings(m)
		d := map[string]any{
			"scratchDirectory":  filepath.Join(e.root, "scratch"),
			"manifestDirectory": filepath.Join(e.root, "manifests"),
			"onCalendar":        []string{"Sun *-*-* 05:00:00"},
		}
		b["drill"] = d
		b["prometheusTextfile"] = filepath.Join(e.root, "metrics", "backup-app.prom")
		if err := os.MkdirAll(filepath.Join(e.root, "metrics"), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if more != nil {
			more(b, d)
		}
	}
}

// drill runs a drill of cfg and returns its exit code and output.
func (e *testEnv) drill(cfg *config.Config, dest string) (int, string) {
	e.t.Helper()
	var out bytes.Buffer
	d := &Drill{Config: cfg, Report: func(r DrillDest) { r.WriteText(&out) }, Destination: dest,
		Log: slog.New(slog.NewTextHandler(e.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	code := d.Run(context.Background())
	e.t.Logf("drill exit %d:\n%s", code, out.String())
	return code, out.String()
}

func (e *testEnv) lastDrill() *LastDrill {
	e.t.Helper()
	rec, err := readLastDrill(e.stateDir)
	if err != nil || rec == nil {
		e.t.Fatalf("last-drill.json: %v", err)
	}
	return rec
}

func (e *testEnv) assertScratchEmpty() {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.root, "scratch"))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(ents) != 0 {
		e.t.Errorf("scratch directory not cleaned up: %v", ents)
	}
}

// A backup with drills on writes the manifest of its archive; the drill
// restores the newest archive of each destination into the scratch
// directory, finds it identical, reports ok everywhere and leaves
// nothing in the scratch directory. Every way the archive is produced:
// direct, the tar capture (captureFirst) and zip.
func TestDrillAfterBackup(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format       string
		captureFirst bool
	}{{"tar.gz", false}, {"tar.zst", true}, {"zip", false}} {
		t.Run(c.format+map[bool]string{true: "-captureFirst"}[c.captureFirst], func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			cfg := e.config([]string{"app.service"}, e.withDrill(func(b, _ map[string]any) {
				b["format"] = c.format
				b["captureFirst"] = c.captureFirst
			}))
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("backup: exit %d", code)
			}
			before := e.calls()
			code, out := e.drill(cfg, "")
			if code != ExitOK {
				t.Fatalf("drill: exit %d\n%s\n%s", code, out, e.logBuf.String())
			}
			for _, d := range e.dests {
				if !strings.Contains(out, d+": ok: app-") || !strings.Contains(out, "identical to its manifest") {
					t.Errorf("output lacks %s ok:\n%s", d, out)
				}
			}
			if after := e.calls(); len(after) != len(before) {
				t.Errorf("the drill called systemctl: %q", after[len(before):])
			}
			e.assertScratchEmpty()
			var status bytes.Buffer
			ReadStatus(context.Background(), cfg, e.seams.systemd, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now()).WriteText(&status, time.Now())
			if !strings.Contains(status.String(), "  last drill ok at ") || !strings.Contains(status.String(), "    "+e.dests[1]+": ok\n") {
				t.Errorf("status:\n%s", status.String())
			}
			rec := e.lastDrill()
			if rec.Result != DrillOK || len(rec.Destinations) != 2 || rec.Destinations[0].Entries < 8 {
				t.Errorf("last-drill.json: %+v", rec)
			}
			prom, _ := os.ReadFile(filepath.Join(e.root, "metrics", "backup-app-drill.prom"))
			for _, want := range []string{`backupgen_drill_success{service="app"} 1`,
				`backupgen_drill_destination_success{service="app",destination="` + e.dests[1] + `",result="ok"} 1`,
				`backupgen_drill_last_success_timestamp_seconds{service="app"}`} {
				if !strings.Contains(string(prom), want) {
					t.Errorf("drill metrics lack %s:\n%s", want, prom)
				}
			}
		})
	}
}

// rewriteManifest applies edit to the (only) manifest's text.
func (e *testEnv) rewriteManifest(edit func(string) string) {
	e.t.Helper()
	files, _ := filepath.Glob(filepath.Join(e.root, "manifests", "*"+manifestSuffix))
	if len(files) != 1 {
		e.t.Fatalf("manifests: %q", files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		e.t.Fatal(err)
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		e.t.Fatal(err)
	}
	text, err := io.ReadAll(gz)
	f.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write([]byte(edit(string(text))))
	w.Close()
	if err := os.WriteFile(files[0], buf.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// A restore that differs from the manifest fails the drill (exit 1),
// names the first differences, and is sent to the notification URLs (a
// local HTTP server) — not to the backup's ping URL.
func TestDrillDifferenceFailsAndNotifies(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	h := newHookServer(t, e, false)
	notifyFiles := e.notifyFiles(h)
	cfg := e.config(nil, func(m map[string]any) {
		notifyFiles(m)
		e.withDrill(nil)(m)
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	pings := len(h.got())
	// What the backup read of deep.txt ("deep\n") is not what the
	// manifest now says.
	e.rewriteManifest(func(s string) string {
		sum := sha256.Sum256([]byte("deep\n"))
		other := sha256.Sum256([]byte("other\n"))
		return strings.Replace(s, hexOf(sum[:]), hexOf(other[:]), 1)
	})
	code, out := e.drill(cfg, "")
	if code != ExitFailed {
		t.Fatalf("drill: exit %d, want 1", code)
	}
	if !strings.Contains(out, "config/nested/deep.txt: content differs") || !strings.Contains(out, "differs from the manifest in 1 place(s)") {
		t.Errorf("output:\n%s", out)
	}
	e.assertScratchEmpty()
	var msg *hookReq
	for _, q := range h.got()[pings:] {
		if strings.HasPrefix(q.path, "/ping/") {
			t.Errorf("the drill pinged the backup's check: %s", q.path)
		}
		if q.path == "/hook/T0KEN" {
			msg = &q
		}
	}
	if msg == nil {
		t.Fatalf("no message; requests %+v", h.got())
	}
	for _, want := range []string{"restore drill app", "result: failed", "deep.txt: content differs", e.dests[0] + ": failed (app-"} {
		if !strings.Contains(msg.body, want) {
			t.Errorf("message lacks %q:\n%s", want, msg.body)
		}
	}
	prom, _ := os.ReadFile(filepath.Join(e.root, "metrics", "backup-app-drill.prom"))
	if !strings.Contains(string(prom), `backupgen_drill_success{service="app"} 0`) || strings.Contains(string(prom), "last_success") {
		t.Errorf("drill metrics:\n%s", prom)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// An archive rewritten in one destination, with a .sha256 to match (as
// the service user, who can write there, could do), is refused by its
// signature: that destination fails, the other passes: exit 3.
func TestDrillRewrittenArchiveIsPartial(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfg := e.config(nil, e.withDrill(nil))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	name := archivesIn(t, e.dests[1], "tar.gz")[0]
	other := newTestEnv(t)
	otherCfg := other.config(nil, nil)
	if code := other.run(otherCfg); code != ExitOK {
		t.Fatal("other backup failed")
	}
	forged, err := os.ReadFile(filepath.Join(other.dests[0], archivesIn(t, other.dests[0], "tar.gz")[0]))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(forged)
	if err := os.WriteFile(filepath.Join(e.dests[1], name), forged, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dests[1], name+".sha256"), []byte(checksumLine(sum[:], name)), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out := e.drill(cfg, "")
	if code != ExitPartial {
		t.Fatalf("drill: exit %d, want 3", code)
	}
	if !strings.Contains(out, e.dests[0]+": ok") || !strings.Contains(out, e.dests[1]+": failed: not trusted") {
		t.Errorf("output:\n%s", out)
	}
	if rec := e.lastDrill(); rec.Result != DrillPartial || rec.ExitCode != ExitPartial {
		t.Errorf("last-drill.json: %+v", rec)
	}
	// --destination drills only the good one.
	if code, _ := e.drill(cfg, e.dests[0]); code != ExitOK {
		t.Errorf("drill of %s alone: exit %d", e.dests[0], code)
	}
}

// An archive written before drills were on has no manifest: the drill
// fails and says why; so does a destination without any archive.
func TestDrillWithoutManifest(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	if code := e.run(e.config(nil, nil)); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	os.RemoveAll(e.dests[1])
	os.MkdirAll(e.dests[1], 0o750)
	code, out := e.drill(e.config(nil, e.withDrill(nil)), "")
	if code != ExitFailed {
		t.Fatalf("drill: exit %d, want 1", code)
	}
	if !strings.Contains(out, e.dests[0]+": failed: no manifest of app-") || !strings.Contains(out, e.dests[1]+": failed: no archive to restore") {
		t.Errorf("output:\n%s", out)
	}
}

// Encrypted archives: with the identity (backup.drill.identityFile) the
// drill decrypts, restores and compares; without it, it checks only the
// signature and the ciphertext's SHA-256, and says so: exit 5, never 0.
func TestDrillEncrypted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	path := e.encryptedConfig(k, nil)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	withDrill := func(identity string) *config.Config {
		c := *cfg
		c.Backup.Drill = &config.Drill{ScratchDirectory: filepath.Join(e.root, "scratch"),
			ManifestDirectory: filepath.Join(e.root, "manifests"), IdentityFile: identity}
		return &c
	}
	if code := e.run(withDrill("")); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	code, out := e.drill(withDrill(""), "")
	if code != ExitWarning || !strings.Contains(out, ": checksum-only: encrypted, and no backup.drill.identityFile") || !strings.Contains(out, "NOT restored") {
		t.Fatalf("drill without identity: exit %d\n%s", code, out)
	}
	if code, out := e.drill(withDrill(k.x25519File), ""); code != ExitOK {
		t.Fatalf("drill with identity: exit %d\n%s", code, out)
	}
	code, out = e.drill(withDrill(k.wrongFile), "")
	if code != ExitFailed || !strings.Contains(out, "not one of the archive's recipients") {
		t.Fatalf("drill with a wrong identity: exit %d\n%s", code, out)
	}
	e.assertScratchEmpty()
}

// A drill takes the service's lock: while a backup holds it, the drill
// waits for it and then runs; if it is held beyond LockWait, the drill
// gives up with exit 4, restoring nothing.
func TestDrillWaitsForTheLock(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfg := e.config(nil, e.withDrill(nil))
	cfg.Backup.LockTimeoutSec = 0
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	lock, err := acquireLock(context.Background(), lockFilePath(e.stateDir, "app"), "app", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		// Released once the drill says it waits.
		for !strings.Contains(e.logBuf.String(), "the drill waits for it") {
			time.Sleep(10 * time.Millisecond)
		}
		lock.Release()
		close(released)
	}()
	if code, _ := e.drill(cfg, ""); code != ExitOK {
		t.Fatalf("drill after the backup ended: exit %d", code)
	}
	<-released
	lock, err = acquireLock(context.Background(), lockFilePath(e.stateDir, "app"), "app", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	os.Remove(filepath.Join(e.stateDir, lastDrillFile))
	var out bytes.Buffer
	d := &Drill{Config: cfg, Report: func(r DrillDest) { r.WriteText(&out) }, LockWait: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(e.logBuf, nil))}
	if code := d.Run(context.Background()); code != ExitLockHeld {
		t.Fatalf("drill: exit %d, want 4", code)
	}
	if _, err := os.Stat(filepath.Join(e.root, "scratch")); err == nil {
		ents, _ := os.ReadDir(filepath.Join(e.root, "scratch"))
		if len(ents) > 0 {
			t.Errorf("the drill restored while the lock was held: %v", ents)
		}
	}
}

// The manifests of the newest runs are kept, older ones removed; a run
// that fails leaves no manifest (nor a temp file).
func TestDrillManifestsBounded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfg := e.config(nil, e.withDrill(nil))
	base := time.Now()
	for i := range keepManifests + 2 {
		r := e.runner(cfg)
		r.Now = func() time.Time { return base.Add(time.Duration(i) * time.Hour) }
		if code := r.Run(context.Background()); code != ExitOK {
			t.Fatalf("run %d: exit %d\n%s", i, code, e.logBuf.String())
		}
	}
	ents, _ := os.ReadDir(filepath.Join(e.root, "manifests"))
	if len(ents) != keepManifests {
		t.Fatalf("%d manifests kept, want %d", len(ents), keepManifests)
	}
	names := archivesIn(t, e.dests[0], "tar.gz")
	newest := names[len(names)-1]
	if _, err := os.Stat(filepath.Join(e.root, "manifests", newest+manifestSuffix)); err != nil {
		t.Errorf("the newest archive's manifest is missing: %v", err)
	}
}

// The reflink capture (captureFirst on XFS: the archive is written from
// the clone with WriteTree) writes the manifest too, under the data
// paths' names, and the drill passes.
func TestDrillAfterReflinkCapture(t *testing.T) {
	t.Parallel()
	e, _ := reflinkEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		captureFirst("tar.gz")(m)
		e.withDrill(nil)(m)
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	if method, _ := capturedWith(t, e.logBuf.String()); method != "reflink" {
		t.Fatalf("captured with %s, want reflink", method)
	}
	if code, out := e.drill(cfg, ""); code != ExitOK || strings.Count(out, ": ok: app-") != 2 {
		t.Fatalf("drill: exit %d\n%s", code, out)
	}
}
