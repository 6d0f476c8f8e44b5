package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Drills of remote destinations: the newest archive is streamed from a
// real S3 server (versitygw) or SFTP server (sshd), restored into the
// scratch directory and compared with the manifest; a remote copy with a
// flipped byte fails its drill (the stream's SHA-256 against the signed
// .sha256) while the local copy passes: exit 3.

func TestDrillS3(t *testing.T) {
	t.Parallel()
	srv := startS3Server(t)
	srv.makeBucket("backups")
	e := newTestEnv(t)
	remote := "s3://backups/fleet"
	cfg := e.config(nil, func(m map[string]any) {
		e.s3Config(srv, remote, "hosta", 0, nil)(m)
		e.withDrill(nil)(m)
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	code, out := e.drill(cfg, "")
	if code != ExitOK || !strings.Contains(out, remote+": ok: app-") {
		t.Fatalf("drill: exit %d\n%s", code, out)
	}
	e.assertScratchEmpty()
}

func TestDrillSFTP(t *testing.T) {
	t.Parallel()
	e, srv, remoteDir := sftpEnv(t)
	cfg := e.config(nil, func(m map[string]any) {
		withSFTP(srv, nil)(m)
		e.withDrill(nil)(m)
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("backup: exit %d", code)
	}
	if code, out := e.drill(cfg, ""); code != ExitOK || !strings.Contains(out, srv.url("r")+": ok: app-") {
		t.Fatalf("drill: exit %d\n%s", code, out)
	}
	name := archivesIn(t, remoteDir, "tar.gz")[0]
	p := filepath.Join(remoteDir, name)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	e.writeFile(p, data, 0o600)
	code, out := e.drill(cfg, "")
	if code != ExitPartial || !strings.Contains(out, e.dests[0]+": ok") || !strings.Contains(out, srv.url("r")+": failed: ") {
		t.Fatalf("drill of a corrupted remote copy: exit %d, want 3\n%s", code, out)
	}
	e.assertScratchEmpty()
}
