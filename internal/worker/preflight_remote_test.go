package worker

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Preflight checks that hold for every destination kind, not only local
// directories (issue 12).

// TestRunSameRemotePlaceTwice: two entries of backup.paths that name one
// SFTP place (host in another case, the default port written out) are
// refused with "list it once" before anything is stopped, as two paths to
// one local directory are (the rule is config's, the worker applies it
// when it loads the config).
func TestRunSameRemotePlaceTwice(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{"sftp://bk@NAS.example./srv/b", "sftp://bk@nas.example:22/srv/b"}
		b["hostName"] = "testhost"
		b["sftp"] = map[string]any{"privateKeyFile": "/run/k", "knownHostsFile": "/run/kh"}
	})
	var stdout, stderr bytes.Buffer
	if code := e.runCmd(cfgPath, false, &stdout, &stderr); code != ExitUsage {
		t.Fatalf("exit %d, want 2\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "backup.paths[1]") || !strings.Contains(stderr.String(), "list it once") {
		t.Errorf("no 'list it once' for backup.paths[1]:\n%s", stderr.String())
	}
	if got := e.calls(); len(got) != 0 {
		t.Errorf("systemctl called: %q", got)
	}
}

// TestRunsInOneSecondRemote: two runs at the same second pick distinct
// archive names in S3 and SFTP destinations too (preflight asks every
// destination, through the Destination interface, whether the name is
// taken), so the second run commits everywhere instead of having its
// remote Commits refused after the downtime.
func TestRunsInOneSecondRemote(t *testing.T) {
	t.Parallel()
	s3 := startS3Server(t)
	s3.makeBucket("same")
	e, ssh, remote := sftpEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, withSFTP(ssh, func(b map[string]any) {
		b["paths"] = []string{"s3://same/p", ssh.url("r")}
		b["s3"] = s3.s3Settings()
	}))
	at := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := 0; i < 2; i++ {
		r := e.runner(cfg)
		r.Now = func() time.Time { return at }
		if code := r.Run(t.Context()); code != ExitOK {
			t.Fatalf("run %d: exit %d\n%s", i+1, code, e.logBuf.String())
		}
	}
	want := []string{"app-20310506T070809Z.tar.gz", "app-20310506T070810Z.tar.gz"}
	if got := archivesIn(t, remote, "tar.gz"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("SFTP holds %q, want %q", got, want)
	}
	if got := remoteArchives(s3.keys("same", "p/testhost/app/")); len(got) != 2 ||
		!strings.HasSuffix(got[0], want[0]) || !strings.HasSuffix(got[1], want[1]) {
		t.Errorf("S3 holds %q, want %q", got, want)
	}
}

// TestCaptureFirstAllRemote: captureFirst stages the capture in a local
// destination. With every destination remote the config is refused
// (config.CaptureFirstStaging, naming backup.captureFirst); with the only
// local one an optional destination that is missing, the run's preflight
// refuses by the same rule, before anything is stopped or uploaded.
func TestCaptureFirstAllRemote(t *testing.T) {
	t.Parallel()
	s3 := startS3Server(t)
	s3.makeBucket("only")
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	const want = "backup.captureFirst: no usable local destination to stage the capture in"
	const advice = "add a local directory to backup.paths or turn captureFirst off"
	remoteOnly := e.configFile([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{"s3://only"}
		b["s3"] = s3.s3Settings()
		b["hostName"] = "hosta"
		b["captureFirst"] = true
	})
	if code, _, stderr := e.checkConfigCmd(remoteOnly, true); code != ExitUsage || !strings.Contains(stderr, want) || !strings.Contains(stderr, advice) {
		t.Errorf("check-config of captureFirst with only s3://: exit %d\n%s", code, stderr)
	}
	usb := filepath.Join(e.root, "usb")
	cfg := e.config([]string{"app.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = []string{usb, "s3://only"}
		b["optionalPaths"] = []string{usb}
		b["s3"] = s3.s3Settings()
		b["hostName"] = "hosta"
		b["captureFirst"] = true
	})
	if code := e.run(cfg); code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	if log := e.logBuf.String(); !strings.Contains(log, want) || !strings.Contains(log, advice) {
		t.Errorf("no captureFirst message naming the key:\n%s", log)
	}
	if got := e.calls(); len(got) != 0 {
		t.Errorf("systemctl called: %q", got)
	}
	if got := s3.keys("only", ""); len(got) != 0 {
		t.Errorf("bucket holds %q", got)
	}
}
