package generator

// Tests that run the generated files through the real tools: Nix parses and
// evaluates them, systemd verifies the units and tmpfiles creates the
// directories. A missing tool skips loudly here and fails in CI.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/backupgen/backupgen/internal/testtool"
)

// validCases renders every valid golden case into a temporary folder.
func validCases(t *testing.T, opts Options) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range caseDirs(t) {
		data, _ := os.ReadFile(filepath.Join(dir, "spec.toml"))
		files, err := Generate("spec.toml", data, opts)
		if err != nil {
			continue
		}
		tmp := filepath.Join(t.TempDir(), filepath.Base(dir))
		writeTreeForTest(t, tmp, files)
		out[filepath.Base(dir)] = tmp
	}
	return out
}

func TestNixParse(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	var files []string
	for _, root := range append([]string{"..", "testdata"}, mapValues(validCases(t, goldenOptions))...) {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".nix") {
				files = append(files, p)
			}
			return nil
		})
	}
	if len(files) < 10 {
		t.Fatalf("found only %d .nix files", len(files))
	}
	for _, f := range files {
		out, err := exec.Command(nix, "--parse", f).CombinedOutput()
		if err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, out)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func ruleLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestHelpersEval evaluates the helper functions on sample arguments and
// compares the JSON with testdata/helpers.golden.json (-update rewrites it).
func TestHelpersEval(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	outDir := validCases(t, goldenOptions)["basic"]
	expr := fmt.Sprintf(`let
  h = import %s { worker = "/nix/store/00000000000000000000000000000000-backup-worker"; writeText = name: text: "/nix/store/fake-" + name; };
  args = {
    name = "myapp";
    serviceName = "docker-myapp.service";
    dataPaths = [ "/var/lib/myapp/config" "/var/lib/myapp/data" ];
    user = "myapp";
    group = "users";
    backupConfig = {
      enable = true;
      paths = [ "/var/backups/myapp" "/mnt/backup 100%%/myapp" ];
      optionalPaths = [ "/mnt/backup 100%%/myapp" ];
      schedule = "0 2 * * 1-5";
      format = "tar.xz";
      maxRetentionDays = 30;
      retentionSnapshots = 7;
    };
  };
  # The seed's minimal backupConfig: only the documented keys.
  seedArgs = args // { backupConfig = { enable = true; paths = [ "/var/backups/myapp" ]; schedule = "0 0 * * *"; format = "tar.gz"; maxRetentionDays = 0; retentionSnapshots = 7; }; };
in {
  service = h.mkBackupService args;
  timer = h.mkBackupTimer { inherit (args) name backupConfig; };
  directories = h.mkBackupDirectories { inherit (args) backupConfig user group; };
  workerConfig = h.mkWorkerConfig args;
  seedService = h.mkBackupService seedArgs;
  seedTimer = h.mkBackupTimer { inherit (seedArgs) name backupConfig; };
  cron = map h.cronToOnCalendar [ "@weekly" "0 3 1 * 0" "Mon *-*-* 02:00" ];
}`, nixString(filepath.Join(outDir, "lib.nix")))
	cmd := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, stderr.String())
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	golden := filepath.Join("testdata", "helpers.golden.json")
	if *update {
		if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
		t.Errorf("helpers mismatch (-want +got):\n%s", diff)
	}
}

// fakeWorker makes an executable for ExecStart=, which systemd-analyze
// verify requires to exist.
func fakeWorker(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup-worker")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSystemdVerify runs systemd-analyze verify on every generated unit.
func TestSystemdVerify(t *testing.T) {
	sa := testtool.Require(t, "systemd-analyze", "systemd")
	opts := Options{WorkerPath: fakeWorker(t), ConfigDir: "/etc/backupgen"}
	for name, outDir := range validCases(t, opts) {
		unitDir := filepath.Join(outDir, "etc/systemd/system")
		units, _ := filepath.Glob(filepath.Join(unitDir, "*"))
		if len(units) < 4 {
			t.Fatalf("%s: only %d units", name, len(units))
		}
		args := append([]string{"verify", "--man=no", "--recursive-errors=no"}, units...)
		cmd := exec.Command(sa, args...)
		cmd.Dir = unitDir
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("%s: systemd-analyze verify: %v\n%s", name, err, out)
		}
	}
}

// TestTmpfilesCreatesExactPaths runs the real systemd-tmpfiles on the
// generated rules under a scratch root and checks that each destination is
// created at exactly the path the spec names: quoting keeps spaces, quotes,
// backslashes and % literal.
func TestTmpfilesCreatesExactPaths(t *testing.T) {
	tmpfiles := testtool.Require(t, "systemd-tmpfiles", "systemd")
	outDir := validCases(t, goldenOptions)["hostile"]
	data, _ := os.ReadFile("testdata/hostile/spec.toml")
	spec, err := Validate("spec.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := buildModel(spec, goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Services {
		root := t.TempDir()
		conf := filepath.Join(outDir, "etc/tmpfiles.d", s.UnitBase()+".conf")
		out, err := exec.Command(tmpfiles, "--create", "--root="+root, conf).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-tmpfiles --create: %v\n%s", err, out)
		}
		for _, p := range s.Backup.OptionalPaths {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s: optional destination %q was created", s.Name, p)
			}
		}
		for _, p := range s.RequiredDestinations() {
			fi, err := os.Stat(filepath.Join(root, p))
			if err != nil {
				t.Errorf("%s: destination %q not created: %v", s.Name, p, err)
				continue
			}
			if fi.Mode().Perm() != 0o750 {
				t.Errorf("%s: %q has mode %v, want 0750", s.Name, p, fi.Mode().Perm())
			}
		}
	}
}

// TestTmpfilesRulesCannotBeInjected renders the plain tmpfiles.d file for
// hostile accounts and destinations, bypassing spec validation, and feeds
// it to the real systemd-tmpfiles: a user with a space stays one field
// (the error names the whole name, not a group "user"), a destination with
// an embedded newline is refused at render time instead of adding an
// `r /etc/important` line, and an optional destination is never created.
func TestTmpfilesRulesCannotBeInjected(t *testing.T) {
	tmpfiles := testtool.Require(t, "systemd-tmpfiles", "systemd")
	svc := ServiceModel{Name: "app", User: "my user", Group: "root", Backup: BackupModel{
		Paths:         []string{"/var/backups/app", "/mnt/usb/app"},
		OptionalPaths: []string{"/mnt/usb/app"},
	}}
	out, err := execute("tmpfiles.tmpl", serviceData{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	conf := filepath.Join(t.TempDir(), "app.conf")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	msg, _ := exec.Command(tmpfiles, "--create", "--root="+root, conf).CombinedOutput()
	if !strings.Contains(string(msg), "user 'my user'") {
		t.Errorf("a user with a space did not stay one field:\n%s\n%s", out, msg)
	}
	if _, err := os.Lstat(filepath.Join(root, "mnt/usb/app")); err == nil {
		t.Errorf("optional destination created:\n%s", out)
	}

	// The reproduction: rendered raw, as before, the newline starts an
	// `r` line and the real systemd-tmpfiles removes the file.
	important := filepath.Join(root, "etc", "important")
	os.MkdirAll(filepath.Dir(important), 0o755)
	os.WriteFile(important, []byte("keep\n"), 0o644)
	raw := filepath.Join(t.TempDir(), "raw.conf")
	os.WriteFile(raw, []byte("d \"/var/backups/x\" 0750 root root -\nr /etc/important\nd \"/y\" 0750 root root -\n"), 0o644)
	exec.Command(tmpfiles, "--create", "--remove", "--root="+root, raw).Run()
	if _, err := os.Stat(important); err == nil {
		t.Fatal("the raw reproduction no longer removes the file; this test cannot tell")
	}
	svc.User = "root"
	svc.Backup = BackupModel{Paths: []string{"/var/backups/x\" 0750 root root -\nr /etc/important\nd \"/y"}}
	if out, err := execute("tmpfiles.tmpl", serviceData{Service: svc}); err == nil {
		t.Errorf("a destination with a newline was rendered:\n%s", out)
	}
	svc.Backup = BackupModel{Paths: []string{"/var/backups/app"}}
	svc.DataPaths = []string{"/srv/x\nExecStartPre=/bin/touch /pwned"}
	if out, err := execute("service.tmpl", serviceData{Service: svc, WorkerPath: "/w", ConfigPath: "/c"}); err == nil {
		t.Errorf("a data path with a newline was rendered into the unit:\n%s", out)
	}
	// Every other value of the units, whatever validation says.
	inject := "x\nExecStartPre=/bin/touch /pwned"
	for _, mutate := range []func(s *ServiceModel){
		func(s *ServiceModel) { s.Description = inject },
		func(s *ServiceModel) { s.Name = inject },
		func(s *ServiceModel) { s.Backup.OnFailure = []string{inject} },
		func(s *ServiceModel) { s.Backup.Schedule = inject },
		func(s *ServiceModel) { s.OnCalendar = []string{inject} },
	} {
		s := ServiceModel{Name: "app", Description: "app", User: "root", Group: "root", DataPaths: []string{"/srv/app"},
			OnCalendar: []string{"daily"}, Backup: BackupModel{Paths: []string{"/var/backups/app"}, Schedule: "daily"}}
		mutate(&s)
		for _, tmpl := range []string{"service.tmpl", "timer.tmpl"} {
			out, err := execute(tmpl, serviceData{Service: s, WorkerPath: "/w", ConfigPath: "/c"})
			if err == nil && strings.Contains(string(out), "\nExecStartPre=") {
				t.Errorf("%s: injected:\n%s", tmpl, out)
			}
		}
	}
}
