package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSFTPContract runs the Destination contract on a real OpenSSH server.
func TestSFTPContract(t *testing.T) {
	t.Parallel()
	srv := startSSHD(t)
	testDestinationContract(t, func(t *testing.T) destFixture {
		sub := "c-" + randomSuffix()
		d := srv.dest(t, sub, "app")
		dir := filepath.Join(srv.root, sub, "testhost", "app")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dirFixture(d, dir, filepath.Join(srv.root, "outside-"+randomSuffix()))
	})
}

// TestSFTPCredentialsDirectory: with $CREDENTIALS_DIRECTORY set (the unit's
// LoadCredential=), the key and known_hosts come from there, not from the
// configured paths.
func TestSFTPCredentialsDirectory(t *testing.T) {
	// Not parallel: it sets CREDENTIALS_DIRECTORY (t.Setenv), a process-wide variable.
	srv := startSSHD(t)
	creds := t.TempDir()
	for name, from := range map[string]string{"sftp-key": srv.keyFile, "sftp-known-hosts": srv.knownHostsFile} {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(creds, name), string(data))
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	d := srv.dest(t, "creds", "app")
	d.keyFile, d.knownHosts = "/nonexistent/key", "/nonexistent/known_hosts"
	if _, err := d.Prepare(t.Context()); err != nil {
		t.Fatalf("Prepare with the credentials directory: %v", err)
	}
	d.Close()
	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir())
	if _, err := d.Prepare(t.Context()); err == nil || !strings.Contains(err.Error(), "credential sftp-key") {
		t.Fatalf("Prepare without credentials = %v, want the missing key named", err)
	}
}
