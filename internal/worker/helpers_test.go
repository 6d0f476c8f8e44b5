package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
)

// testEnv is one test's world: data, destinations, state dir, and its own
// recording systemctl stand-in (seams.systemd; no PATH change, so tests
// with a testEnv can run in parallel).
type testEnv struct {
	t         *testing.T
	root      string
	sysDir    string // fake systemctl's state
	stateDir  string
	dataPaths []string
	dests     []string
	logBuf    *syncBuffer
	seams     seams // copied into every runner
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{t: t, root: root, logBuf: &syncBuffer{}}
	bin := filepath.Join(root, "bin")
	e.sysDir = filepath.Join(root, "systemd")
	e.stateDir = filepath.Join(root, "state")
	for _, d := range []string{bin, e.sysDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile(filepath.Join("testdata", "systemctl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	e.seams.systemd = Systemctl{Path: filepath.Join(bin, "systemctl"), Env: []string{"FAKE_SYSTEMCTL_DIR=" + e.sysDir}}
	e.seams.activePoll = 10 * time.Millisecond
	// Progress is logged (as under systemd), never drawn on a terminal.
	e.seams.progressTTY = func() bool { return false }

	// Two data paths: a directory tree and a second directory.
	d1 := filepath.Join(root, "data", "app")
	d2 := filepath.Join(root, "data", "app-extra")
	e.writeFile(filepath.Join(d1, "db.sqlite"), randomBytes(t, 300_000), 0o600)
	e.writeFile(filepath.Join(d1, "config", "app.conf"), []byte("listen = 8080\n"), 0o644)
	e.writeFile(filepath.Join(d1, "config", "nested", "deep.txt"), []byte("deep\n"), 0o640)
	if err := os.Symlink("config/app.conf", filepath.Join(d1, "current.conf")); err != nil {
		t.Fatal(err)
	}
	e.writeFile(filepath.Join(d2, "uploads", "a.bin"), randomBytes(t, 50_000), 0o644)
	e.dataPaths = []string{d1, d2}
	e.dests = []string{filepath.Join(root, "dest1"), filepath.Join(root, "dest2")}
	return e
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func (e *testEnv) writeFile(path string, data []byte, mode os.FileMode) {
	e.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		e.t.Fatal(err)
	}
}

// config returns a config for service "app"; mutate adjusts the raw map
// before it is written and loaded with config.Load (so defaults apply).
func (e *testEnv) config(units []string, mutate func(m map[string]any)) *config.Config {
	e.t.Helper()
	path := e.configFile(units, mutate)
	cfg, err := config.Load(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

func (e *testEnv) configFile(units []string, mutate func(m map[string]any)) string {
	e.t.Helper()
	if units == nil {
		units = []string{}
	}
	m := map[string]any{
		"name":        "app",
		"serviceName": units,
		"dataPaths":   e.dataPaths,
		"user":        testUser,
		"group":       testGroup,
		"backup": map[string]any{
			"paths":          e.dests,
			"format":         "tar.gz",
			"stateDirectory": e.stateDir,
			"lockTimeoutSec": 2,
			// Generous: the stand-in is a shell script, and with tests in
			// parallel on a loaded machine one call took over 2 s
			// (TestS3ServerHangsMidUpload). No test waits for these to
			// expire: a unit that fails to start is "failed" at once.
			"startTimeoutSec": 30,
			"stopTimeoutSec":  30,
			"signingKey":      e.keyPath(),
		},
	}
	if mutate != nil {
		mutate(m)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.root, "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func backupSettings(m map[string]any) map[string]any { return m["backup"].(map[string]any) }

// systemctlEnv adds KEY=VALUE to the stand-in's environment (of the
// runners and commands made after this call).
func (e *testEnv) systemctlEnv(key, value string) {
	sc := e.seams.systemd.(Systemctl)
	sc.Env = append(slices.Clip(sc.Env), key+"="+value)
	e.seams.systemd = sc
}

func (e *testEnv) runner(cfg *config.Config) *Runner {
	return &Runner{
		Config:     cfg,
		Log:        slog.New(slog.NewTextHandler(e.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HookOutput: e.logBuf,
		seams:      e.seams,
	}
}

func (e *testEnv) run(cfg *config.Config) int {
	e.t.Helper()
	code := e.runner(cfg).Run(context.Background())
	e.t.Logf("exit %d; log:\n%s", code, e.logBuf.String())
	return code
}

// runCaptureFault runs r with a cancellable context after arm has set up
// the fault (it may cancel, and sets *saw when the capture existed at the
// failure point), then checks the exit code, that the capture (named what)
// was seen, and that app.service is active again.
func (e *testEnv) runCaptureFault(r *Runner, want int, what string, arm func(cancel context.CancelFunc, saw *bool)) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var saw bool
	arm(cancel, &saw)
	code := r.Run(ctx)
	e.t.Log(e.logBuf.String())
	if code != want {
		e.t.Fatalf("exit %d, want %d", code, want)
	}
	if !saw {
		e.t.Errorf("the %s did not exist at the failure point", what)
	}
	if e.unitState("app.service") != "active" {
		e.t.Error("unit not started again")
	}
}

func (e *testEnv) setUnit(unit, state string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.sysDir, unit+".state"), []byte(state+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) unitState(unit string) string {
	b, _ := os.ReadFile(filepath.Join(e.sysDir, unit+".state"))
	return strings.TrimSpace(string(b))
}

func (e *testEnv) marker(unit, what string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.sysDir, unit+"."+what), nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// calls returns the fake systemctl's calls, one string per call.
func (e *testEnv) calls() []string {
	b, err := os.ReadFile(filepath.Join(e.sysDir, "calls.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// callsWithoutPolls drops repeated is-active polls after a start, which
// depend on timing.
func (e *testEnv) callsWithoutPolls() []string {
	var out []string
	for _, c := range e.calls() {
		if len(out) > 0 && c == out[len(out)-1] && strings.HasPrefix(c, "is-active") {
			continue
		}
		out = append(out, c)
	}
	return out
}

// destFiles lists the names in dir.
func destFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// archivesIn returns the final archive names of service app in dir.
func archivesIn(t *testing.T, dir, ext string) []string {
	var out []string
	for _, n := range destFiles(t, dir) {
		if len(n) > 4 && strings.HasPrefix(n, "app-") && n[4] >= '0' && n[4] <= '9' && strings.HasSuffix(n, "."+ext) {
			out = append(out, n)
		}
	}
	return out
}

func assertNoTemps(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for _, n := range destFiles(t, d) {
			if strings.HasPrefix(n, ".") || strings.Contains(n, ".tmp") {
				t.Errorf("temp file left in %s: %s", d, n)
			}
		}
	}
}

func assertNoArchives(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for _, n := range destFiles(t, d) {
			if strings.Contains(n, "app-") || strings.Contains(n, ".tmp") {
				t.Errorf("unexpected file in %s: %s", d, n)
			}
		}
	}
}

// testUser and testGroup own the archives in tests: the current ids, so the
// tests also pass unprivileged (the Nix build sandbox), where chown to
// anyone else fails.
var (
	testUser  = strconv.Itoa(os.Getuid())
	testGroup = strconv.Itoa(os.Getgid())
)

// assertOneArchive checks that dir holds exactly one tar.gz archive of app,
// with its checksum beside it, and no temp file.
func assertOneArchive(t *testing.T, dir string) {
	t.Helper()
	archives := archivesIn(t, dir, "tar.gz")
	if len(archives) != 1 {
		t.Fatalf("%s: archives %v, want exactly one", dir, archives)
	}
	if _, err := os.Stat(filepath.Join(dir, archives[0]+".sha256")); err != nil {
		t.Errorf("%s: checksum missing: %v", dir, err)
	}
	assertNoTemps(t, dir)
}

// writeSummedArchive writes a stand-in archive named base into dir with a
// matching NAME.sha256 and a valid NAME.sig beside it, as a committed
// archive has. Retention only checks the checksum and the signature, so the
// content need not parse.
func (e *testEnv) writeSummedArchive(dir, base string) {
	e.t.Helper()
	e.writeSignedArchive(dir, base, []byte("archive "+base+"\n"))
}

// writeSignedArchive is writeSummedArchive with the given content.
func (e *testEnv) writeSignedArchive(dir, base string, content []byte) {
	e.t.Helper()
	sum := sha256.Sum256(content)
	e.writeFile(filepath.Join(dir, base), content, 0o640)
	e.writeFile(filepath.Join(dir, base+".sha256"), []byte(checksumLine(sum[:], base)), 0o640)
	e.writeFile(filepath.Join(dir, base+".sig"), e.key().SignatureFile(base, sum[:], int64(len(content))), 0o640)
}

// keyPath is the test's signing key (backup.signingKey), never the host's.
func (e *testEnv) keyPath() string { return filepath.Join(e.root, "keys", "signing.key") }

// key loads (creating it on first use) the test's signing key.
func (e *testEnv) key() *hostkey.Key {
	e.t.Helper()
	k, err := hostkey.Load(e.keyPath(), true)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}
