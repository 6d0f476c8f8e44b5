package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ageenc "filippo.io/age"

	"github.com/backupgen/backupgen/internal/config"
)

// sftpEnv is a test environment whose second destination is directory
// "r" on a real sshd; remoteDir is where its archives land on this
// machine (PATH/HOSTNAME/SERVICE).
func sftpEnv(t *testing.T) (*testEnv, *sshServer, string) {
	srv := startSSHD(t)
	e := newTestEnv(t)
	e.dests[1] = srv.url("r")
	return e, srv, filepath.Join(srv.root, "r", "testhost", "app")
}

// withSFTP adds the backup.sftp settings and the host name to a config.
func withSFTP(srv *sshServer, more func(b map[string]any)) func(m map[string]any) {
	return func(m map[string]any) {
		b := backupSettings(m)
		b["hostName"] = "testhost"
		b["sftp"] = map[string]any{"privateKeyFile": srv.keyFile, "knownHostsFile": srv.knownHostsFile}
		if more != nil {
			more(b)
		}
	}
}

// TestRunLocalAndSFTP: a full run to a local directory and an SFTP server
// commits the same archive, its .sha256 and .sig in both, with nothing
// else left on the server; a second run prunes on both.
func TestRunLocalAndSFTP(t *testing.T) {
	t.Parallel()
	for _, readBack := range []bool{true, false} {
		t.Run(map[bool]string{true: "read-back", false: "no read-back"}[readBack], func(t *testing.T) {
			e, srv, remote := sftpEnv(t)
			e.setUnit("app.service", "active")
			cfg := e.config([]string{"app.service"}, withSFTP(srv, func(b map[string]any) {
				b["sftp"].(map[string]any)["verifyReadBack"] = readBack
				b["retentionSnapshots"] = 1
			}))
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("exit %d, want 0", code)
			}
			local := archivesIn(t, e.dests[0], "tar.gz")
			if len(local) != 1 {
				t.Fatalf("local holds %v", local)
			}
			base := local[0]
			if got, want := destFiles(t, remote), []string{base, base + ".sha256", base + ".sig"}; !slices.Equal(got, want) {
				t.Fatalf("server holds %q, want %q", got, want)
			}
			for _, side := range []string{"", ".sha256", ".sig"} {
				a, _ := os.ReadFile(filepath.Join(e.dests[0], base+side))
				b, _ := os.ReadFile(filepath.Join(remote, base+side))
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Fatalf("%s%s differs between the local and the remote copy", base, side)
				}
			}
			if fi, err := os.Stat(filepath.Join(remote, base)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("remote archive mode %v (%v), want 0600", fi.Mode(), err)
			}
			// A second run one second later: both destinations prune
			// the first archive.
			e.logBuf = &syncBuffer{}
			r := e.runner(cfg)
			r.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
			if code := r.Run(t.Context()); code != ExitOK {
				t.Fatalf("second run: exit %d\n%s", code, e.logBuf.String())
			}
			second := archivesIn(t, e.dests[0], "tar.gz")
			if len(second) != 1 || second[0] == base {
				t.Fatalf("local holds %v after the second run, want only the new archive", second)
			}
			if got := destFiles(t, remote); !slices.Equal(got, []string{second[0], second[0] + ".sha256", second[0] + ".sig"}) {
				t.Fatalf("server holds %q after the second run", got)
			}
		})
	}
}

// TestRunSFTPServerKilledMidUpload: the server dies while the archive is
// uploaded. The local copy is committed and pruned, the run ends partial,
// nothing appears under a final name on the server; the next run (server
// back) removes the temp file and commits there.
func TestRunSFTPServerKilledMidUpload(t *testing.T) {
	t.Parallel()
	e, srv, remote := sftpEnv(t)
	e.setUnit("app.service", "active")
	// Incompressible data, so the upload takes a while.
	e.writeFile(filepath.Join(e.dataPaths[0], "big.bin"), randomBytes(t, 48<<20), 0o600)
	old := "app-20200101T000000Z.tar.zst"
	e.writeFile(filepath.Join(e.dests[0], old), []byte("old archive"), 0o640)
	cfg := e.config([]string{"app.service"}, withSFTP(srv, func(b map[string]any) {
		b["format"] = "tar.zst"
		b["retentionSnapshots"] = 1
	}))
	killed := make(chan string, 1)
	go func() {
		defer close(killed)
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			entries, _ := os.ReadDir(remote)
			for _, en := range entries {
				if fi, err := en.Info(); err == nil && strings.Contains(en.Name(), ".tmp-") && fi.Size() > 4<<20 {
					srv.kill()
					killed <- en.Name()
					return
				}
			}
		}
	}()
	code := e.run(cfg)
	tmp := <-killed
	if tmp == "" {
		t.Fatal("the upload never reached 4 MiB; the server was not killed")
	}
	if code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not started again")
	}
	local := archivesIn(t, e.dests[0], "tar.zst")
	if len(local) != 1 || local[0] == old {
		t.Fatalf("local holds %v, want the new archive only (old one pruned)", local)
	}
	if got := destFiles(t, remote); !slices.Equal(got, []string{tmp}) {
		t.Fatalf("server holds %q, want only the temp file %s (no final name)", got, tmp)
	}
	// The server is back: the next run removes the stale temp file and
	// commits there too.
	srv.start()
	e.logBuf = &syncBuffer{}
	r := e.runner(cfg)
	r.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
	if code := r.Run(t.Context()); code != ExitOK {
		t.Fatalf("second run: exit %d\n%s", code, e.logBuf.String())
	}
	got := destFiles(t, remote)
	if slices.Contains(got, tmp) || len(got) != 3 {
		t.Fatalf("server holds %q after the next run, want one committed archive and no temp file", got)
	}
	if !strings.Contains(e.logBuf.String(), "removed temp file left by an interrupted run") {
		t.Error("the next run did not report the stale temp file it removed")
	}
}

// TestRunSFTPUnknownHostKey: a server whose host key is not the one in
// known_hosts is refused at preflight: as the only destination, the run
// fails before anything is stopped; beside a local one, it is left out
// and the run ends partial.
func TestRunSFTPUnknownHostKey(t *testing.T) {
	t.Parallel()
	e, srv, remote := sftpEnv(t)
	e.setUnit("app.service", "active")
	other := writeEd25519(t, filepath.Join(t.TempDir(), "other"))
	srv.writeKnownHosts(t, other.PublicKey())
	only := e.config([]string{"app.service"}, withSFTP(srv, func(b map[string]any) {
		b["paths"] = []string{srv.url("r")}
	}))
	if code := e.run(only); code != ExitFailed {
		t.Fatalf("exit %d, want 1 (failed)", code)
	}
	if calls := e.calls(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "stop") }) {
		t.Fatalf("a unit was stopped: %q", calls)
	}
	if !strings.Contains(e.logBuf.String(), "key mismatch") {
		t.Error("the log does not say the host key did not match")
	}
	e.logBuf = &syncBuffer{}
	if code := e.run(e.config([]string{"app.service"}, withSFTP(srv, nil))); code != ExitPartial {
		t.Fatalf("with a local destination too: exit %d, want 3 (partial)", code)
	}
	assertOneArchive(t, e.dests[0])
	if _, err := os.Stat(remote); !os.IsNotExist(err) {
		t.Fatalf("something was created on the refused server: %v", err)
	}
}

// TestRunSFTPUnreachable: a server that does not answer at preflight is
// left out before anything is stopped; the local destination gets the
// archive and the run ends partial. Alone, it fails the run with no unit
// stopped.
func TestRunSFTPUnreachable(t *testing.T) {
	t.Parallel()
	e, srv, _ := sftpEnv(t)
	e.setUnit("app.service", "active")
	srv.kill()
	start := time.Now()
	only := e.config([]string{"app.service"}, withSFTP(srv, func(b map[string]any) {
		b["paths"] = []string{srv.url("r")}
	}))
	if code := e.run(only); code != ExitFailed {
		t.Fatalf("exit %d, want 1 (failed)", code)
	}
	t.Logf("preflight gave up after %v", time.Since(start))
	if calls := e.calls(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "stop") }) {
		t.Fatalf("a unit was stopped: %q", calls)
	}
	e.logBuf = &syncBuffer{}
	if code := e.run(e.config([]string{"app.service"}, withSFTP(srv, nil))); code != ExitPartial {
		t.Fatalf("with a local destination too: exit %d, want 3 (partial)", code)
	}
	assertOneArchive(t, e.dests[0])
	log := e.logBuf.String()
	if i, j := strings.Index(log, "destination unusable"), strings.Index(log, "stopping"); i < 0 || (j >= 0 && j < i) {
		t.Error("the server was not left out before the unit was stopped")
	}
}

// TestSFTPCommands: list --verify, verify, prune --dry-run and prune work
// on an SFTP destination; another host's archives and a foreign file
// under the prefix are never touched, and a corrupted remote archive
// fails verify.
func TestSFTPCommands(t *testing.T) {
	t.Parallel()
	e, srv, remote := sftpEnv(t)
	cfgPath := e.configFile(nil, withSFTP(srv, func(b map[string]any) { b["retentionSnapshots"] = 1 }))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r := e.runner(cfg)
		// The second run at the real time: prune keeps archives from
		// the future out of the count.
		r.Now = func() time.Time { return time.Now().Add(time.Duration(i-1) * 2 * time.Second) }
		if code := r.Run(t.Context()); code != ExitOK {
			t.Fatalf("run %d: exit %d\n%s", i, code, e.logBuf.String())
		}
	}
	// Another host's archive of the same service, and a foreign file.
	otherHost := filepath.Join(srv.root, "r", "otherhost", "app", "app-20200101T000000Z.tar.gz")
	e.writeFile(otherHost, []byte("theirs"), 0o600)
	e.writeFile(filepath.Join(remote, "notes.txt"), []byte("not ours"), 0o600)
	archives := archivesIn(t, remote, "tar.gz")
	if len(archives) != 1 {
		t.Fatalf("server holds %v after two runs with retentionSnapshots=1", archives)
	}
	if code, out := joined(e.listCmd(cfgPath, ListOptions{Verify: true})); code != ExitOK || !strings.Contains(out, srv.url("r")) || strings.Count(out, archives[0]) != 2 {
		t.Fatalf("list --verify: exit %d\n%s", code, out)
	}
	if code, out := joined(e.verifyCmd(cfgPath, VerifyOptions{})); code != ExitOK || !strings.Contains(out, "OK "+srv.url("r")+"/"+archives[0]) {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	// An older archive of ours, valid and signed: prune removes it,
	// nothing else.
	old := "app-20210101T000000Z.tar.gz"
	valid, err := os.ReadFile(filepath.Join(remote, archives[0]))
	if err != nil {
		t.Fatal(err)
	}
	e.writeSignedArchive(remote, old, valid)
	if code, out := joined(e.pruneOut(cfgPath, PruneOptions{DryRun: true})); code != ExitOK || !strings.Contains(out, "would remove "+srv.url("r")+"/"+old) {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, out)
	}
	if code, out := joined(e.pruneOut(cfgPath, PruneOptions{})); code != ExitOK {
		t.Fatalf("prune: exit %d\n%s", code, out)
	}
	if got := destFiles(t, remote); !slices.Equal(got, []string{archives[0], archives[0] + ".sha256", archives[0] + ".sig", "notes.txt"}) {
		t.Fatalf("server holds %q after prune", got)
	}
	if _, err := os.Stat(otherHost); err != nil {
		t.Fatalf("another host's archive was touched: %v", err)
	}
	// A flipped byte on the server: verify fails.
	p := filepath.Join(remote, archives[0])
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0xff
	e.writeFile(p, data, 0o600)
	if code, out := joined(e.verifyCmd(cfgPath, VerifyOptions{})); code == ExitOK || !strings.Contains(out, "FAILED") {
		t.Fatalf("verify of a corrupted remote archive: exit %d\n%s", code, out)
	}
}

// TestRunSFTPOnly: the SFTP destination as the run's only one (the stream
// goes straight to the upload, no fan-out hash): committed, read back and
// parsed, or with verifyReadBack off, confirmed by size and stream hash.
func TestRunSFTPOnly(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"tar.zst", "zip"} {
		for _, readBack := range []bool{true, false} {
			e, srv, remote := sftpEnv(t)
			cfg := e.config(nil, withSFTP(srv, func(b map[string]any) {
				b["paths"] = []string{srv.url("r")}
				b["format"] = format
				b["sftp"].(map[string]any)["verifyReadBack"] = readBack
			}))
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("%s, readBack %v: exit %d", format, readBack, code)
			}
			if got := archivesIn(t, remote, format); len(got) != 1 {
				t.Fatalf("%s, readBack %v: server holds %v", format, readBack, destFiles(t, remote))
			}
			if code, out := joined(e.verifyCmd(filepath.Join(e.root, "config.json"), VerifyOptions{})); code != ExitOK {
				t.Fatalf("%s, readBack %v: verify: exit %d\n%s", format, readBack, code, out)
			}
		}
	}
}

// TestSFTPRetentionReadsBackOnlyWithVerifyReadBack: retention re-reads the
// archives it counts on an SFTP destination only with verifyReadBack (the
// default). An older archive with a flipped byte (same size, valid
// signature over its original content) is caught with it: not counted,
// kept as evidence, warned about. Without it (a metered link) the
// signature is checked against the .sha256 and the server's size only,
// nothing is downloaded, and the archive counts.
func TestSFTPRetentionReadsBackOnlyWithVerifyReadBack(t *testing.T) {
	t.Parallel()
	for _, readBack := range []bool{true, false} {
		e, srv, remote := sftpEnv(t)
		e.dests = e.dests[1:]
		cfg := e.config(nil, withSFTP(srv, func(b map[string]any) {
			b["retentionSnapshots"] = 2
			b["minSizeRatio"] = 0
			b["sftp"].(map[string]any)["verifyReadBack"] = readBack
		}))
		if code := e.run(cfg); code != ExitOK {
			t.Fatalf("readBack %v: first run: exit %d", readBack, code)
		}
		first := archivesIn(t, remote, "tar.gz")[0]
		// Turn the first archive into an older one, then flip a byte.
		old := "app-20210101T000000Z.tar.gz"
		data, err := os.ReadFile(filepath.Join(remote, first))
		if err != nil {
			t.Fatal(err)
		}
		e.writeSignedArchive(remote, old, data)
		for _, side := range []string{"", ".sha256", ".sig"} {
			os.Remove(filepath.Join(remote, first+side))
		}
		data[len(data)/2] ^= 0xff
		e.writeFile(filepath.Join(remote, old), data, 0o600)

		e.logBuf = &syncBuffer{}
		if code := e.run(cfg); code != ExitOK && code != ExitWarning {
			t.Fatalf("readBack %v: second run: exit %d", readBack, code)
		}
		if _, err := os.Stat(filepath.Join(remote, old)); err != nil {
			t.Fatalf("readBack %v: the old archive is gone: %v", readBack, err)
		}
		if caught := strings.Contains(e.logBuf.String(), "failed its checksum check"); caught != readBack {
			t.Errorf("readBack %v: corrupted archive caught = %v", readBack, caught)
		}
	}
}

// TestRunSFTPWrongKey: a client key the server does not accept is refused
// at preflight, at once (no retries), before anything is stopped; the
// error names the login, never the key.
func TestRunSFTPWrongKey(t *testing.T) {
	t.Parallel()
	e, srv, _ := sftpEnv(t)
	e.setUnit("app.service", "active")
	writeEd25519(t, srv.keyFile) // a fresh key, not in authorized_keys
	key, err := os.ReadFile(srv.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	only := e.config([]string{"app.service"}, withSFTP(srv, func(b map[string]any) {
		b["paths"] = []string{srv.url("r")}
	}))
	start := time.Now()
	if code := e.run(only); code != ExitFailed {
		t.Fatalf("exit %d, want 1 (failed)", code)
	}
	if d := time.Since(start); d > sftpRetryDelay {
		t.Errorf("refused after %v: a rejected key must not be retried", d)
	}
	if calls := e.calls(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "stop") }) {
		t.Fatalf("a unit was stopped: %q", calls)
	}
	log := e.logBuf.String()
	if !strings.Contains(log, "unable to authenticate") {
		t.Error("the log does not say the login was refused")
	}
	if body := strings.Split(string(key), "\n")[1]; strings.Contains(log, body) {
		t.Error("the log holds key material")
	}
}

// TestRunSFTPEncrypted: encrypted archives (NAME-TS.EXT.age) on an SFTP
// server are the service's archives like plain ones: listed, counted and
// pruned there. The two branches that added age and SFTP each knew only
// their own names; SFTP's List skipped .age archives, so its history grew
// without bound.
func TestRunSFTPEncrypted(t *testing.T) {
	t.Parallel()
	id, err := ageenc.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	e, srv, remote := sftpEnv(t)
	cfg := e.config(nil, withSFTP(srv, func(b map[string]any) {
		b["retentionSnapshots"] = 1
		b["format"] = "tar.zst"
		b["encryption"] = map[string]any{"recipients": []string{id.Recipient().String()}}
	}))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d\n%s", code, e.logBuf.String())
	}
	first := archivesIn(t, remote, "tar.zst.age")
	if len(first) != 1 {
		t.Fatalf("server holds %q, want one .age archive", destFiles(t, remote))
	}
	e.logBuf = &syncBuffer{}
	r := e.runner(cfg)
	r.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
	if code := r.Run(t.Context()); code != ExitOK {
		t.Fatalf("second run: exit %d\n%s", code, e.logBuf.String())
	}
	second := archivesIn(t, remote, "tar.zst.age")
	if len(second) != 1 || second[0] == first[0] {
		t.Fatalf("server holds %q after the second run, want only the new archive", destFiles(t, remote))
	}
	if got := destFiles(t, remote); !slices.Equal(got, []string{second[0], second[0] + ".sha256", second[0] + ".sig"}) {
		t.Fatalf("server holds %q after the second run", got)
	}
}
