package testtool

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
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

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer is a real OpenSSH sshd started by a test on 127.0.0.1, with a
// fresh host key, one authorized client key, and the known_hosts and key
// files a client needs. One copy serves every package's tests.
type SSHServer struct {
	bin, config    string
	Port           int
	User           string     // the account it logs in (the test's user)
	Root           string     // a directory for the test's remote files (on this machine)
	KeyFile        string     // the client's private key
	KnownHostsFile string     // the server's host key, as a client knows it
	HostKey        ssh.Signer // the server's host key
	cmd            *exec.Cmd
	t              testing.TB
}

// StartSSHD starts sshd -D -e -f CONFIG and waits until it answers; it is
// killed when the test ends. Without sshd the test skips (fails in CI).
func StartSSHD(t testing.TB) *SSHServer {
	t.Helper()
	bin := Require(t, "sshd", "openssh-server")
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs // sshd refuses to re-exec itself from a relative path
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &SSHServer{bin: bin, User: u.Username, Root: filepath.Join(dir, "remote"), t: t,
		KeyFile: filepath.Join(dir, "id_ed25519"), KnownHostsFile: filepath.Join(dir, "known_hosts")}
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Privilege separation directory sshd insists on.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	s.HostKey = WriteEd25519Key(t, hostKeyFile)
	client := WriteEd25519Key(t, s.KeyFile)
	authorized := filepath.Join(dir, "authorized_keys")
	writeFile(t, authorized, string(ssh.MarshalAuthorizedKey(client.PublicKey())))
	s.Port = FreePort(t)
	s.WriteKnownHosts(s.HostKey.PublicKey())
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
`, s.Port, hostKeyFile, authorized))
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Start runs sshd and waits until it accepts connections.
func (s *SSHServer) Start() {
	t := s.t
	s.cmd = exec.Command(s.bin, "-D", "-e", "-f", s.config)
	s.cmd.Stderr = logWriter{t}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s: %v", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops sshd and every session process it forked, as a crashed
// server or a cut link would.
func (s *SSHServer) Kill() {
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

// Addr is host:port.
func (s *SSHServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is the sftp:// destination URL of directory sub of Root.
func (s *SSHServer) URL(sub string) string {
	return fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", s.User, s.Port, filepath.Join(s.Root, sub))
}

// WriteKnownHosts makes key the one host key KnownHostsFile knows.
func (s *SSHServer) WriteKnownHosts(key ssh.PublicKey) {
	writeFile(s.t, s.KnownHostsFile, knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, key)+"\n")
}

// WriteEd25519Key writes a new unencrypted OpenSSH private key to path and
// returns it.
func WriteEd25519Key(t testing.TB, path string) ssh.Signer {
	t.Helper()
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

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logWriter sends sshd's log to the test's.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log("sshd: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// descendants lists the processes below pid (by their parent in
// /proc/PID/stat).
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
