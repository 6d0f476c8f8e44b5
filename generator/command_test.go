package generator

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/testtool"
)

// Tests of the per-service command backup-NAME: the plain hosts' script
// run for real with bash against the example's myapp config (relocated
// into a temp dir), a recording systemctl/journalctl stand-in first on
// PATH and the real backup-worker; the NixOS package evaluated with the
// shared harness.

// commandWorld is a temp host for the example's myapp service.
type commandWorld struct {
	t              *testing.T
	root, sys, cmd string
	config, dest   string
	env            []string
}

func newCommandWorld(t *testing.T) *commandWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the per-service command's test needs root")
		}
		t.Skip("!!! needs root (the worker's state directory must be root's): this check did NOT run")
	}
	w := &commandWorld{t: t, root: t.TempDir()}
	w.sys = filepath.Join(w.root, "systemd")
	bin := filepath.Join(w.root, "fakebin")
	for _, d := range []string{w.sys, bin, filepath.Join(w.root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"systemctl", "journalctl"} {
		data, err := os.ReadFile(filepath.Join("testdata", "command-bin", tool))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, tool), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.config = filepath.Join(w.root, "etc", "myapp.json")
	w.dest = filepath.Join(w.root, "backups", "myapp")
	w.writeConfig()
	worker := workerBinary(t)
	spec, err := os.ReadFile(filepath.Join(projectRoot(t), "examples", "homelab", "backup.toml"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate("backup.toml", spec, Options{WorkerPath: worker, ConfigDir: filepath.Dir(w.config)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == "usr/local/bin/backup-myapp" {
			if !f.Executable {
				t.Error("backup-myapp is not marked executable")
			}
			w.cmd = filepath.Join(w.root, "backup-myapp")
			if err := os.WriteFile(w.cmd, f.Content, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if w.cmd == "" {
		t.Fatal("no usr/local/bin/backup-myapp generated")
	}
	w.env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAKE_SYSTEMD_DIR="+w.sys,
		"FAKE_UNIT_WORKER="+worker, "FAKE_UNIT_CONFIG="+w.config, "CREDENTIALS_DIRECTORY=/nonexistent")
	return w
}

// writeConfig writes the example's myapp.json with its paths moved under
// the temp root; every other key stays as generated.
func (w *commandWorld) writeConfig() {
	data, err := os.ReadFile(filepath.Join(projectRoot(w.t), "examples", "homelab", "backup", "etc", "backupgen", "myapp.json"))
	if err != nil {
		w.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		w.t.Fatal(err)
	}
	var dataPaths []string
	for _, p := range m["dataPaths"].([]any) {
		d := filepath.Join(w.root, p.(string))
		dataPaths = append(dataPaths, d)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "file.txt"), []byte("content of "+p.(string)+"\n"), 0o644)
	}
	m["dataPaths"] = dataPaths
	m["user"], m["group"] = "root", "root"
	b := m["backup"].(map[string]any)
	usb := filepath.Join(w.root, "mnt", "myapp")
	b["paths"] = []string{w.dest, usb}
	b["optionalPaths"] = []string{usb}
	b["stateDirectory"] = filepath.Join(w.root, "state", "myapp")
	b["signingKey"] = filepath.Join(w.root, "keys", "signing.key")
	// The example turns drills on: their directories under the temp root.
	drill := b["drill"].(map[string]any)
	drill["scratchDirectory"] = filepath.Join(w.root, "drill")
	drill["manifestDirectory"] = filepath.Join(w.root, "manifests")
	out, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(w.config, out, 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// run runs the command with bash, as a user would.
func (w *commandWorld) run(args ...string) (int, string, string) {
	w.t.Helper()
	return w.runAs(nil, args...)
}

func (w *commandWorld) runAs(prefix []string, args ...string) (int, string, string) {
	w.t.Helper()
	argv := append(append(append([]string{}, prefix...), "bash", w.cmd), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = w.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	w.t.Logf("backup-myapp %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func (w *commandWorld) log(name string) string {
	b, _ := os.ReadFile(filepath.Join(w.sys, name))
	return string(b)
}

// TestCommandOperatorsDay: status, run (systemd runs the backup; the
// command follows the journal), list, verify, prune, restore, run
// --dry-run; bad input and a non-root caller are told what to do.
func TestCommandOperatorsDay(t *testing.T) {
	w := newCommandWorld(t)
	os.MkdirAll(w.dest, 0o750)
	os.WriteFile(filepath.Join(w.sys, "docker-myapp.service.state"), []byte("active\n"), 0o644)

	code, out, _ := w.run()
	if code != 0 || !strings.Contains(out, "last run   no run recorded") || !strings.Contains(out, "next run   ") {
		t.Fatalf("status before any run: exit %d", code)
	}

	code, out, _ = w.run("run")
	if code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	for _, want := range []string{`msg="backup finished"`, "myapp-backup.service: result success, exit status 0", "last run   success"} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q", want)
		}
	}
	calls := w.log("calls.log")
	if n := strings.Count(calls, "start -- myapp-backup.service"); n != 1 {
		t.Errorf("the unit was started %d times, want once through systemctl:\n%s", n, calls)
	}
	if !strings.Contains(calls, "stop -- docker-myapp.service") || !strings.Contains(calls, "start -- docker-myapp.service") {
		t.Errorf("the unit's worker did not stop and start the application:\n%s", calls)
	}
	if j := w.log("journalctl.log"); !regexp.MustCompile(`^--follow --output=cat --unit=myapp-backup\.service --since=@[0-9]+\n$`).MatchString(j) {
		t.Errorf("journalctl called as %q", j)
	}

	code, out, _ = w.run("list")
	archives, _ := filepath.Glob(filepath.Join(w.dest, "myapp-*.tar.gz"))
	if code != 0 || len(archives) != 1 || !strings.Contains(out, filepath.Base(archives[0])) {
		t.Fatalf("list: exit %d, archives %v", code, archives)
	}
	if code, out, _ = w.run("verify"); code != 0 || !strings.Contains(out, filepath.Base(archives[0])) {
		t.Errorf("verify: exit %d", code)
	}
	if code, _, errOut := w.run("prune"); code != 2 || !strings.Contains(errOut, "say --dry-run") {
		t.Errorf("prune without a flag: exit %d, want 2 and a hint", code)
	}
	if code, out, _ = w.run("prune", "--dry-run"); code != 0 || !strings.Contains(out, "1 kept, 0 would remove") {
		t.Errorf("prune --dry-run: exit %d", code)
	}
	target := filepath.Join(w.root, "restored")
	if code, _, _ = w.run("restore", "--archive", archives[0], "--target", target); code != 0 {
		t.Fatalf("restore: exit %d", code)
	}
	var restored []string
	filepath.WalkDir(target, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "file.txt" {
			restored = append(restored, p)
		}
		return nil
	})
	if len(restored) != 2 {
		t.Errorf("restored files %v, want the two data paths' file.txt", restored)
	}
	// 5. drill: the newest archive restored aside and compared with the
	// manifest the run wrote; the application is not touched.
	before := w.log("calls.log")
	if code, out, _ = w.run("drill"); code != 0 || !strings.Contains(out, w.dest+": ok: "+filepath.Base(archives[0])) || !strings.Contains(out, "mnt/myapp: skipped") {
		t.Errorf("drill: exit %d", code)
	}
	if w.log("calls.log") != before {
		t.Error("the drill called systemctl")
	}
	if code, out, _ = w.run("run", "--dry-run"); code != 0 || !strings.Contains(out, "dry run of myapp") {
		t.Errorf("run --dry-run: exit %d", code)
	}
	if n := strings.Count(w.log("calls.log"), "start -- myapp-backup.service"); n != 1 {
		t.Error("a command other than run started the unit")
	}
	if code, _, errOut := w.run("frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d", code)
	}
}

// TestCommandRunFailure: a run that fails is followed to its end and its
// exit status is the command's.
func TestCommandRunFailure(t *testing.T) {
	w := newCommandWorld(t)
	// No destination can be created under a file: the run fails in
	// preflight, before anything is stopped.
	os.MkdirAll(filepath.Dir(w.dest), 0o755)
	os.WriteFile(filepath.Dir(w.dest)+"/myapp", []byte("a file"), 0o644)
	code, out, _ := w.run("run")
	if code != 1 {
		t.Fatalf("exit %d, want the unit's 1", code)
	}
	for _, want := range []string{"preflight failed", "myapp-backup.service: result exit-code, exit status 1", "last run   failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestCommandNeedsRoot: as another user every command but help stops at
// once with a message naming sudo; nothing is started.
func TestCommandNeedsRoot(t *testing.T) {
	w := newCommandWorld(t)
	setpriv := testtool.Require(t, "setpriv", "util-linux")
	os.Chmod(filepath.Dir(w.root), 0o755) // t.TempDir makes its parent 0700
	os.Chmod(w.root, 0o755)
	os.Chmod(w.cmd, 0o755)
	nobody := []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, args := range [][]string{{}, {"status"}, {"list"}, {"run"}, {"prune", "--dry-run"}, {"restore", "--archive", "x"}, {"drill"}} {
		verb := "status"
		if len(args) > 0 {
			verb = args[0]
		}
		code, _, errOut := w.runAs(nobody, args...)
		if code != 2 || !strings.Contains(errOut, "needs root") || !strings.Contains(errOut, "sudo backup-myapp "+verb) {
			t.Errorf("%q as nobody: exit %d, %q", args, code, errOut)
		}
	}
	if code, out, _ := w.runAs(nobody, "help"); code != 0 || !strings.Contains(out, "Usage: backup-myapp") {
		t.Errorf("help as nobody: exit %d", code)
	}
	if calls := w.log("calls.log"); calls != "" {
		t.Errorf("systemctl called: %q", calls)
	}
}

// TestCommandShellcheck: the generated script passes shellcheck.
func TestCommandShellcheck(t *testing.T) {
	sc := testtool.Require(t, "shellcheck", "shellcheck")
	p := filepath.Join(projectRoot(t), filepath.FromSlash(exampleOut), "usr", "local", "bin", "backup-vaultwarden")
	if out, err := exec.Command(sc, p).CombinedOutput(); err != nil {
		t.Errorf("shellcheck %s: %v\n%s", p, err, out)
	}
}

// TestCommandQuotesPaths: a worker path or config folder with quotes,
// $(…) and spaces reaches the script as data, one word each.
func TestCommandQuotesPaths(t *testing.T) {
	root := t.TempDir()
	pwned := filepath.Join(root, "pwned")
	worker := "/opt/it's $(touch " + pwned + ")/`id` \"w\"/backup-worker"
	s := ServiceModel{Name: "app"}
	script, err := renderCommand(s, worker, "/etc/b g/$HOME/app.json")
	if err != nil {
		t.Fatal(err)
	}
	prologue := string(script[:bytes.Index(script, []byte("# The per-service command"))])
	out, err := exec.Command("bash", "-c", prologue+`printf '%s\n' "$name" "$worker" "$config"`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "app\n" + worker + "\n/etc/b g/$HOME/app.json\n"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Error("a command in the worker path ran")
	}
	if _, err := renderCommand(s, "/opt/x\n/backup-worker", "/etc/app.json"); err == nil {
		t.Error("a newline in the worker path was accepted")
	}
}

// TestNixOSCommand: the module puts backup-NAME in
// environment.systemPackages for every service, built with
// writeShellApplication from the same body as the plain script, with the
// unit's own worker and config store paths, shell-quoted.
func TestNixOSCommand(t *testing.T) {
	r := nixosEval(t, exampleDefault(t), exampleHost(t, ""))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	pkgs, _ := r.get("environment", "systemPackages").([]any)
	body, err := commandBody()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"immich", "myapp", "vaultwarden"} {
		var path string
		for _, p := range pkgs {
			if s, _ := p.(string); strings.HasSuffix(s, "-backup-"+name) {
				path = s
			}
		}
		if path == "" {
			t.Errorf("backup-%s not in environment.systemPackages: %v", name, pkgs)
			continue
		}
		file := filepath.Join(r.files, strings.TrimPrefix(path, "/nix/store/"), "bin", "backup-"+name)
		text, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("backup-%s: %v", name, err)
			continue
		}
		m := configArgRE.FindStringSubmatch(r.unit(name + "-backup.service"))
		if m == nil {
			t.Fatalf("no --config in %s-backup.service", name)
		}
		exe := regexp.MustCompile(`ExecStart=(\S+) run`).FindStringSubmatch(r.unit(name + "-backup.service"))
		for _, want := range []string{"name='" + name + "'\n", "worker='" + exe[1] + "'\n", "config='" + m[1] + "'\n"} {
			if !strings.Contains(string(text), want) {
				t.Errorf("backup-%s lacks %q:\n%s", name, want, text)
			}
		}
		if !bytes.HasSuffix(text, body) {
			t.Errorf("backup-%s does not end with the body of backup-command.sh", name)
		}
		if out, err := exec.Command("bash", "-n", file).CombinedOutput(); err != nil {
			t.Errorf("bash -n backup-%s: %v\n%s", name, err, out)
		}
	}
}

// TestCommandRunInterrupted: Ctrl-C (SIGINT to the foreground process
// group) stops following and says the backup goes on in the unit.
func TestCommandRunInterrupted(t *testing.T) {
	w := newCommandWorld(t)
	slow := filepath.Join(w.root, "slow-worker")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\necho working\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", w.cmd, "run")
	cmd.Env = append(w.env, "FAKE_UNIT_WORKER="+slow)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the unit "runs" (the journal has its first line).
	for !strings.Contains(w.log("journal"), "working") {
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	err := cmd.Wait()
	t.Logf("%v\n%s%s", err, stdout.String(), stderr.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("exit %v, want 130", err)
	}
	if !strings.Contains(stderr.String(), "stopped following; the backup goes on in myapp-backup.service") {
		t.Error("no message that the backup goes on")
	}
}
