package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ageenc "filippo.io/age"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/retention"
)

// Runs with a local and an S3 destination on a real versitygw.

// s3Config makes e's config write to its first local destination and to
// s3://bucket/prefix as host, keeping retention snapshots.
func (e *testEnv) s3Config(srv *s3Server, remote, host string, snapshots int, mutate func(b map[string]any)) func(m map[string]any) {
	return func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{e.dests[0], remote}
		b["s3"] = srv.s3Settings()
		b["hostName"] = host
		b["retentionSnapshots"] = snapshots
		if mutate != nil {
			mutate(b)
		}
	}
}

// remoteArchives lists the archive objects (not side objects) in keys.
func remoteArchives(keys []string) []string {
	var out []string
	for _, k := range keys {
		if _, ok := retention.ParseName("app", "tar.gz", k); ok {
			out = append(out, k)
		}
	}
	return out
}

func TestS3RunLocalAndRemote(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, e.s3Config(srv, "s3://backups/fleet", "hosta", 1, nil))
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	prefix := "fleet/hosta/app/"
	keys := srv.keys("backups", prefix)
	local := archivesIn(t, e.dests[0], "tar.gz")
	if len(local) != 1 || !slices.Equal(keys, []string{local[0], local[0] + ".sha256", local[0] + ".sig"}) {
		t.Fatalf("local %v, bucket holds %q; want the same archive with .sha256 and .sig", local, keys)
	}
	want, err := os.ReadFile(filepath.Join(e.dests[0], local[0]))
	if err != nil {
		t.Fatal(err)
	}
	got := srv.get("backups", prefix+local[0])
	if !bytes.Equal(got, want) {
		t.Fatal("the object differs from the local archive")
	}
	sum := sha256.Sum256(got)
	if line := string(srv.get("backups", prefix+local[0]+".sha256")); line != hex.EncodeToString(sum[:])+"  "+local[0]+"\n" {
		t.Errorf(".sha256 object = %q", line)
	}
	if _, err := archive.VerifyAt(context.Background(), bytes.NewReader(got), int64(len(got)), "tar.gz"); err != nil {
		t.Fatal(err)
	}
	// A second run prunes the first archive in both destinations
	// (retentionSnapshots 1), after verifying it through Open.
	time.Sleep(1100 * time.Millisecond)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("second run: exit %d, want 0", code)
	}
	local2 := archivesIn(t, e.dests[0], "tar.gz")
	keys = srv.keys("backups", prefix)
	if len(local2) != 1 || local2[0] == local[0] || !slices.Equal(remoteArchives(keys), local2) || len(keys) != 3 {
		t.Fatalf("after the second run: local %v, bucket %q; want only the new archive in both", local2, keys)
	}
	// list --verify and verify read the remote archive through the
	// Destination; a corrupted object is reported.
	cfgPath := e.configFile([]string{"app.service"}, e.s3Config(srv, "s3://backups/fleet", "hosta", 1, nil))
	if code, out, errOut := e.listCmd(cfgPath, ListOptions{Verify: true}); code != ExitOK || !strings.Contains(out, local2[0]) {
		t.Fatalf("list --verify: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := e.verifyCmd(cfgPath, VerifyOptions{}); code != ExitOK || !strings.Contains(out, "OK s3://backups/fleet/hosta/app/"+local2[0]) {
		t.Fatalf("verify did not check the remote archive: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := e.pruneOut(cfgPath, PruneOptions{DryRun: true}); code != ExitOK {
		t.Fatalf("prune --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	good := srv.get("backups", prefix+local2[0])
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	srv.put("backups", prefix+local2[0], bad)
	if code, out, _ := e.verifyCmd(cfgPath, VerifyOptions{}); code == ExitOK || !strings.Contains(out, "FAILED s3://") {
		t.Fatalf("verify of a corrupted object: exit %d\n%s", code, out)
	}
}

// TestS3ServerKilledMidUpload: the server dies once the upload started.
// The S3 destination fails alone (exit 3); the local archive is committed
// and pruned; the bucket holds no archive object, only the unfinished
// upload, which the next run aborts (CleanStale) before writing its own.
func TestS3ServerKilledMidUpload(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	// Enough data for several parts, so the stream is still running.
	e.writeFile(filepath.Join(e.dataPaths[0], "big.bin"), randomBytes(t, 40<<20), 0o600)
	e.setUnit("app.service", "active")
	old := "app-20200101T000000Z.tar.gz"
	e.writeSummedArchive(e.dests[0], old)
	cfg := e.config([]string{"app.service"}, e.s3Config(srv, "s3://backups", "hosta", 1, nil))
	prefix := "hosta/app/"
	stop := make(chan struct{})
	killed := make(chan bool, 1)
	go func() {
		for {
			select {
			case <-stop:
				killed <- false
				return
			default:
			}
			res, err := srv.client.ListMultipartUploads(context.Background(), "backups", prefix, "", "", "", 10)
			if err == nil && len(res.Uploads) > 0 {
				srv.kill()
				killed <- true
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	code := e.run(cfg)
	close(stop)
	if !<-killed {
		t.Fatal("the upload never started")
	}
	if code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	local := archivesIn(t, e.dests[0], "tar.gz")
	if len(local) != 1 || local[0] == old {
		t.Fatalf("local holds %v, want the new archive only (old one pruned)", local)
	}
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
	srv.start()
	keys := srv.keys("backups", "")
	if len(remoteArchives(keys)) != 0 || slices.ContainsFunc(keys, func(k string) bool { return !strings.HasPrefix(k, "upload:") }) {
		t.Fatalf("bucket holds %q after the failed upload; want no object", keys)
	}
	// The next run aborts the stale upload and writes its archive.
	time.Sleep(1100 * time.Millisecond)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("next run: exit %d, want 0", code)
	}
	keys = srv.keys("backups", prefix)
	if slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "upload:") }) || len(remoteArchives(keys)) != 1 {
		t.Fatalf("bucket holds %q after the next run; want one archive and no upload", keys)
	}
	if !strings.Contains(e.logBuf.String(), "aborted stale upload") {
		t.Error("the stale upload's abort was not logged")
	}
}

// TestS3HostsShareBucket: two hosts and another tool write one bucket
// and prefix; each host lists and prunes only its own service's archives.
func TestS3HostsShareBucket(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("shared")
	planted := []string{"team/notes.txt", "team/hosta/app/notes.txt", "team/hosta/app/deeper/app-20200101T000000Z.tar.gz",
		"team/hosta/other/other-20200101T000000Z.tar.gz", "team/app-20200101T000000Z.tar.gz",
		// Hostile names beside ours: near-misses of the pattern, a key
		// "inside" an archive name. (A dot-dot key is not tried: the
		// POSIX gateway resolves it to a plain key under our prefix, where
		// a name of our pattern is ours, as in a local directory.)
		"team/hosta/app/app-20200101T000000Z.tar.gz.old", "team/hosta/app/ app-20200101T000000Z.tar.gz",
		"team/hosta/app/app-20200101T000000Z.tar.gz/evil", "team/hosta/app/app-2020-01-01.tar.gz"}
	for _, k := range planted {
		srv.put("shared", k, []byte("another tool's\n"))
	}
	ea, eb := newTestEnv(t), newTestEnv(t)
	cfgA := ea.config(nil, ea.s3Config(srv, "s3://shared/team", "hosta", 1, nil))
	cfgB := eb.config(nil, eb.s3Config(srv, "s3://shared/team", "hostb", 1, nil))
	for i, run := range []struct {
		e   *testEnv
		cfg any
	}{{ea, nil}, {eb, nil}, {ea, nil}} {
		cfg := cfgA
		if run.e == eb {
			cfg = cfgB
		}
		if code := run.e.run(cfg); code != ExitOK {
			t.Fatalf("run %d: exit %d", i, code)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	a := remoteArchives(srv.keys("shared", "team/hosta/app/"))
	b := remoteArchives(srv.keys("shared", "team/hostb/app/"))
	if len(a) != 1 || len(b) != 1 || a[0] != archivesIn(t, ea.dests[0], "tar.gz")[0] {
		t.Fatalf("host A holds %v, host B %v; want one archive each (A's latest)", a, b)
	}
	all := srv.keys("shared", "")
	for _, k := range planted {
		if !slices.Contains(all, k) {
			t.Errorf("%s (not ours) was removed", k)
		}
	}
	store, err := newS3Store(cfgA, mustParse(t, "s3://shared/team"), "hosta", s3IdleTimeout, ea.runner(cfgA).Log)
	if err != nil {
		t.Fatal(err)
	}
	list, err := store.List(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != a[0] {
		t.Fatalf("host A lists %+v, %v; want its one archive", list, err)
	}
}

// TestS3UnreachableAtPreflight: a server that does not answer, or refuses
// the credentials, is left out before anything is stopped.
func TestS3UnreachableAtPreflight(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("backups")
	dead := map[string]any{"endpoint": "http://127.0.0.1:" + fmt.Sprint(freePort(t)), "pathStyle": true, "credentialsFile": srv.credFile}
	wrongCreds := filepath.Join(t.TempDir(), "wrong.env")
	if err := os.WriteFile(wrongCreds, []byte("AWS_ACCESS_KEY_ID=nobody\nAWS_SECRET_ACCESS_KEY=wrong-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := srv.s3Settings()
	refused["credentialsFile"] = wrongCreds
	for name, s3 := range map[string]map[string]any{"unreachable": dead, "wrong credentials": refused} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			// With a local destination: partial, the local copy written.
			cfg := e.config([]string{"app.service"}, e.s3Config(srv, "s3://backups", "hosta", 0, func(b map[string]any) { b["s3"] = s3 }))
			if code := e.run(cfg); code != ExitPartial {
				t.Fatalf("exit %d, want 3", code)
			}
			assertOneArchive(t, e.dests[0])
			if !strings.Contains(e.logBuf.String(), "destination unusable") {
				t.Error("the remote was not reported unusable at preflight")
			}
			// Alone: the run fails before it stops anything.
			cfg = e.config([]string{"app.service"}, func(m map[string]any) {
				b := backupSettings(m)
				b["paths"] = []string{"s3://backups"}
				b["s3"] = s3
				b["hostName"] = "hosta"
			})
			before := len(e.calls())
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("remote only: exit %d, want 1", code)
			}
			for _, c := range e.calls()[before:] {
				if strings.HasPrefix(c, "stop") {
					t.Fatalf("%q with no usable destination", c)
				}
			}
			if len(srv.keys("backups", "")) != 0 {
				t.Errorf("bucket holds %q", srv.keys("backups", ""))
			}
		})
	}
}

// TestS3OnlyDestination: with S3 alone the stream is not hashed by a
// fan-out and no local copy is parsed: the read-back hashes and parses
// the object before its checksum is published.
func TestS3OnlyDestination(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("solo")
	e := newTestEnv(t)
	cfg := e.config(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{"s3://solo"}
		b["s3"] = srv.s3Settings()
		b["hostName"] = "hosta"
		b["format"] = "tar.zst"
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	keys := srv.keys("solo", "hosta/app/")
	if len(keys) != 3 || !strings.HasSuffix(keys[0], ".tar.zst") {
		t.Fatalf("bucket holds %q", keys)
	}
	got := srv.get("solo", "hosta/app/"+keys[0])
	if _, err := archive.VerifyAt(context.Background(), bytes.NewReader(got), int64(len(got)), "tar.zst"); err != nil {
		t.Fatal(err)
	}
}

// TestS3ServerHangsMidUpload: the server stops answering (SIGSTOP: the
// connection stays up, nothing moves) once the upload started. The idle
// timeout fails the S3 destination alone: exit 3, the local archive
// committed, and the run does not hang.
func TestS3ServerHangsMidUpload(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	e.writeFile(filepath.Join(e.dataPaths[0], "big.bin"), randomBytes(t, 24<<20), 0o600)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, e.s3Config(srv, "s3://backups", "hosta", 0, nil))
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			res, err := srv.client.ListMultipartUploads(context.Background(), "backups", "hosta/app/", "", "", "", 10)
			if err == nil && len(res.Uploads) > 0 {
				srv.Signal(syscall.SIGSTOP)
				return
			}
		}
	}()
	start := time.Now()
	r := e.runner(cfg)
	r.s3Idle = 2 * time.Second
	code := r.Run(context.Background())
	t.Logf("exit %d; log:\n%s", code, e.logBuf.String())
	<-stopped
	srv.Signal(syscall.SIGCONT)
	if code != ExitPartial {
		t.Fatalf("exit %d, want 3 (partial)", code)
	}
	assertOneArchive(t, e.dests[0])
	if e.unitState("app.service") != "active" {
		t.Error("unit not restarted")
	}
	if d := time.Since(start); d > 90*time.Second {
		t.Errorf("the run took %s against a hung server", d)
	}
	if keys := srv.keys("backups", ""); len(remoteArchives(keys)) != 0 {
		t.Errorf("bucket holds %q", keys)
	}
}

// TestS3Encrypted: encrypted archives (NAME-TS.EXT.age) in a bucket are
// the service's archives like plain ones: listed, counted and pruned. The
// S3 branch was written before encryption and listed plain names only, so
// an encrypted history there would never have been pruned.
func TestS3Encrypted(t *testing.T) {
	t.Parallel()
	id, err := ageenc.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	srv := startS3Server(t)
	srv.makeBucket("solo")
	e := newTestEnv(t)
	cfg := e.config(nil, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{"s3://solo"}
		b["s3"] = srv.s3Settings()
		b["hostName"] = "hosta"
		b["format"] = "tar.zst"
		b["retentionSnapshots"] = 1
		b["encryption"] = map[string]any{"recipients": []string{id.Recipient().String()}}
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d\n%s", code, e.logBuf.String())
	}
	first := srv.keys("solo", "hosta/app/")
	if len(first) != 3 || !strings.HasSuffix(first[0], ".tar.zst.age") {
		t.Fatalf("bucket holds %q, want one .age archive with its .sha256 and .sig", first)
	}
	e.logBuf = &syncBuffer{}
	r := e.runner(cfg)
	r.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
	if code := r.Run(t.Context()); code != ExitOK {
		t.Fatalf("second run: exit %d\n%s", code, e.logBuf.String())
	}
	second := srv.keys("solo", "hosta/app/")
	if len(second) != 3 || second[0] == first[0] || !strings.HasSuffix(second[0], ".tar.zst.age") {
		t.Fatalf("bucket holds %q after the second run, want only the new archive and its side files", second)
	}
}
