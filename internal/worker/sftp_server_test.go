package worker

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshServer is a real OpenSSH sshd started by a test on 127.0.0.1, with a
// fresh host key, one authorized client key, and the known_hosts and key
// files a client needs.
type sshServer struct {
	bin, config    string
	port           int
	user           string
	root           string // remote directory of the destinations (on this machine)
	keyFile        string // the client's private key
	knownHostsFile string // the server's host key, as a client knows it
	hostKey        ssh.Signer
	cmd            *exec.Cmd
	t              *testing.T
}

// startSSHD starts sshd -D -e -f CONFIG and waits until it answers.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	bin := testtool.Require(t, "sshd", "openssh-server")
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs // sshd refuses to re-exec itself from a relative path
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &sshServer{bin: bin, user: u.Username, root: filepath.Join(dir, "remote"), t: t,
		keyFile: filepath.Join(dir, "id_ed25519"), knownHostsFile: filepath.Join(dir, "known_hosts")}
	if err := os.Mkdir(s.root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Privilege separation directory sshd insists on.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	s.hostKey = writeEd25519(t, hostKeyFile)
	client := writeEd25519(t, s.keyFile)
	authorized := filepath.Join(dir, "authorized_keys")
	writeFile(t, authorized, string(ssh.MarshalAuthorizedKey(client.PublicKey())))
	s.port = freePort(t)
	s.writeKnownHosts(t, s.hostKey.PublicKey())
	s.config = filepath.Join(dir, "sshd_config")
	writeFile(t, s.config, fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
`, s.port, hostKeyFile, authorized))
	s.start()
	t.Cleanup(s.kill)
	return s
}

// start runs sshd and waits until it accepts connections.
func (s *sshServer) start() {
	t := s.t
	s.cmd = exec.Command(s.bin, "-D", "-e", "-f", s.config)
	s.cmd.Stderr = testLogWriter{t}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", s.addr())
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s: %v", s.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops sshd and every session process it forked (its process
// group), as a crashed server or a cut link would.
func (s *sshServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	// sshd puts each connection in a session of its own (setsid), so
	// its descendants are found through /proc, not its process group.
	for _, pid := range descendants(s.cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

func (s *sshServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// url is the destination URL of directory sub of the server's root.
func (s *sshServer) url(sub string) string {
	return fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", s.user, s.port, filepath.Join(s.root, sub))
}

// writeKnownHosts makes key the one host key the client knows.
func (s *sshServer) writeKnownHosts(t *testing.T, key ssh.PublicKey) {
	writeFile(t, s.knownHostsFile, knownhosts.Line([]string{knownhosts.Normalize(s.addr())}, key)+"\n")
}

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

// writeEd25519 writes a new OpenSSH private key to path and returns it.
func writeEd25519(t *testing.T, path string) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testLogWriter sends sshd's log to the test's.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log("sshd: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// descendants lists the processes below pid (children first found, by
// their parent in /proc/PID/stat).
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ")".
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); i > 0 && len(f) > 1 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				parent[p] = pp
			}
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}
