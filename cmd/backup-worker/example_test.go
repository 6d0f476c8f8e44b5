package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
)

// TestExampleBackup runs the worker with the config that backupgen
// generated for the example's myapp service (examples/homelab/backup/etc/backupgen/myapp.json),
// every absolute path moved under a scratch root: a real backup of both data
// paths into both destinations, checked with GNU tar.
func TestExampleBackup(t *testing.T) {
	t.Parallel() // its own temp dirs and child environment (PATH, FAKE_SYSTEMCTL_DIR)
	cfg, err := config.Load("../../examples/homelab/backup/etc/backupgen/myapp.json")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	under := func(p string) string { return filepath.Join(root, p) }
	for i, p := range cfg.DataPaths {
		cfg.DataPaths[i] = under(p)
	}
	for i, p := range cfg.Backup.Paths {
		cfg.Backup.Paths[i] = under(p)
	}
	for i, p := range cfg.Backup.OptionalPaths {
		cfg.Backup.OptionalPaths[i] = under(p)
	}
	cfg.Backup.StateDirectory = under(cfg.Backup.StateDirectory)
	cfg.Backup.SigningKey = under(cfg.Backup.SigningKeyOrDefault())
	if cfg.Backup.Drill == nil {
		t.Fatal("the example no longer turns drills on")
	}
	cfg.Backup.Drill.ScratchDirectory = under(cfg.Backup.Drill.ScratchDirectoryOrDefault())
	cfg.Backup.Drill.ManifestDirectory = under(cfg.Backup.Drill.ManifestDirectoryOrDefault(cfg.Name))
	// The example's myapp user does not exist on a test machine; the
	// current ids also work unprivileged (the Nix build sandbox).
	cfg.User, cfg.Group = strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	if len(cfg.DataPaths) != 2 || len(cfg.Backup.Paths) != 2 || len(cfg.ServiceName) != 1 {
		t.Fatalf("the example changed shape: %+v", cfg)
	}
	content := map[string]string{
		"app.ini":          "[server]\nport = 8080\n",
		"nested/state.db":  strings.Repeat("page ", 50000),
		"nested/empty/":    "",
		"ünïcødé name.txt": "unicode\n",
	}
	for _, dp := range cfg.DataPaths {
		for name, body := range content {
			p := filepath.Join(dp, name)
			if strings.HasSuffix(name, "/") {
				os.MkdirAll(p, 0o750)
				continue
			}
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The optional destination (/mnt/backup/myapp) is skipped when missing,
	// or when it is an empty directory outside any mount (a bare mount
	// point). Here the disk is "mounted": its directory holds a file, as a
	// used disk does, so it gets a copy too.
	for _, p := range cfg.Backup.OptionalPaths {
		os.MkdirAll(p, 0o750)
		os.WriteFile(filepath.Join(p, "README"), []byte("backup disk\n"), 0o644)
	}
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := under("myapp.json")
	os.WriteFile(cfgFile, b, 0o644)

	bin := buildWorker(t)
	fakeBin, sysDir := under("fakebin"), under("systemd")
	os.MkdirAll(fakeBin, 0o755)
	os.MkdirAll(sysDir, 0o755)
	script, _ := os.ReadFile("../../internal/worker/testdata/systemctl")
	os.WriteFile(filepath.Join(fakeBin, "systemctl"), script, 0o755)
	unit := cfg.ServiceName[0]
	os.WriteFile(filepath.Join(sysDir, unit+".state"), []byte("active\n"), 0o644)

	cmd := exec.Command(bin, "run", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "PATH="+fakeBin+":"+os.Getenv("PATH"), "FAKE_SYSTEMCTL_DIR="+sysDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("backup-worker run: %v\n%s", err, stderr.String())
	}
	// The example's drill: both copies restore identical to the manifest.
	drill := exec.Command(bin, "drill", "--config", cfgFile)
	drill.Env = cmd.Env
	if out, err := drill.CombinedOutput(); err != nil || strings.Count(string(out), ": ok: myapp-") != 2 {
		t.Errorf("backup-worker drill: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(sysDir, "calls.log"))
	if !strings.Contains(string(calls), "stop "+unit+"\nstart "+unit+"\n") {
		t.Errorf("systemctl calls:\n%s", calls)
	}
	if state, _ := os.ReadFile(filepath.Join(sysDir, unit+".state")); strings.TrimSpace(string(state)) != "active" {
		t.Errorf("unit ends %q, want active", state)
	}
	for _, dest := range cfg.Backup.Paths {
		archives, _ := filepath.Glob(filepath.Join(dest, "myapp-*Z.tar.gz"))
		if len(archives) != 1 {
			t.Fatalf("%s: archives %v", dest, archives)
		}
		fi, _ := os.Stat(archives[0])
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, want 0640", archives[0], fi.Mode().Perm())
		}
		check := exec.Command("sha256sum", "-c", filepath.Base(archives[0])+".sha256")
		check.Dir = dest
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
		extracted := t.TempDir()
		if out, err := exec.Command("tar", "-xzf", archives[0], "-C", extracted).CombinedOutput(); err != nil {
			t.Fatalf("GNU tar: %v\n%s", err, out)
		}
		for _, dp := range cfg.DataPaths {
			for name, body := range content {
				p := filepath.Join(extracted, dp, name)
				if strings.HasSuffix(name, "/") {
					if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
						t.Errorf("empty dir %s missing", p)
					}
					continue
				}
				got, err := os.ReadFile(p)
				if err != nil || string(got) != body {
					t.Errorf("%s: %v, content ok=%v", p, err, string(got) == body)
				}
			}
		}
	}
}
