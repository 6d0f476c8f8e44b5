package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// Restoring from remote destinations, read through the Destination in one
// pass (restore --archive NAME --destination DEST), on real servers.

// assertEmptyDir fails unless dir exists and is empty (a target a refused
// restore must leave as it was).
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("target %s: %d entries (%v), want it empty", dir, len(ents), err)
	}
}

// TestRestoreFromS3: restore --target and --yes from an S3 destination;
// a bit flip or a truncation of the object (its signed .sha256 and .sig
// intact) is refused after the one pass, with the target, the data and
// the units untouched.
func TestRestoreFromS3(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	remote := "s3://backups/fleet"
	cfgPath := e.configFile([]string{"app.service"}, e.s3Config(srv, remote, "hosta", 3, nil))
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	name := archivesIn(t, e.dests[0], "tar.gz")[0]
	noErr(t, os.Remove(filepath.Join(e.dests[0], name))) // only the remote copy is left
	target := filepath.Join(e.root, "restored")
	if code, out, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote, Target: target})); code != ExitOK ||
		!strings.Contains(out, "restored "+remote+"/hosta/app/"+name) {
		t.Fatalf("restore from S3: exit %d", code)
	}
	for _, dp := range e.dataPaths {
		assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
	}
	// Without --destination the name is looked up in every destination.
	if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Target: filepath.Join(e.root, "r2")})); code != ExitOK {
		t.Fatalf("restore by name alone: exit %d", code)
	}
	if code, _, stderr := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: "s3://elsewhere", Target: filepath.Join(e.root, "r3")})); code != ExitFailed ||
		!strings.Contains(stderr, "not one of the service's destinations") {
		t.Fatalf("restore from an unconfigured destination: exit %d", code)
	}

	key := "fleet/hosta/app/" + name
	good := srv.get("backups", key)
	noErr(t, os.WriteFile(filepath.Join(e.dataPaths[0], "db.sqlite"), []byte("current"), 0o600))
	for _, damage := range []string{"bitflip", "truncate"} {
		srv.put("backups", key, corrupt(good, damage))
		bad := filepath.Join(e.root, "bad-"+damage)
		noErr(t, os.Mkdir(bad, 0o700))
		code, _, stderr := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote, Target: bad}))
		if code != ExitFailed || !strings.Contains(stderr, "refusing to restore") {
			t.Fatalf("%s: exit %d, want 1 with 'refusing to restore'", damage, code)
		}
		assertEmptyDir(t, bad)
		os.Remove(filepath.Join(e.sysDir, "calls.log"))
		if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote})); code != ExitFailed {
			t.Fatalf("%s in place: exit %d, want 1", damage, code)
		}
		if got := e.calls(); len(got) != 0 {
			t.Errorf("%s: units touched: %q", damage, got)
		}
		if got, _ := os.ReadFile(filepath.Join(e.dataPaths[0], "db.sqlite")); string(got) != "current" {
			t.Errorf("%s: data changed: %q", damage, got)
		}
		assertNoStaging(t, e.dataPaths)
	}
	srv.put("backups", key, good)
	if code, out, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote})); code != ExitOK || !strings.Contains(out, "previous data moved to") {
		t.Fatalf("restore --yes from S3: exit %d", code)
	}
	if got, _ := os.ReadFile(filepath.Join(e.dataPaths[0], "db.sqlite")); string(got) == "current" {
		t.Error("data not restored")
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not started again")
	}
}

// TestVerifyAdoptS3: an archive in a bucket without a .sig (written
// before signing, or copied there by the admin) is untrusted until
// verify --adopt signs it there; a corrupt one is never adopted.
func TestVerifyAdoptS3(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	remote := "s3://backups"
	cfgPath := e.configFile(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{remote}
		b["s3"] = srv.s3Settings()
		b["hostName"] = "hosta"
	})
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	keys := srv.keys("backups", "hosta/app/")
	content := srv.get("backups", "hosta/app/"+keys[0])
	for _, old := range []string{"app-20200101T000000Z.tar.gz", "app-20190101T000000Z.tar.gz"} {
		data := content
		if strings.HasPrefix(old, "app-2019") {
			data = corrupt(content, "bitflip")
		}
		srv.put("backups", "hosta/app/"+old, data)
		srv.put("backups", "hosta/app/"+old+".sha256", []byte(checksumLine(sha256Of(data), old)))
	}
	if code, out, _ := e.logged(e.verifyCmd(cfgPath, VerifyOptions{All: true})); code == ExitOK || !strings.Contains(out, "UNTRUSTED "+remote+"/hosta/app/app-20200101T000000Z.tar.gz") {
		t.Fatalf("verify --all before adopting: exit %d", code)
	}
	code, out, _ := e.logged(e.verifyCmd(cfgPath, VerifyOptions{All: true, Adopt: true}))
	if code == ExitOK || !strings.Contains(out, "OK "+remote+"/hosta/app/app-20200101T000000Z.tar.gz (adopted (signed))") ||
		!strings.Contains(out, "FAILED "+remote+"/hosta/app/app-20190101T000000Z.tar.gz") {
		t.Fatalf("verify --adopt: exit %d", code)
	}
	got := srv.keys("backups", "hosta/app/")
	if !slices.Contains(got, "app-20200101T000000Z.tar.gz.sig") || slices.Contains(got, "app-20190101T000000Z.tar.gz.sig") {
		t.Fatalf("bucket holds %q: want a .sig for the adopted archive only", got)
	}
	// The adopted archive is now trusted: restore takes it without
	// --trust-unsigned.
	if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: "app-20200101T000000Z.tar.gz", Target: filepath.Join(e.root, "t")})); code != ExitOK {
		t.Fatalf("restore of the adopted archive: exit %d", code)
	}
}

// TestRestoreFromSFTPEncrypted: an encrypted archive on an SFTP server is
// restored with the right identity, refused with a wrong one (target
// left empty), and verify --adopt signs an unsigned copy on the server.
func TestRestoreFromSFTPEncrypted(t *testing.T) {
	e, srv, remoteDir := sftpEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	cfgPath := e.configFile(nil, withSFTP(srv, func(b map[string]any) {
		b["format"] = "tar.zst"
		b["encryption"] = map[string]any{"recipients": []string{k.x25519Pub}}
	}))
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d\n%s", code, e.logBuf.String())
	}
	name := archivesIn(t, remoteDir, "tar.zst.age")[0]
	remote := srv.url("r")
	wrong := filepath.Join(e.root, "wrong")
	noErr(t, os.Mkdir(wrong, 0o700))
	if code, _, stderr := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote, Target: wrong, Identities: e.identities(k.wrongFile)})); code != ExitFailed ||
		!strings.Contains(stderr, "refusing to restore") {
		t.Fatalf("wrong identity: exit %d", code)
	}
	assertEmptyDir(t, wrong)
	target := filepath.Join(e.root, "restored")
	if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: remote, Target: target, Identities: e.identities(k.x25519File)})); code != ExitOK {
		t.Fatalf("restore from SFTP: exit %d", code)
	}
	for _, dp := range e.dataPaths {
		assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
	}
	// verify --adopt on the server: an unsigned copy is adopted only
	// once decrypted and parsed.
	old := "app-20200101T000000Z.tar.zst.age"
	data, err := os.ReadFile(filepath.Join(remoteDir, name))
	noErr(t, err)
	e.writeFile(filepath.Join(remoteDir, old), data, 0o600)
	e.writeFile(filepath.Join(remoteDir, old+".sha256"), []byte(checksumLine(sha256Of(data), old)), 0o600)
	if code, out, _ := e.logged(e.verifyCmd(cfgPath, VerifyOptions{All: true, Adopt: true})); code == ExitOK || !strings.Contains(out, "give --identity") {
		t.Fatalf("adopt without identity: exit %d", code)
	}
	if code, out, _ := e.logged(e.verifyCmd(cfgPath, VerifyOptions{All: true, Adopt: true, Identities: e.identities(k.x25519File)})); code != ExitOK || !strings.Contains(out, "adopted (signed)") {
		t.Fatalf("adopt: exit %d", code)
	}
	if code, out, _ := e.logged(e.verifyCmd(cfgPath, VerifyOptions{All: true, Identities: e.identities(k.x25519File)})); code != ExitOK || !strings.Contains(out, "OK "+remote+"/"+old+" (decrypted and parsed)") {
		t.Fatalf("verify after adopting: exit %d", code)
	}
	if got := destFiles(t, remoteDir); !slices.Contains(got, old+".sig") || slices.ContainsFunc(got, func(n string) bool { return strings.Contains(n, ".tmp-") }) {
		t.Fatalf("server holds %q", got)
	}
}

// hostileNames are object or file names another writer could plant under
// a destination's prefix: escapes, control characters, nesting, a
// timestamp that is not one, a very long name.
var hostileNames = []string{
	"../x",
	"a/b",
	"app-20250101T000000Z.tar.gz\n/etc/passwd",
	"\x1b[2J\x1b[31mapp-20250101T000000Z.tar.gz",
	"app-20251399T999999Z.tar.gz",
	"app-20250101T000000Z" + strings.Repeat("x", 200) + ".tar.gz",
	"app-20250101T000000Z.tar.gz\x1b[0m",
}

// assertHostileSafe: list shows none of the hostile names raw and counts
// none; prune leaves them; restore refuses each by name.
func (e *testEnv) assertHostileSafe(cfgPath, remote string, planted []string, stillThere func(string) bool) {
	t := e.t
	t.Helper()
	code, out, stderr := e.logged(e.listCmd(cfgPath, ListOptions{}))
	if code != ExitOK {
		t.Fatalf("list: exit %d", code)
	}
	// "T999999Z", not "9999": the random digits of a t.TempDir in the
	// destination column may hold "9999" (a CI run's did).
	if strings.ContainsAny(out+stderr, "\x1b") || strings.Contains(out, "/etc/passwd") || strings.Contains(out, "T999999Z") ||
		strings.Contains(out, "xxxxxxxx") || strings.Contains(out, "untrusted") {
		t.Errorf("list shows a hostile name or counts it:\n%q", out)
	}
	if code, _, _ := e.logged(e.pruneOut(cfgPath, PruneOptions{})); code != ExitOK {
		t.Errorf("prune: exit %d", code)
	}
	for _, n := range planted {
		if !stillThere(n) {
			t.Errorf("prune removed the planted %q", n)
		}
		target := filepath.Join(t.TempDir(), "t")
		code, _, stderr := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: n, Destination: remote, Target: target, TrustUnsigned: true}))
		if code == ExitOK || strings.Contains(stderr, "\x1b") || strings.Contains(stderr, "\n/etc/passwd") {
			t.Errorf("restore of %q: exit %d\n%q", n, code, stderr)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("restore of %q made the target", n)
		}
	}
}

// TestHostileNamesS3: objects with hostile names under the service's
// prefix in a bucket.
func TestHostileNamesS3(t *testing.T) {
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	remote := "s3://backups/fleet"
	cfgPath := e.configFile(nil, e.s3Config(srv, remote, "hosta", 1, nil))
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	prefix := "fleet/hosta/app/"
	var planted []string
	for _, n := range hostileNames {
		if _, err := srv.client.PutObject(context.Background(), "backups", prefix+n, bytes.NewReader([]byte("x")), 1, "", "", minio.PutObjectOptions{}); err != nil {
			t.Logf("the server refuses the key %q: %v", n, err)
			continue
		}
		planted = append(planted, n)
	}
	if len(planted) < 3 {
		t.Fatalf("only %d hostile keys planted: the test proves little", len(planted))
	}
	keys := srv.keys("backups", prefix)
	e.assertHostileSafe(cfgPath, remote, planted, func(n string) bool {
		return slices.Contains(keys, n) == slices.Contains(srv.keys("backups", prefix), n)
	})
}

// TestHostileNamesSFTP: files with hostile names in the service's
// directory on an SFTP server.
func TestHostileNamesSFTP(t *testing.T) {
	e, srv, remoteDir := sftpEnv(t)
	cfgPath := e.configFile(nil, withSFTP(srv, func(b map[string]any) { b["retentionSnapshots"] = 1 }))
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d\n%s", code, e.logBuf.String())
	}
	var planted []string
	for _, n := range hostileNames {
		p := filepath.Join(remoteDir, n)
		if !strings.HasPrefix(filepath.Clean(p), remoteDir+"/") {
			continue // "../x" is outside; planted below as a name the server resolves
		}
		noErr(t, os.MkdirAll(filepath.Dir(p), 0o755))
		e.writeFile(p, []byte("x"), 0o600)
		planted = append(planted, n)
	}
	e.writeFile(filepath.Join(filepath.Dir(remoteDir), "x"), []byte("not an archive of app"), 0o600)
	planted = append(planted, "../x")
	e.assertHostileSafe(cfgPath, srv.url("r"), planted, func(n string) bool {
		_, err := os.Lstat(filepath.Join(remoteDir, n))
		return err == nil
	})
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestRestoreZipFromSFTP: zip is read at random, not as a stream: from an
// SFTP server it is parsed, extracted and hashed through the connection;
// a flipped byte on the server is refused with the target left empty.
func TestRestoreZipFromSFTP(t *testing.T) {
	e, srv, remoteDir := sftpEnv(t)
	cfgPath := e.configFile(nil, withSFTP(srv, func(b map[string]any) { b["format"] = "zip" }))
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d\n%s", code, e.logBuf.String())
	}
	name := archivesIn(t, remoteDir, "zip")[0]
	target := filepath.Join(e.root, "restored")
	if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: srv.url("r"), Target: target})); code != ExitOK {
		t.Fatalf("restore: exit %d", code)
	}
	for _, dp := range e.dataPaths {
		assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
	}
	p := filepath.Join(remoteDir, name)
	data, err := os.ReadFile(p)
	noErr(t, err)
	e.writeFile(p, corrupt(data, "bitflip"), 0o600)
	bad := filepath.Join(e.root, "bad")
	noErr(t, os.Mkdir(bad, 0o700))
	if code, _, _ := e.logged(e.restoreStrict(cfgPath, RestoreOptions{Archive: name, Destination: srv.url("r"), Target: bad})); code != ExitFailed {
		t.Fatalf("corrupt zip: exit %d, want 1", code)
	}
	assertEmptyDir(t, bad)
}
