package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadCredential: $CREDENTIALS_DIRECTORY/NAME (LoadCredential=) wins
// over the configured path; errors never carry a secret.
func TestReadCredential(t *testing.T) {
	// Not parallel: it sets CREDENTIALS_DIRECTORY (t.Setenv), a process-wide variable.
	dir := t.TempDir()
	fallback := filepath.Join(dir, "fallback.env")
	credDir := filepath.Join(dir, "creds")
	os.Mkdir(credDir, 0o700)
	os.WriteFile(fallback, []byte("AWS_ACCESS_KEY_ID=fromfile\nAWS_SECRET_ACCESS_KEY=s1\n"), 0o600)
	os.WriteFile(filepath.Join(credDir, "s3-credentials"), []byte("AWS_ACCESS_KEY_ID='fromsystemd'\nAWS_SECRET_ACCESS_KEY=s2\nAWS_SESSION_TOKEN=tok\n"), 0o600)

	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if b, err := readCredential("s3-credentials", fallback); err != nil || !strings.Contains(string(b), "fromfile") {
		t.Fatalf("without CREDENTIALS_DIRECTORY: %q, %v", b, err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)
	b, err := readCredential("s3-credentials", fallback)
	if err != nil || !strings.Contains(string(b), "fromsystemd") {
		t.Fatalf("with CREDENTIALS_DIRECTORY: %q, %v", b, err)
	}
	env, err := parseEnvFile(b)
	if err != nil || env["AWS_ACCESS_KEY_ID"] != "fromsystemd" || env["AWS_SESSION_TOKEN"] != "tok" {
		t.Fatalf("parsed %v, %v", env, err)
	}
	if _, err := parseEnvFile([]byte("AWS_SECRET_ACCESS_KEY=ok\nsupersecretvalue\n")); err == nil || strings.Contains(err.Error(), "supersecret") {
		t.Errorf("malformed line: %v (must fail without quoting the line)", err)
	}
	os.WriteFile(filepath.Join(credDir, "s3-credentials"), []byte("AWS_ACCESS_KEY_ID=id-only-secretish\n"), 0o600)
	if _, err := s3Credentials(fallback); err == nil || strings.Contains(err.Error(), "secretish") {
		t.Errorf("incomplete credentials: %v", err)
	}
}
