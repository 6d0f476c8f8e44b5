package worker

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	"golang.org/x/crypto/ssh"
)

// sshServer is the shared sshd of the tests (testtool.SSHServer, one copy
// for every package), with the names these tests use.
type sshServer struct {
	*testtool.SSHServer
	root, keyFile, knownHostsFile string
}

// startSSHD starts sshd -D -e -f CONFIG and waits until it answers.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	s := testtool.StartSSHD(t)
	return &sshServer{SSHServer: s, root: s.Root, keyFile: s.KeyFile, knownHostsFile: s.KnownHostsFile}
}

func (s *sshServer) start()                { s.Start() }
func (s *sshServer) kill()                 { s.Kill() }
func (s *sshServer) url(sub string) string { return s.URL(sub) }

// writeKnownHosts makes key the one host key the client knows.
func (s *sshServer) writeKnownHosts(t *testing.T, key ssh.PublicKey) { s.WriteKnownHosts(key) }

// sftpSettings is the backup.sftp block that reaches this server.
func (s *sshServer) sftpSettings() config.SFTP {
	return config.SFTP{PrivateKeyFile: s.keyFile, KnownHostsFile: s.knownHostsFile}
}

// dest makes an sftpDest of service name in directory sub, host "testhost".
func (s *sshServer) dest(t *testing.T, sub, name string) *sftpDest {
	cfg := &config.Config{Name: name, Backup: config.Backup{HostName: "testhost", SFTP: s.sftpSettings()}}
	raw := s.url(sub)
	parsed, err := config.ParseDestination(raw)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newSFTPDest(cfg, raw, parsed, "testhost", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func writeEd25519(t *testing.T, path string) ssh.Signer { return testtool.WriteEd25519Key(t, path) }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int { return testtool.FreePort(t) }
