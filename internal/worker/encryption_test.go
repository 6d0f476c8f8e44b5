package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ageenc "filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// encKeys are the keys of an encrypted test: an age X25519 identity and
// an ssh-ed25519 key made by the real ssh-keygen (by x/crypto/ssh where it
// is missing, e.g. in the Nix build's sandbox; TestEncryptedRunRoundTrip
// requires the real one), each with its public key (recipient) and a file
// holding its private key (identity).
type encKeys struct {
	x25519Pub, x25519File string
	sshPub, sshFile       string
	wrongFile             string // an X25519 identity that is no recipient
}

func newEncKeys(t *testing.T, dir string) encKeys {
	t.Helper()
	var k encKeys
	id, err := ageenc.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	k.x25519Pub = id.Recipient().String()
	k.x25519File = filepath.Join(dir, "x25519.key")
	writeSecret(t, k.x25519File, "# created by the test\n"+id.String()+"\n")
	wrong, _ := ageenc.GenerateX25519Identity()
	k.wrongFile = filepath.Join(dir, "wrong.key")
	writeSecret(t, k.wrongFile, wrong.String()+"\n")
	k.sshFile = filepath.Join(dir, "id_ed25519")
	if sshKeygen, err := exec.LookPath("ssh-keygen"); err == nil {
		if out, err := exec.Command(sshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "restore@test", "-f", k.sshFile).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	} else {
		goSSHKey(t, k.sshFile)
	}
	pub, err := os.ReadFile(k.sshFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k.sshPub = strings.TrimSpace(string(pub))
	return k
}

// goSSHKey writes an OpenSSH ed25519 key pair as ssh-keygen does.
func goSSHKey(t *testing.T, path string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "restore@test")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	writeSecret(t, path, string(pem.EncodeToMemory(block)))
	writeSecret(t, path+".pub", string(ssh.MarshalAuthorizedKey(sp)))
}

func writeSecret(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// encryptedConfig: tar.zst, both destinations (one file system: a primary
// and a copy), the X25519 recipient inline and the ssh-ed25519 one in a
// recipients file.
func (e *testEnv) encryptedConfig(k encKeys, mutate func(b map[string]any)) string {
	e.t.Helper()
	recFile := filepath.Join(e.root, "keys", "recipients.txt")
	writeSecret(e.t, recFile, "# backup recipients\n\n"+k.sshPub+"\n")
	return e.configFile([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["format"] = "tar.zst"
		b["encryption"] = map[string]any{"recipients": []string{k.x25519Pub}, "recipientsFile": recFile}
		if mutate != nil {
			mutate(b)
		}
	})
}

// decryptWithLibrary decrypts the age file at path with the identity file
// (the age CLI is not installed; the test decrypts with filippo.io/age).
func decryptWithLibrary(t *testing.T, path, identityFile string) []byte {
	t.Helper()
	ids, err := LoadIdentities(identityFile)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := ageenc.Decrypt(f, ids...)
	if err != nil {
		t.Fatalf("decrypt %s: %v", path, err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// GNU tar extracts what the X25519 identity decrypts, and lists what the
// ssh-ed25519 identity decrypts: the run's archive is plain age to every
// recipient, readable with standard tools.
func TestEncryptedRunRoundTrip(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "ssh-keygen", "openssh-client")
	tarBin := testtool.Require(t, "tar", "tar")
	testtool.Require(t, "zstd", "zstd")
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.setUnit("app.service", "active")
	cfgPath := e.encryptedConfig(k, nil)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	var name string
	for _, d := range e.dests {
		got := archivesIn(t, d, "tar.zst.age")
		if len(got) != 1 {
			t.Fatalf("%s: archives %v, want one NAME-TS.tar.zst.age; files %v", d, got, destFiles(t, d))
		}
		name = got[0]
		if plain := archivesIn(t, d, "tar.zst"); len(plain) != 0 {
			t.Fatalf("%s: unencrypted archive written: %v", d, plain)
		}
		// The .sha256 is of the ciphertext: sha256sum -c checks it.
		cmd := exec.Command("sha256sum", "-c", name+".sha256")
		cmd.Dir = d
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum -c in %s: %v\n%s", d, err, out)
		}
		if _, err := os.Stat(filepath.Join(d, name+".sig")); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.HasPrefix(name, "app-") || !strings.HasSuffix(name, ".tar.zst.age") {
		t.Fatalf("archive name %q", name)
	}
	ct, _ := os.ReadFile(filepath.Join(e.dests[0], name))
	if !bytes.HasPrefix(ct, []byte("age-encryption.org/v1\n")) {
		t.Fatalf("not an age file: %q", ct[:min(len(ct), 40)])
	}
	if bytes.Contains(ct, []byte("listen = 8080")) {
		t.Fatal("plaintext in the ciphertext")
	}

	out := filepath.Join(e.root, "gnutar")
	os.MkdirAll(out, 0o755)
	tarCmd := exec.Command(tarBin, "--zstd", "-xf", "-", "-C", out)
	tarCmd.Stdin = bytes.NewReader(decryptWithLibrary(t, filepath.Join(e.dests[1], name), k.x25519File))
	if b, err := tarCmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, b)
	}
	for _, dp := range e.dataPaths {
		assertSameTree(t, dp, filepath.Join(out, archive.EntryName(dp)))
	}
	list := exec.Command(tarBin, "--zstd", "-tf", "-")
	list.Stdin = bytes.NewReader(decryptWithLibrary(t, filepath.Join(e.dests[0], name), k.sshFile))
	if b, err := list.CombinedOutput(); err != nil || !strings.Contains(string(b), "config/app.conf") {
		t.Fatalf("GNU tar -t of the ssh-decrypted stream: %v\n%s", err, b)
	}

	t.Run("list and verify without identity", func(t *testing.T) {
		code, s := joined(e.listCmd(cfgPath, ListOptions{Verify: true}))
		if code != ExitOK || strings.Count(s, name) != 2 || strings.Contains(s, "untrusted") {
			t.Fatalf("list: exit %d\n%s", code, s)
		}
		code, s = joined(e.verifyCmd(cfgPath, VerifyOptions{}))
		if code != ExitOK || strings.Count(s, "OK ") != 2 || !strings.Contains(s, "encrypted: checksum and signature verified") {
			t.Fatalf("verify: exit %d\n%s", code, s)
		}
	})
	t.Run("verify --identity decrypts and parses", func(t *testing.T) {
		for _, id := range []string{k.x25519File, k.sshFile} {
			code, s := joined(e.verifyCmd(cfgPath, VerifyOptions{Identities: e.identities(id)}))
			if code != ExitOK || strings.Count(s, "(decrypted and parsed)") != 2 {
				t.Fatalf("verify --identity %s: exit %d\n%s", id, code, s)
			}
		}
		code, s := joined(e.verifyCmd(cfgPath, VerifyOptions{Identities: e.identities(k.wrongFile)}))
		if code != ExitFailed || !strings.Contains(s, "not one of the archive's recipients") {
			t.Fatalf("verify with a wrong identity: exit %d\n%s", code, s)
		}
	})
	archivePath := filepath.Join(e.dests[0], name)
	t.Run("restore needs the identity", func(t *testing.T) {
		target := filepath.Join(e.root, "r-none")
		// The command refuses it as a usage error before loading the
		// config (cmd/backup-worker's TestRestoreUsage); the engine
		// refuses it too, before touching the target.
		code, s := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target}))
		if code != ExitFailed || !strings.Contains(s, "--identity") {
			t.Fatalf("restore without identity: exit %d\n%s", code, s)
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Fatalf("restore without identity left the target: %v", err)
		}
		target = filepath.Join(e.root, "r-wrong")
		code, s = joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target, Identities: e.identities(k.wrongFile)}))
		if code != ExitFailed {
			t.Fatalf("restore with a wrong identity: exit %d\n%s", code, s)
		}
		if entries, _ := os.ReadDir(target); len(entries) != 0 {
			t.Fatalf("wrong identity extracted %d entries", len(entries))
		}
	})
	t.Run("restore to target", func(t *testing.T) {
		target := filepath.Join(e.root, "r-ssh")
		code, s := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Target: target, Identities: e.identities(k.sshFile)}))
		if code != ExitOK {
			t.Fatalf("restore: exit %d\n%s", code, s)
		}
		for _, dp := range e.dataPaths {
			assertSameTree(t, dp, filepath.Join(target, archive.EntryName(dp)))
		}
	})
	t.Run("restore in place", func(t *testing.T) {
		os.WriteFile(filepath.Join(e.dataPaths[0], "config", "app.conf"), []byte("changed\n"), 0o644)
		code, s := joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: archivePath, Identities: e.identities(k.x25519File)}))
		if code != ExitOK {
			t.Fatalf("restore --yes: exit %d\n%s", code, s)
		}
		got, _ := os.ReadFile(filepath.Join(e.dataPaths[0], "config", "app.conf"))
		if string(got) != "listen = 8080\n" {
			t.Fatalf("restored app.conf = %q", got)
		}
		if e.unitState("app.service") != "active" {
			t.Fatal("unit not started again")
		}
	})
}

// A flipped ciphertext byte is caught by the checksum without any
// identity, and restore refuses the archive even with the right one.
func TestEncryptedTamperCaughtByChecksum(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	cfgPath := e.encryptedConfig(k, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	name := archivesIn(t, e.dests[1], "tar.zst.age")[0]
	bad := filepath.Join(e.dests[1], name)
	b, _ := os.ReadFile(bad)
	b[len(b)/2] ^= 0x01
	os.WriteFile(bad, b, 0o640)
	code, s := joined(e.verifyCmd(cfgPath, VerifyOptions{}))
	if code != ExitFailed || !strings.Contains(s, "FAILED "+bad) || !strings.Contains(s, "SHA-256 mismatch") {
		t.Fatalf("verify of tampered ciphertext: exit %d\n%s", code, s)
	}
	target := filepath.Join(e.root, "restored")
	code, s = joined(e.restoreStrict(cfgPath, RestoreOptions{Archive: bad, Target: target, Identities: e.identities(k.x25519File)}))
	if code != ExitFailed || !strings.Contains(s, "refusing to restore") {
		t.Fatalf("restore of tampered ciphertext: exit %d\n%s", code, s)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("tampered archive extracted %d entries", len(entries))
	}
}

// Unencrypted archives written before encryption was turned on are the
// same series: listed, counted and pruned with the .age ones.
func TestEncryptedAndPlainArchivesShareRetention(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.dests = e.dests[:1]
	t0 := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	plainCfg := e.config(nil, func(m map[string]any) {
		backupSettings(m)["format"] = "tar.zst"
		backupSettings(m)["retentionSnapshots"] = 2
	})
	for i := range 2 {
		r := e.runner(plainCfg)
		r.Now = func() time.Time { return t0.Add(time.Duration(i) * time.Hour) }
		if code := r.Run(context.Background()); code != ExitOK {
			t.Fatalf("plain run %d: exit %d\n%s", i, code, e.logBuf.String())
		}
	}
	cfgPath := e.encryptedConfig(k, func(b map[string]any) { b["retentionSnapshots"] = 2 })
	code, s := joined(e.listCmd(cfgPath, ListOptions{}))
	if code != ExitOK || strings.Count(s, ".tar.zst ") != 2 {
		t.Fatalf("list before: exit %d\n%s", code, s)
	}
	cfg, _ := config.Load(cfgPath)
	r := e.runner(cfg)
	r.Now = func() time.Time { return t0.Add(2 * time.Hour) }
	if code := r.Run(context.Background()); code != ExitOK {
		t.Fatalf("encrypted run: exit %d\n%s", code, e.logBuf.String())
	}
	plain, enc := archivesIn(t, e.dests[0], "tar.zst"), archivesIn(t, e.dests[0], "tar.zst.age")
	if len(plain) != 1 || plain[0] != "app-20260101T040000Z.tar.zst" || len(enc) != 1 {
		t.Fatalf("after the encrypted run: plain %v, encrypted %v (want the newest plain one and the new .age)", plain, enc)
	}
	code, s = joined(e.listCmd(cfgPath, ListOptions{Verify: true}))
	if code != ExitOK || !strings.Contains(s, plain[0]) || !strings.Contains(s, enc[0]) {
		t.Fatalf("list after: exit %d\n%s", code, s)
	}
	code, s = joined(e.pruneOut(cfgPath, PruneOptions{DryRun: true}))
	if code != ExitOK || !strings.Contains(s, "2 kept") {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, s)
	}
	// One more encrypted run: now the plain archive is the oldest and goes.
	r = e.runner(cfg)
	r.Now = func() time.Time { return t0.Add(3 * time.Hour) }
	if code := r.Run(context.Background()); code != ExitOK {
		t.Fatalf("second encrypted run: exit %d", code)
	}
	if plain, enc := archivesIn(t, e.dests[0], "tar.zst"), archivesIn(t, e.dests[0], "tar.zst.age"); len(plain) != 0 || len(enc) != 2 {
		t.Fatalf("plain %v, encrypted %v", plain, enc)
	}
}

// corruptAt flips one byte of the stream at offset off.
type corruptAt struct {
	w   io.Writer
	off int64
	n   int64
}

func (c *corruptAt) Write(p []byte) (int, error) {
	if c.off >= c.n && c.off < c.n+int64(len(p)) {
		q := bytes.Clone(p)
		q[c.off-c.n] ^= 0xff
		p = q
	}
	c.n += int64(len(p))
	return c.w.Write(p)
}

// The host cannot parse what it wrote (no identity), so the plaintext is
// parsed while it is produced: an archiver that emits a corrupt stream
// fails the run before anything is committed, as it does unencrypted.
func TestEncryptedRunParsesPlaintextStream(t *testing.T) {
	t.Parallel()
	for _, dests := range []int{1, 2} {
		t.Run(map[int]string{1: "one destination", 2: "fan-out"}[dests], func(t *testing.T) {
			e := newTestEnv(t)
			k := newEncKeys(t, filepath.Join(e.root, "keys"))
			e.dests = e.dests[:dests]
			if dests == 2 {
				// Another file system: two primaries, so the fan-out.
				testtool.MountTmpfs(t, e.dests[1], "64m")
			}
			e.setUnit("app.service", "active")
			e.seams.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
				return archive.Write(ctx, &corruptAt{w: w, off: 2000}, paths, opts)
			}
			cfg, _ := config.Load(e.encryptedConfig(k, func(b map[string]any) { b["format"] = "tar.gz" }))
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("run with a corrupt plaintext stream: exit %d, want %d", code, ExitFailed)
			}
			if !strings.Contains(e.logBuf.String(), "verify the archive while it was written") {
				t.Fatalf("log does not say the plaintext parse failed:\n%s", e.logBuf.String())
			}
			assertNoArchives(t, e.dests...)
			assertNoTemps(t, e.dests...)
			if e.unitState("app.service") != "active" {
				t.Fatal("unit not started again")
			}
		})
	}
}

// A recipients file that does not parse fails the run before anything is
// stopped, naming the file and the line.
func TestEncryptedBadRecipientsFileFailsPreflight(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.setUnit("app.service", "active")
	cfgPath := e.encryptedConfig(k, nil)
	writeSecret(t, filepath.Join(e.root, "keys", "recipients.txt"), k.sshPub+"\nage1notakey\n")
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitFailed {
		t.Fatalf("exit %d", code)
	}
	log := e.logBuf.String()
	if !strings.Contains(log, "recipients.txt line 2") || !strings.Contains(log, "nothing was stopped") {
		t.Fatalf("log:\n%s", log)
	}
	for _, c := range e.calls() {
		if strings.HasPrefix(c, "stop") {
			t.Fatalf("unit stopped: %v", e.calls())
		}
	}
	assertNoArchives(t, e.dests...)
}

// With LoadCredential=age-recipients the worker reads the credential, not
// the path in the JSON.
func TestEncryptedRecipientsFromCredential(t *testing.T) {
	// Not parallel: it sets CREDENTIALS_DIRECTORY (t.Setenv), a process-wide variable.
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	cfgPath := e.encryptedConfig(k, nil)
	credDir := filepath.Join(e.root, "creds")
	writeSecret(t, filepath.Join(credDir, ageCredential), k.sshPub+"\n")
	writeSecret(t, filepath.Join(e.root, "keys", "recipients.txt"), "garbage\n")
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)
	cfg, _ := config.Load(cfgPath)
	rs, err := loadRecipients(cfg)
	if err != nil || len(rs) != 2 {
		t.Fatalf("recipients %d, %v", len(rs), err)
	}
}

// Destinations on two file systems get the stream through the fan-out,
// after encryption: both hold the same ciphertext (encrypted once), which
// decrypts to the same archive.
func TestEncryptedFanOutEncryptsOnce(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	testtool.MountTmpfs(t, e.dests[1], "64m")
	cfg, _ := config.Load(e.encryptedConfig(k, nil))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	if !strings.Contains(e.logBuf.String(), "streamed_to=2") {
		t.Fatalf("not a fan-out:\n%s", e.logBuf.String())
	}
	name := archivesIn(t, e.dests[0], "tar.zst.age")[0]
	a, _ := os.ReadFile(filepath.Join(e.dests[0], name))
	b, _ := os.ReadFile(filepath.Join(e.dests[1], name))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("the destinations hold different bytes (%d, %d)", len(a), len(b))
	}
	if _, err := archive.VerifyTar(context.Background(), bytes.NewReader(decryptWithLibrary(t, filepath.Join(e.dests[1], name), k.sshFile)), "tar.zst"); err != nil {
		t.Fatal(err)
	}
}

// captureFirst: the capture is compressed and encrypted after the units
// are started again; the staging name stays one preflight cleans up.
func TestEncryptedCaptureFirst(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.setUnit("app.service", "active")
	cfg, _ := config.Load(e.encryptedConfig(k, func(b map[string]any) { b["captureFirst"] = true }))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	for _, d := range e.dests {
		got := archivesIn(t, d, "tar.zst.age")
		if len(got) != 1 {
			t.Fatalf("%s: %v", d, destFiles(t, d))
		}
		if _, err := archive.VerifyTar(context.Background(), bytes.NewReader(decryptWithLibrary(t, filepath.Join(d, got[0]), k.x25519File)), "tar.zst"); err != nil {
			t.Fatal(err)
		}
	}
	assertNoTemps(t, e.dests...)
}

// SIGTERM while the encrypted stream is written: the encryptor and the
// plaintext parse stop, nothing is committed, no temp file is left, the
// unit runs again (and the run does not hang on the parse's goroutine).
func TestEncryptedRunInterrupted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.setUnit("app.service", "active")
	cfg, _ := config.Load(e.encryptedConfig(k, nil))
	r := e.runner(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		return archive.Write(ctx, &cancelAfter{w: w, after: 1000, cancel: cancel}, paths, opts)
	}
	done := make(chan int)
	go func() { done <- r.Run(ctx) }()
	select {
	case code := <-done:
		if code != ExitInterrupted {
			t.Fatalf("exit %d, want %d\n%s", code, ExitInterrupted, e.logBuf.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the run hung after the interruption")
	}
	assertNoArchives(t, e.dests...)
	assertNoTemps(t, e.dests...)
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
}

// What a killed encrypted run leaves (.NAME-TS.EXT.age.tmp-…, and its
// .sha256/.sig temps) is removed by the next run, like any stale temp.
func TestEncryptedStaleTempsCleaned(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	k := newEncKeys(t, filepath.Join(e.root, "keys"))
	e.dests = e.dests[:1]
	stale := []string{".app-20260101T000000Z.tar.zst.age.tmp-0123abcd", ".app-20260101T000000Z.tar.zst.age.sha256.tmp-0123abcd"}
	for _, n := range stale {
		e.writeFile(filepath.Join(e.dests[0], n), []byte("partial"), 0o600)
	}
	cfg, _ := config.Load(e.encryptedConfig(k, nil))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	assertNoTemps(t, e.dests...)
}
