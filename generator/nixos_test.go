package generator

// Tests that evaluate the generated NixOS modules with the real NixOS
// module system: the shared harness ../shared/nixos-eval (real nixpkgs lib,
// the real systemd option files, systemd-analyze verify, systemd-tmpfiles).
// They skip loudly without the harness or nix-instantiate, and fail in CI.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// projectRoot is the folder holding go.mod.
func projectRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// evalResult is the harness's output.
type evalResult struct {
	out    map[string]any
	rc     int
	stderr string
	files  string // the --files-dir folder
}

// nixosEval runs the shared NixOS evaluation harness on modules + host (the
// last argument) with --files-dir, and returns its JSON, exit code and
// stderr.
func nixosEval(t *testing.T, args ...string) evalResult {
	t.Helper()
	harness := harnessPath(t)
	files := t.TempDir()
	cmd := exec.Command(harness, append([]string{"--compact", "--files-dir", files}, args...)...)
	// Evaluation only: a private store, so neither root nor a daemon is needed.
	cmd.Env = append(os.Environ(), "NIX_REMOTE=local?root="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	rc := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: %v", harness, err)
		}
		rc = ee.ExitCode()
	}
	switch rc {
	case 69:
		msg := "!!! " + strings.TrimSpace(stderr.String()) + ": this check did NOT run"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	case 64, 65:
		t.Fatalf("nixos-eval harness: exit %d\n%s", rc, stderr.String())
	}
	r := evalResult{rc: rc, stderr: stderr.String(), files: files}
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &r.out); err != nil {
			t.Fatalf("nixos-eval JSON: %v", err)
		}
	}
	return r
}

// harnessPath finds eval-module.sh (NIXOS_EVAL overrides) and
// nix-instantiate, or skips loudly; with CI set it fails instead.
func harnessPath(t *testing.T) string {
	t.Helper()
	harness := os.Getenv("NIXOS_EVAL")
	if harness == "" {
		// Beside the project root; a worktree is one level deeper.
		for _, up := range []string{"..", "../.."} {
			harness = filepath.Join(projectRoot(t), up, "shared", "nixos-eval", "eval-module.sh")
			if _, err := os.Stat(harness); err == nil {
				break
			}
		}
	}
	if _, err := os.Stat(harness); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("NixOS evaluation harness not found (%v); set NIXOS_EVAL", err)
		}
		t.Skipf("!!! NixOS evaluation harness not found (%v): this check did NOT run; set NIXOS_EVAL", err)
	}
	testtool.Require(t, "nix-instantiate", "nix-bin")
	return harness
}

// get walks the JSON by keys; nil when a key is missing.
func (r evalResult) get(keys ...string) any {
	var v any = r.out
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func (r evalResult) unit(name string) string {
	s, _ := r.get("units", name).(string)
	return s
}

var configArgRE = regexp.MustCompile(`ExecStart=\S+ run --config (/nix/store/\S+)`)

// workerConfigFile is the file the Nix build writes for a unit's --config
// (the check-config wrapper's output), in the --files-dir folder.
func (r evalResult) workerConfigFile(t *testing.T, unit string) string {
	t.Helper()
	m := configArgRE.FindStringSubmatch(r.unit(unit))
	if m == nil {
		t.Fatalf("no ExecStart --config in %s:\n%s", unit, r.unit(unit))
	}
	return filepath.Join(r.files, strings.TrimPrefix(m[1], "/nix/store/"))
}

// fileIndex is the harness's DIR/index.json.
func (r evalResult) fileIndex(t *testing.T) map[string]struct {
	Kind, Script, CopyOf string
} {
	t.Helper()
	var idx map[string]struct{ Kind, Script, CopyOf string }
	b, err := os.ReadFile(filepath.Join(r.files, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

var (
	workerOnce sync.Once
	workerPath string
	workerErr  error
)

// workerBinary builds backup-worker once per test process.
func workerBinary(t *testing.T) string {
	t.Helper()
	workerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "backupgen-worker-")
		if err != nil {
			workerErr = err
			return
		}
		workerPath = filepath.Join(dir, "backup-worker")
		out, err := exec.Command("go", "build", "-o", workerPath, "../cmd/backup-worker").CombinedOutput()
		if err != nil {
			workerErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if workerErr != nil {
		t.Fatal(workerErr)
	}
	return workerPath
}

// checkConfig runs the real `backup-worker check-config` on a file, as
// the Nix build does (--no-credentials: the notification files are
// secrets of the host, not of the build).
func checkConfig(t *testing.T, file string) {
	t.Helper()
	if out, err := exec.Command(workerBinary(t), "check-config", "--no-credentials", file).CombinedOutput(); err != nil {
		t.Errorf("backup-worker check-config %s: %v\n%s", filepath.Base(file), err, out)
	}
}

// writeNix writes a Nix file into a temporary folder.
func writeNix(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// emptyHost is a host config that sets nothing, for modules that are
// complete hosts themselves.
func emptyHost(t *testing.T) string { return writeNix(t, "empty.nix", "{ }\n") }

// exampleFile is a file of the example's committed output folder.
func exampleFile(t *testing.T, name string) string {
	return filepath.Join(projectRoot(t), filepath.FromSlash(exampleOut), name)
}

// exampleDefault is the committed example folder's default.nix.
func exampleDefault(t *testing.T) string { return exampleFile(t, "default.nix") }

const exampleNS = "modules.services.virtualization"

// exampleHost enables the example's services; extra is more host config.
func exampleHost(t *testing.T, extra string) string {
	return writeNix(t, "host.nix", `{ pkgs, lib, ... }: {
  harness.fakePackages = [ "backup-worker" ];
  `+exampleNS+`.myapp.enable = true;
  `+exampleNS+`.immich.enable = true;
  `+exampleNS+`.vaultwarden.enable = true;
`+extra+`
}
`)
}

// TestNixOSExample is issue 11's "done when": the example evaluates
// cleanly with --verify --tmpfiles and no user declared by the host (myapp
// sets createUser), the worker accepts every config Nix writes, each one
// through the build-time check-config, and tmpfiles creates the required
// destinations only (optional ones are removable-disk mount points).
func TestNixOSExample(t *testing.T) {
	r := nixosEval(t, "--verify", "--tmpfiles", exampleDefault(t), exampleHost(t, ""))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	idx := r.fileIndex(t)
	for _, name := range []string{"immich", "myapp", "vaultwarden"} {
		unit := name + "-backup.service"
		file := r.workerConfigFile(t, unit)
		checkConfig(t, file)
		entry := idx["/nix/store/"+filepath.Base(file)]
		if entry.Kind != "runCommand" || !strings.Contains(entry.Script, "backup-worker check-config") {
			t.Errorf("%s: the config is not checked at build time: %+v", unit, entry)
		}
		text := r.unit(unit)
		for _, bad := range []string{"Nice=", "IOSchedulingClass=", "CPUSchedulingPolicy="} {
			if strings.Contains(text, bad) {
				t.Errorf("%s still sets %s: the worker must run at normal priority while units are stopped", unit, bad)
			}
		}
	}
	// The example's restore drills: a unit per service that runs the
	// drill with the backup's config, at idle priority, and its timer.
	for _, name := range []string{"immich", "myapp", "vaultwarden"} {
		drill := r.unit(name + "-backup-drill.service")
		if !strings.Contains(drill, " drill --config /nix/store/") || !strings.Contains(drill, "IOSchedulingClass=idle") {
			t.Errorf("%s-backup-drill.service:\n%s", name, drill)
		}
		if cal, _ := r.get("systemd", "timers", name+"-backup-drill", "timerConfig", "OnCalendar").([]any); len(cal) != 1 || cal[0] != "Sun *-*-* 05:30:00" {
			t.Errorf("%s-backup-drill.timer OnCalendar %v", name, cal)
		}
	}
	cfg, err := config.Load(r.workerConfigFile(t, "myapp-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	// Data paths must be mounted too: an unmounted data disk is an empty
	// folder that would otherwise be archived as a "successful" backup.
	for _, p := range append(cfg.DataPaths, "/var/backups/myapp") {
		if !strings.Contains(r.unit("myapp-backup.service"), "RequiresMountsFor=\""+p+"\"") {
			t.Errorf("myapp-backup.service lacks RequiresMountsFor=%q", p)
		}
	}
	tree, _ := r.get("tmpfiles", "tree").([]any)
	var created []string
	for _, e := range tree {
		created = append(created, e.(map[string]any)["path"].(string))
	}
	for _, p := range []string{"/var/backups/myapp", "/var/backups/immich", "/var/backups/vaultwarden"} {
		if !contains(created, p) {
			t.Errorf("tmpfiles did not create %s; created %v", p, created)
		}
	}
	for _, p := range created {
		if strings.HasPrefix(p, "/mnt/") {
			t.Errorf("tmpfiles created %s: an optional destination must never be created (it would fill the root disk)", p)
		}
	}
	if u, _ := r.get("users", "users", "myapp", "isSystemUser").(bool); !u {
		t.Errorf("createUser: myapp is not declared as a system user: %v", r.get("users", "users"))
	}
}

// caseHost enables every service of a golden case and declares its
// accounts, as a host would.
func caseHost(t *testing.T, m *Model) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("{\n  harness.fakePackages = [ \"backup-worker\" ];\n")
	accounts := map[string]bool{}
	for _, s := range m.Services {
		fmt.Fprintf(&b, "  %s.enable = true;\n", nixAttrPath(append(append([]string{}, m.Namespace...), s.Name)...))
		if s.User != "root" && !s.CreateUser && !accounts["u"+s.User] {
			accounts["u"+s.User] = true
			fmt.Fprintf(&b, "  users.users.%s = { isSystemUser = true; group = %s; };\n", nixAttr(s.User), nixString(s.Group))
		}
		if s.Group != "root" && !s.CreateUser && !accounts["g"+s.Group] {
			accounts["g"+s.Group] = true
			fmt.Fprintf(&b, "  users.groups.%s = { };\n", nixAttr(s.Group))
		}
	}
	b.WriteString("}\n")
	return writeNix(t, "host.nix", b.String())
}

// unitSettings returns a unit file's Section/Key=Value lines, sorted,
// without comments, the NixOS-only lines (PATH, X-RestartIfChanged) and
// the worker's path (a store path on NixOS, --worker on plain hosts).
func unitSettings(text, worker string) []string {
	var out []string
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "["):
			section = line
			continue
		case strings.HasPrefix(line, "Environment=\"PATH="), strings.HasPrefix(line, "X-RestartIfChanged="),
			strings.HasPrefix(line, "Documentation="):
			continue
		}
		line = regexp.MustCompile(`/nix/store/\S+-backup-worker/bin/backup-worker`).ReplaceAllString(line, worker)
		line = regexp.MustCompile(`--config /nix/store/[0-9a-z]{32}-(\S+)-backup\.json`).ReplaceAllString(line, "--config /etc/backupgen/$1.json")
		out = append(out, section+line)
	}
	sort.Strings(out)
	return out
}

// TestNixOSModulesAgreeWithGo evaluates every golden case with the real
// module system and requires the NixOS side to produce what the Go side
// renders for plain hosts: the worker config (option values with their
// spec defaults, {name} substituted) equals etc/backupgen/<name>.json and
// passes check-config; the unit's settings equal the plain .service file's
// (one definition of the sandbox, TestUnitsAgree in issue 11); the timers'
// OnCalendar and the tmpfiles rules match; a service with backup.enable =
// false emits nothing at all.
func TestNixOSModulesAgreeWithGo(t *testing.T) {
	for name, outDir := range validCases(t, goldenOptions) {
		t.Run(name, func(t *testing.T) {
			data, _ := os.ReadFile(filepath.Join("testdata", name, "spec.toml"))
			spec, err := Validate("spec.toml", data)
			if err != nil {
				t.Fatal(err)
			}
			m, err := buildModel(spec, goldenOptions)
			if err != nil {
				t.Fatal(err)
			}
			r := nixosEval(t, "--verify", filepath.Join(outDir, "default.nix"), caseHost(t, m))
			if r.rc != 0 {
				t.Fatalf("exit %d\n%s", r.rc, r.stderr)
			}
			rules, _ := r.get("systemd", "tmpfiles", "rules").([]any)
			var nixRules []string
			for _, x := range rules {
				nixRules = append(nixRules, x.(string))
			}
			var goRules []string
			for _, s := range m.Services {
				svc := s.ServiceUnit()
				if !s.Backup.Enable {
					if r.unit(svc) != "" || r.unit(s.UnitBase()+".timer") != "" {
						t.Errorf("%s: backup.enable = false, but units are emitted", s.Name)
					}
					continue
				}
				goRules = append(goRules, ruleLines(t, filepath.Join(outDir, "etc/tmpfiles.d", s.UnitBase()+".conf"))...)
				file := r.workerConfigFile(t, svc)
				checkConfig(t, file)
				nixCfg, err := config.Load(file)
				if err != nil {
					t.Fatalf("%s: %v", s.Name, err)
				}
				goCfg, err := config.Load(filepath.Join(outDir, "etc/backupgen", s.Name+".json"))
				if err != nil {
					t.Fatal(err)
				}
				goCfg.Comment = ""
				if diff := cmp.Diff(goCfg, nixCfg, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s: worker config from Nix differs from etc/backupgen/%s.json (-go +nix):\n%s", s.Name, s.Name, diff)
				}
				unitAndTimerAgree(t, r, outDir, s.UnitBase(), s.OnCalendar)
				drillUnitsAgree(t, r, outDir, s)
			}
			if m.MetricsDirectory != "" {
				goRules = append(goRules, ruleLines(t, filepath.Join(outDir, "etc/tmpfiles.d/backupgen-metrics.conf"))...)
			}
			sort.Strings(goRules)
			sort.Strings(nixRules)
			if diff := cmp.Diff(goRules, nixRules, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("tmpfiles rules differ (-go +nix):\n%s", diff)
			}
		})
	}
}

// TestNixOSRefusesInjection reproduces issue 11 item 5: values with a
// newline injected an `r /etc/important` line into tmpfiles.d (the real
// systemd-tmpfiles then removed the file) and, with backupgen.checkConfig
// = false, an ExecStartPre= line into the unit. Option types refuse them,
// and so do the helpers' quoting functions when a hand-written module
// calls them directly, with no type and no check-config in the way.
func TestNixOSRefusesInjection(t *testing.T) {
	my := exampleNS + ".myapp"
	direct := func(call string) string {
		return writeNix(t, "direct.nix", `{ pkgs, ... }:
let
  h = import `+exampleFile(t, "lib.nix")+` { worker = pkgs.backup-worker; writeText = pkgs.writeText; };
  args = { name = "myapp"; serviceName = "docker-myapp.service"; dataPaths = [ "/var/lib/myapp" ];
    user = "root"; group = "root"; backupConfig.paths = [ "/var/backups/x\nr /etc/important" ]; };
in
{ harness.fakePackages = [ "backup-worker" ]; `+call+` }
`)
	}
	cases := []struct {
		name, host, want string
	}{
		{"tmpfiles line from a destination", `backupgen.checkConfig = false; ` + my + `.backup.paths = [ "/var/backups/x\nr /etc/important" ];`, "control characters"},
		{"ExecStartPre= from a destination", `backupgen.checkConfig = false; ` + my + `.backup.paths = [ "/var/backups/myapp" "/srv/x\nExecStartPre=/bin/touch /pwned" ];`, "control characters"},
		{"unit name with a newline", my + `.serviceName = [ "a.service\nExecStartPre=/bin/sh" ];`, "systemd unit name"},
		{"onFailure with a newline", my + `.backup.onFailure = [ "n.service\nExecStartPre=/bin/sh" ];`, "systemd unit name"},
		{"user with a space", my + `.user = "my user";`, "user or group name"},
		{"misspelt placeholder", my + `.backup.paths = [ "/var/backups/{nmae}" ];`, "no other placeholder"},
		{"relative data path", my + `.dataPaths = [ "var/lib/myapp" ];`, "absolute, clean"},
		{"unclean data path", my + `.dataPaths = [ "/var/lib/../etc" ];`, "absolute, clean"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := nixosEval(t, exampleDefault(t), exampleHost(t, c.host))
			if r.rc != 1 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, want 1 with %q; stderr:\n%s\nunit:\n%s\ntmpfiles: %v", r.rc, c.want, r.stderr, r.unit("myapp-backup.service"), r.get("systemd", "tmpfiles", "rules"))
			}
		})
	}
	// The helpers alone, as a hand-written module without option types
	// and without check-config calls them: the quoting refuses.
	for _, call := range []string{
		`systemd.tmpfiles.rules = h.mkBackupDirectories { inherit (args) backupConfig user group; };`,
		`systemd.services.myapp-backup = h.mkBackupService args;`,
		`systemd.tmpfiles.rules = h.mkBackupDirectories { inherit (args) backupConfig group; user = "my user"; };`,
	} {
		r := nixosEval(t, direct(call), emptyHost(t))
		if r.rc != 1 || !strings.Contains(r.stderr, "backupgen") {
			t.Errorf("%s: exit %d, want 1 with a backupgen error; stderr:\n%s\nrules: %v", call, r.rc, r.stderr, r.get("systemd", "tmpfiles", "rules"))
		}
	}
}

// TestNixOSPlaceholdersAndTemplates: a host-set {name} is substituted (it
// stayed literal), and a template unit with a specifier is a valid
// onFailure (it was refused).
func TestNixOSPlaceholdersAndTemplates(t *testing.T) {
	my := exampleNS + ".myapp"
	r := nixosEval(t, "--verify", "--tmpfiles", exampleDefault(t), exampleHost(t,
		my+`.backup.paths = [ "/srv/backups/{name}" ]; `+my+`.backup.optionalPaths = [ ]; `+my+`.backup.onFailure = [ "notify-email@%n.service" ];`))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	// The example's restore drills: a unit per service that runs the
	// drill with the backup's config, at idle priority, and its timer.
	for _, name := range []string{"immich", "myapp", "vaultwarden"} {
		drill := r.unit(name + "-backup-drill.service")
		if !strings.Contains(drill, " drill --config /nix/store/") || !strings.Contains(drill, "IOSchedulingClass=idle") {
			t.Errorf("%s-backup-drill.service:\n%s", name, drill)
		}
		if cal, _ := r.get("systemd", "timers", name+"-backup-drill", "timerConfig", "OnCalendar").([]any); len(cal) != 1 || cal[0] != "Sun *-*-* 05:30:00" {
			t.Errorf("%s-backup-drill.timer OnCalendar %v", name, cal)
		}
	}
	cfg, err := config.Load(r.workerConfigFile(t, "myapp-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/srv/backups/myapp"}, cfg.Backup.Paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	rules := fmt.Sprint(r.get("systemd", "tmpfiles", "rules"))
	if !strings.Contains(rules, `d "/srv/backups/myapp" 0750 "myapp" "myapp" -`) || strings.Contains(rules, "{name}") {
		t.Errorf("tmpfiles rules %s", rules)
	}
	if !strings.Contains(r.unit("myapp-backup.service"), "OnFailure=notify-email@%n.service") {
		t.Errorf("no OnFailure= in\n%s", r.unit("myapp-backup.service"))
	}
}

// TestNixOSAccounts reproduces issue 11 item 4: the example's myapp user
// existed nowhere. Without createUser an undeclared user or group fails
// evaluation with a message naming the option; root and accounts declared
// elsewhere pass.
func TestNixOSAccounts(t *testing.T) {
	my := exampleNS + ".myapp"
	r := nixosEval(t, exampleDefault(t), exampleHost(t, my+`.createUser = false;`))
	if r.rc != 2 {
		t.Fatalf("exit %d, want 2 (failed assertions)\n%s", r.rc, r.stderr)
	}
	msgs := fmt.Sprint(r.get("failedAssertions"))
	for _, want := range []string{my + `.user = "myapp"`, my + `.group = "myapp"`, my + ".createUser = true"} {
		if !strings.Contains(msgs, want) {
			t.Errorf("failed assertions lack %q: %s", want, msgs)
		}
	}
	r = nixosEval(t, "--tmpfiles", exampleDefault(t), exampleHost(t, my+`.createUser = false;
  users.users.myapp = { isSystemUser = true; group = "myapp"; };
  users.groups.myapp = { };`))
	if r.rc != 0 {
		t.Errorf("accounts declared elsewhere: exit %d\n%s", r.rc, r.stderr)
	}
}

// TestNixOSBackupDisabled: backup.enable = false emits nothing, not even
// tmpfiles rules or accounts (it emitted the tmpfiles rules).
func TestNixOSBackupDisabled(t *testing.T) {
	r := nixosEval(t, exampleDefault(t), exampleHost(t, exampleNS+`.myapp.backup.enable = false;`))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	if r.unit("myapp-backup.service") != "" || r.unit("myapp-backup.timer") != "" {
		t.Error("units emitted")
	}
	if rules := fmt.Sprint(r.get("systemd", "tmpfiles", "rules")); strings.Contains(rules, "myapp") {
		t.Errorf("tmpfiles rules emitted: %s", rules)
	}
	if users := r.get("users", "users", "myapp"); users != nil {
		t.Errorf("user emitted: %v", users)
	}
}

// TestNixOSHandWrittenHelpers: a module written by hand with the helpers
// as the flake's lib.mkHelpers builds them (runCommand given) gets the
// build-time check-config too, and the built-in defaults (one definition,
// in Go) for the keys it leaves out: retentionSnapshots was 0 here ("keep
// all forever") but 7 in generated modules.
func TestNixOSHandWrittenHelpers(t *testing.T) {
	host := writeNix(t, "host.nix", `{ pkgs, lib, ... }:
let
  h = import `+exampleFile(t, "lib.nix")+` {
    inherit pkgs lib;
    worker = pkgs.backup-worker;
    writeText = pkgs.writeText;
    runCommand = pkgs.runCommand;
  };
  backupConfig.paths = [ "/var/backups/foo" ];
in
{
  harness.fakePackages = [ "backup-worker" ];
  systemd.services.foo-backup = h.mkBackupService {
    name = "foo";
    serviceName = "podman-foo.service";
    dataPaths = [ "/var/lib/foo" ];
    user = "root";
    group = "root";
    inherit backupConfig;
  };
  systemd.timers.foo-backup = h.mkBackupTimer { name = "foo"; inherit backupConfig; };
  systemd.tmpfiles.rules = h.mkBackupDirectories { name = "foo"; inherit backupConfig; user = "root"; group = "root"; };
}
`)
	r := nixosEval(t, "--verify", "--tmpfiles", host, emptyHost(t))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	file := r.workerConfigFile(t, "foo-backup.service")
	entry := r.fileIndex(t)["/nix/store/"+filepath.Base(file)]
	if entry.Kind != "runCommand" || !strings.Contains(entry.Script, "backup-worker check-config") {
		t.Errorf("a hand-written module's config is not checked at build time: %+v", entry)
	}
	checkConfig(t, file)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	got := []any{cfg.Backup.RetentionSnapshots, cfg.Backup.MaxRetentionDays, cfg.Backup.Format, cfg.Backup.MinKeepOrDefault(), *cfg.Backup.MinSizeRatio}
	want := []any{d.Backup.RetentionSnapshots, d.Backup.MaxRetentionDays, d.Backup.Format, d.Backup.MinKeep, d.Backup.MinSizeRatio}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hand-written defaults differ from generator.Defaults (-go +nix):\n%s", diff)
	}
	if !strings.Contains(r.unit("foo-backup.service"), "-podman/bin") {
		t.Errorf("podman is not on the PATH of a podman-… service:\n%s", r.unit("foo-backup.service"))
	}
}

// TestNixOSHelpersVersionMismatch reproduces issue 11 item 7: two generated
// folders from different backupgen versions share core.nix's key, so one
// copy of the helpers silently served both. Now the evaluation fails with
// an assertion naming the stale module, in either import order.
func TestNixOSHelpersVersionMismatch(t *testing.T) {
	version, err := HelpersVersion()
	if err != nil {
		t.Fatal(err)
	}
	spec := []byte(`namespace = "other.backups"
[[services]]
name = "old"
serviceName = "old.service"
dataPaths = ["/var/lib/old"]
`)
	files, err := Generate("spec.toml", spec, goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "old")
	for i := range files {
		files[i].Content = bytes.ReplaceAll(files[i].Content, []byte(version), []byte("0000000000000000"))
	}
	writeTreeForTest(t, old, files)
	host := exampleHost(t, `other.backups.old.enable = true;`)
	for _, order := range [][]string{{exampleDefault(t), filepath.Join(old, "default.nix")}, {filepath.Join(old, "default.nix"), exampleDefault(t)}} {
		r := nixosEval(t, append(order, host)...)
		msgs := fmt.Sprint(r.get("failedAssertions"))
		if r.rc != 2 || !strings.Contains(msgs, "Two backupgen versions meet here") {
			t.Errorf("order %v: exit %d, want 2 with the version assertion\n%s\n%s", order, r.rc, msgs, r.stderr)
		}
	}
	// One version twice is fine: the same folder imported by two paths.
	r := nixosEval(t, exampleDefault(t), exampleFile(t, "core.nix"), exampleHost(t, ""))
	if r.rc != 0 {
		t.Errorf("one version imported twice: exit %d\n%s", r.rc, r.stderr)
	}
}

// recipeBlock returns the first ```nix block of a Markdown file.
func recipeBlock(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```nix\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s holds no ```nix block", path)
	}
	return string(m[1])
}

// TestDatabaseDumpRecipe evaluates the documented database-dump recipe
// (docs/database-dump.md, issue 11 item 10) with the example: podman is on
// the unit's PATH, the dump directory is writable and archived, the hook
// gets the relaxed sandbox and podman's state folders, and check-config
// accepts the config. Then the worker runs that config (paths moved under
// a scratch root) with a stand-in podman: the dump ends up in the archive.
func TestDatabaseDumpRecipe(t *testing.T) {
	harnessPath(t) // skips first where docs/ is absent too (the Nix build)
	recipe := writeNix(t, "recipe.nix", recipeBlock(t, filepath.Join(projectRoot(t), "docs", "database-dump.md")))
	host := writeNix(t, "host.nix", `{ harness.fakePackages = [ "backup-worker" ]; }`)
	r := nixosEval(t, "--verify", "--tmpfiles", exampleDefault(t), recipe, host)
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	unit := r.unit("immich-backup.service")
	for _, want := range []string{"-podman/bin", "StateDirectory=backupgen/immich", "StateDirectoryMode=0700",
		`"BACKUP_DUMP_DIR=/var/lib/backupgen/immich"`, `ReadWritePaths=-"/var/lib/containers"`} {
		if !strings.Contains(unit, want) {
			t.Errorf("immich-backup.service lacks %s:\n%s", want, unit)
		}
	}
	for _, strict := range []string{"RestrictNamespaces=", "CapabilityBoundingSet=", "SystemCallFilter="} {
		if strings.Contains(unit, strict) {
			t.Errorf("%s would stop `podman exec` in the hook:\n%s", strict, unit)
		}
	}
	file := r.workerConfigFile(t, "immich-backup.service")
	checkConfig(t, file)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(cfg.DataPaths, "/var/lib/backupgen/immich") || !strings.Contains(cfg.Backup.PreBackup, "pg_dumpall") {
		t.Fatalf("dump directory not archived or hook missing: %+v", cfg)
	}
	runRecipeHook(t, cfg)
}

// runRecipeHook runs the worker on cfg with every path under a scratch
// root, no units to stop and a stand-in podman that prints a dump, and
// checks that the archive holds the dump.
func runRecipeHook(t *testing.T, cfg *config.Config) {
	t.Helper()
	testtool.Require(t, "tar", "tar")
	root := t.TempDir()
	under := func(p string) string { return filepath.Join(root, p) }
	for i, p := range cfg.DataPaths {
		cfg.DataPaths[i] = under(p)
		if err := os.MkdirAll(cfg.DataPaths[i], 0o700); err != nil {
			t.Fatal(err)
		}
		// An empty data path is the shrink guard's "disk not mounted".
		if err := os.WriteFile(filepath.Join(cfg.DataPaths[i], "PG_VERSION"), []byte("16\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range cfg.Backup.Paths {
		cfg.Backup.Paths[i] = under(p)
	}
	for i, p := range cfg.Backup.OptionalPaths {
		cfg.Backup.OptionalPaths[i] = under(p)
	}
	cfg.Backup.StateDirectory = under(cfg.Backup.StateDirectory)
	if d := cfg.Backup.Drill; d != nil {
		d.ScratchDirectory, d.ManifestDirectory = under("/drill"), under("/manifests")
	}
	cfg.ServiceName = nil
	cfg.Backup.Format = "tar.gz"
	js, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(root, "immich.json")
	bin := filepath.Join(root, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(conf, js, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "podman"), []byte("#!/bin/sh\necho \"-- dump by podman $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(workerBinary(t), "run", "--config", conf)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "BACKUP_DUMP_DIR="+under("/var/lib/backupgen/immich"), "JOURNAL_STREAM=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backup-worker run: %v\n%s", err, out)
	}
	archives, _ := filepath.Glob(filepath.Join(cfg.Backup.Paths[0], "*.tar.gz"))
	if len(archives) != 1 {
		t.Fatalf("archives in %s: %v", cfg.Backup.Paths[0], archives)
	}
	list, err := exec.Command("tar", "-tzvf", archives[0]).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "immich.sql") {
		t.Fatalf("the dump is not in the archive: %v\n%s", err, list)
	}
	dump, err := os.ReadFile(under("/var/lib/backupgen/immich/immich.sql"))
	if err != nil || !strings.Contains(string(dump), "exec immich-postgres pg_dumpall") {
		t.Errorf("dump %q, %v", dump, err)
	}
}

// TestReadmeDefaults: the README's spec reference states every built-in
// default as generator.Defaults defines it (one definition; the Nix side
// is rendered from it and checked by TestNixOSHandWrittenHelpers).
func TestReadmeDefaults(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(projectRoot(t), "README.md"))
	if errors.Is(err, os.ErrNotExist) && os.Getenv("CI") == "" {
		// package.nix leaves README.md out of the build's source.
		t.Skipf("!!! %v: this check did NOT run", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	list := func(l []string) string {
		if len(l) == 0 {
			return "[]"
		}
		js, _ := json.Marshal(l)
		return string(js)
	}
	str := func(s string) string {
		if s == "" {
			return `""`
		}
		return s
	}
	want := map[string]string{
		"enable": fmt.Sprint(d.Enable), "user": d.User, "group": d.Group, "createUser": fmt.Sprint(d.CreateUser),
		"backup.enable": fmt.Sprint(d.Backup.Enable), "backup.paths": list(d.Backup.Paths),
		"backup.optionalPaths": list(d.Backup.OptionalPaths), "backup.schedule": d.Backup.Schedule,
		"backup.format": d.Backup.Format, "backup.maxRetentionDays": fmt.Sprint(d.Backup.MaxRetentionDays),
		"backup.retentionSnapshots": fmt.Sprint(d.Backup.RetentionSnapshots), "backup.minKeep": fmt.Sprint(d.Backup.MinKeep),
		"backup.minSizeRatio": fmt.Sprint(d.Backup.MinSizeRatio), "backup.exclude": list(d.Backup.Exclude),
		"backup.compressionLevel": fmt.Sprint(d.Backup.CompressionLevel), "backup.threads": fmt.Sprint(d.Backup.Threads),
		"backup.persistent": fmt.Sprint(d.Backup.Persistent), "backup.randomizedDelaySec": fmt.Sprint(d.Backup.RandomizedDelaySec),
		"backup.timeoutStartSec": fmt.Sprint(d.Backup.TimeoutStartSec), "backup.onFailure": list(d.Backup.OnFailure),
		"backup.captureFirst": fmt.Sprint(d.Backup.CaptureFirst), "backup.preBackup": str(d.Backup.PreBackup),
		"backup.postBackup":            str(d.Backup.PostBackup),
		"backup.encryption.recipients": list(d.Backup.Recipients),
	}
	for _, r := range d.Backup.KeepRules() {
		want["backup."+r.Key] = fmt.Sprint(r.N)
	}
	row := regexp.MustCompile("(?m)^\\| (`[^|]*`) \\| [^|]* \\| `([^`]*)` \\|")
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		for _, k := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(m[1], -1) {
			if _, ok := want[k[1]]; ok {
				got[k[1]] = m[2]
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README.md spec reference vs generator.Defaults (-go +readme):\n%s", diff)
	}
}

// TestWorkerRunsWithUnitCapabilities runs the real worker as root with
// exactly the unit's CapabilityBoundingSet (and no_new_privs), via setpriv:
// a backup of root-only data into a destination owned by another user,
// with the archive handed to that user, succeeds. Without CAP_DAC_OVERRIDE,
// CAP_CHOWN or CAP_FOWNER (chmod after the chown) it fails, so each is
// needed. (The seccomp filter and namespaces need systemd; not run here.)
func TestWorkerRunsWithUnitCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("!!! needs root: this check did NOT run")
	}
	setpriv := testtool.Require(t, "setpriv", "util-linux")
	var caps []string
	for _, s := range strictHardening {
		if s.Key == "CapabilityBoundingSet" {
			caps = strings.Fields(s.Value)
		}
	}
	if len(caps) == 0 {
		t.Fatal("no CapabilityBoundingSet in strictHardening")
	}
	run := func(caps []string) (string, error) {
		root := t.TempDir()
		os.Chmod(root, 0o755)
		data, dest := filepath.Join(root, "data"), filepath.Join(root, "dest")
		os.MkdirAll(filepath.Join(data, "private"), 0o700)
		os.WriteFile(filepath.Join(data, "private", "secret.db"), []byte("root only\n"), 0o600)
		os.Mkdir(dest, 0o750)
		if err := os.Chown(dest, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cfg := config.Config{Name: "app", DataPaths: []string{data}, User: "65534", Group: "65534",
			Backup: config.Backup{Paths: []string{dest}, Format: "tar.gz", StateDirectory: filepath.Join(root, "state")}}
		js, _ := cfg.Marshal()
		conf := filepath.Join(root, "app.json")
		os.WriteFile(conf, js, 0o600)
		bounding := "-all"
		for _, c := range caps {
			bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		cmd := exec.Command(setpriv, "--bounding-set="+bounding, "--inh-caps=-all", "--no-new-privs", "--",
			workerBinary(t), "run", "--config", conf)
		cmd.Env = append(os.Environ(), "JOURNAL_STREAM=")
		out, err := cmd.CombinedOutput()
		if err == nil {
			archives, _ := filepath.Glob(filepath.Join(dest, "app-*.tar.gz"))
			if len(archives) != 1 {
				return string(out), fmt.Errorf("archives: %v", archives)
			}
		}
		return string(out), err
	}
	if out, err := run(caps); err != nil {
		t.Fatalf("with %v: %v\n%s", caps, err, out)
	}
	for _, drop := range []string{"CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER"} {
		var fewer []string
		for _, c := range caps {
			if c != drop {
				fewer = append(fewer, c)
			}
		}
		if out, err := run(fewer); err == nil {
			t.Errorf("the run succeeded without %s, so the unit grants it for nothing:\n%s", drop, out)
		}
	}
}

// TestNixRulesAgreeWithGo: lib.nix's path, name and unit checks (used by
// the option types and the helpers) accept exactly what config.ValidPath,
// ValidName and ValidUnit accept, except where Nix is stricter on purpose:
// every control character (Go refuses only NUL, CR and LF; nothing can
// quote the others in a unit either) and a unit name starting with '-'
// (it would reach systemctl as an option).
func TestNixRulesAgreeWithGo(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	inputs := []string{
		"/var/backups/app", "/var/backups/app/", "/", "", "var/lib", "/a//b", "/a/./b", "/a/../b", "/a/.", "/a/..",
		"/a/.hidden", "/a/..b", "/a b/c", "/a\nb", "/a\tb", "/a\rb", "/a\x7fb", "/ünï", "/{x}", "/a%n",
		"app", "App.v2", "2fa", "-x", ".x", "a b", "a/b", "a\nb", strings.Repeat("a", 200), strings.Repeat("a", 201),
		"docker-app.service", "podman-app@web.service", "-x.service", "a.b.timer", "x.unknown", ".service",
		"a\\x2d.service", "a b.service", "notify@%n.service", "a\n.service", strings.Repeat("a", 247) + ".service",
		strings.Repeat("a", 248) + ".service",
	}
	js, _ := json.Marshal(inputs)
	in := writeNix(t, "inputs.json", string(js))
	expr := fmt.Sprintf(`let h = import %s { }; xs = builtins.fromJSON (builtins.readFile %s); in {
  path = map (x: h.pathProblem x == null) xs;
  name = map (x: h.nameProblem x == null) xs;
  unit = map (x: h.unitProblem x == null) xs;
}`, nixString(exampleFile(t, "lib.nix")), nixString(in))
	out, err := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, out)
	}
	var got map[string][]bool
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	clean := func(s string) bool { return noControl(s) == nil }
	for i, s := range inputs {
		want := map[string]bool{
			"path": config.ValidPath(s) == "" && clean(s),
			"name": config.ValidName(s),
			"unit": config.ValidUnit(s) && !strings.HasPrefix(s, "-") && clean(s),
		}
		for _, rule := range []string{"path", "name", "unit"} {
			if got[rule][i] != want[rule] {
				t.Errorf("%s %q: Nix accepts=%v, Go accepts=%v", rule, s, got[rule][i], want[rule])
			}
		}
	}
}

// TestNixOSEncryption: a host sets backup.encryption on a generated
// module; the worker config carries the recipients and the file, which
// check-config accepts, and the unit passes the file with
// LoadCredential=age-recipients (the worker reads it there). A malformed
// recipient fails evaluation at the option, and zip cannot be encrypted.
func TestNixOSEncryption(t *testing.T) {
	my := exampleNS + ".myapp"
	const x25519 = "age1l2lf4j7k8p7cvfwuj2tfys5ntvnc35dvfmcvr0ce55prwhta0p0qverdwn"
	const sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJKgLu11wzbR8XLrnLJBNRcLYsUeTcwleJxf47o9nIaS offsite@backup"
	set := my + `.backup.encryption.recipients = [ "` + x25519 + `" "` + sshKey + `" ];
  ` + my + `.backup.encryption.recipientsFile = "/etc/backup/age-recipients";`
	r := nixosEval(t, "--verify", exampleDefault(t), exampleHost(t, set))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	file := r.workerConfigFile(t, "myapp-backup.service")
	checkConfig(t, file)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Encryption{Recipients: []string{x25519, sshKey}, RecipientsFile: "/etc/backup/age-recipients"}
	if diff := cmp.Diff(want, cfg.Backup.Encryption); diff != "" {
		t.Errorf("encryption (-want +got):\n%s", diff)
	}
	if !cfg.Backup.Encrypted() {
		t.Error("not encrypted")
	}
	if unit := r.unit("myapp-backup.service"); !strings.Contains(unit, "LoadCredential=age-recipients:/etc/backup/age-recipients\n") {
		t.Errorf("no LoadCredential= in\n%s", unit)
	}
	// The other services are not encrypted: no key in their JSON.
	other, err := config.Load(r.workerConfigFile(t, "immich-backup.service"))
	if err != nil || other.Backup.Encryption != nil || strings.Contains(r.unit("immich-backup.service"), "LoadCredential=age-recipients") {
		t.Errorf("immich: %v %+v", err, other.Backup.Encryption)
	}

	r = nixosEval(t, exampleDefault(t), exampleHost(t, my+`.backup.encryption.recipients = [ "age1notakey" ];`))
	if r.rc == 0 || !strings.Contains(r.stderr, "age recipient") || !strings.Contains(r.stderr, "encryption.recipients") {
		t.Errorf("bad recipient: exit %d\n%s", r.rc, r.stderr)
	}
	r = nixosEval(t, exampleDefault(t), exampleHost(t, my+`.backup.format = "zip"; `+my+`.backup.encryption.recipients = [ "`+x25519+`" ];`))
	if r.rc == 0 || !strings.Contains(r.stderr, "cannot be encrypted") {
		t.Errorf("zip + encryption: exit %d\n%s", r.rc, r.stderr)
	}
}

// TestNixOSRemoteDestination: with an sftp:// destination, the NixOS unit
// (evaluated with real nixpkgs) and the plain unit both want the network,
// pass the key and known_hosts with LoadCredential= (never their content),
// and neither mounts, creates nor opens the URL as a path.
func TestNixOSRemoteDestination(t *testing.T) {
	outDir := validCases(t, goldenOptions)["remote"]
	data, _ := os.ReadFile(filepath.Join("testdata", "remote", "spec.toml"))
	spec, err := Validate("spec.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := buildModel(spec, goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	r := nixosEval(t, "--verify", filepath.Join(outDir, "default.nix"), caseHost(t, m))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	plain, err := os.ReadFile(filepath.Join(outDir, "etc/systemd/system/app-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	for name, unit := range map[string]string{"NixOS": r.unit("app-backup.service"), "plain": string(plain)} {
		for _, want := range []string{
			"LoadCredential=sftp-key:/run/secrets/backup-ssh-key",
			"LoadCredential=sftp-known-hosts:/etc/backupgen/known_hosts",
			"Wants=network-online.target",
			"After=network-online.target",
		} {
			if !strings.Contains(unit, want) {
				t.Errorf("%s unit lacks %s:\n%s", name, want, unit)
			}
		}
		for _, line := range strings.Split(unit, "\n") {
			if strings.Contains(line, "sftp:") && !strings.HasPrefix(line, "LoadCredential=") {
				t.Errorf("%s unit uses the URL as a path: %s", name, line)
			}
		}
	}
	rules, _ := r.get("systemd", "tmpfiles", "rules").([]any)
	for _, x := range rules {
		if strings.Contains(x.(string), "sftp") {
			t.Errorf("tmpfiles rule for the remote destination: %s", x)
		}
	}
	cfg, err := config.Load(r.workerConfigFile(t, "metered-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backup.HostName != "web1" || cfg.Backup.SFTP.VerifyReadBackOrDefault() || cfg.Backup.SFTP.KnownHostsFile != "/etc/backupgen/known_hosts" {
		t.Errorf("NixOS worker config: %+v", cfg.Backup)
	}
}

// TestNixKeepRulesAgreeWithGo: lib.nix's keepProblems (the check a
// hand-written module gets) refuses exactly the keepHourly … keepYearly
// values, alone and against maxRetentionDays, that config.Validate
// refuses.
func TestNixKeepRulesAgreeWithGo(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	type input struct {
		Key        string `json:"key"`
		N          int    `json:"n"`
		MaxRetDays int    `json:"days"`
	}
	var inputs []input
	for _, key := range []string{"keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"} {
		for _, n := range []int{-1, 0, 1, 4, 6, 7, 24, 25, 186, config.MaxKeepPeriods, config.MaxKeepPeriods + 1} {
			for _, days := range []int{0, 1, 2, 7, 28, 30, 185, 186, 731, 732, config.MaxRetentionDays} {
				inputs = append(inputs, input{key, n, days})
			}
		}
	}
	js, _ := json.Marshal(inputs)
	in := writeNix(t, "inputs.json", string(js))
	expr := fmt.Sprintf(`let h = import %s { }; xs = builtins.fromJSON (builtins.readFile %s); in
  map (x: h.keepProblems (builtins.mapAttrs (k: v: if k == x.key then x.n else v) h.defaults.backup // { maxRetentionDays = x.days; }) != [ ]) xs`,
		nixString(exampleFile(t, "lib.nix")), nixString(in))
	out, err := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, out)
	}
	var nixRefuses []bool
	if err := json.Unmarshal(out, &nixRefuses); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i, x := range inputs {
		js := fmt.Sprintf(`{"name":"app","dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":["/backup"],"maxRetentionDays":%d,%q:%d}}`, x.MaxRetDays, x.Key, x.N)
		_, err := config.Decode(strings.NewReader(js))
		goRefuses := err != nil && strings.Contains(err.Error(), "backup."+x.Key)
		if err != nil && !goRefuses {
			t.Fatalf("%+v: unexpected error %v", x, err)
		}
		if goRefuses {
			refused++
		}
		if nixRefuses[i] != goRefuses {
			t.Errorf("%s = %d, maxRetentionDays = %d: Nix refuses=%v, Go refuses=%v", x.Key, x.N, x.MaxRetDays, nixRefuses[i], goRefuses)
		}
	}
	if refused == 0 || refused == len(inputs) {
		t.Fatalf("%d of %d refused: the table tests nothing", refused, len(inputs))
	}
}

// TestNixOSCalendarRules: a host sets a calendar rule on a generated
// module; it reaches the worker config (check-config accepts it) and the
// other services' JSON has no keep key. A rule the service's
// maxRetentionDays would cut short (myapp inherits 30 days) fails
// evaluation naming the key.
func TestNixOSCalendarRules(t *testing.T) {
	my := exampleNS + ".myapp"
	r := nixosEval(t, "--verify", exampleDefault(t), exampleHost(t, my+`.backup.keepDaily = 14; `+my+`.backup.keepWeekly = 4;`))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	file := r.workerConfigFile(t, "myapp-backup.service")
	checkConfig(t, file)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Backup.KeepPeriods(); got != [5]int{0, 14, 4, 0, 0} {
		t.Errorf("keep rules from Nix: %v", got)
	}
	other, err := config.Load(r.workerConfigFile(t, "immich-backup.service"))
	if err != nil || other.Backup.KeepPeriods() != [5]int{} {
		t.Errorf("immich: %v %v", err, other.Backup.KeepPeriods())
	}
	r = nixosEval(t, exampleDefault(t), exampleHost(t, my+`.backup.keepMonthly = 2;`))
	if r.rc == 0 || !strings.Contains(r.stderr, "backup.keepMonthly 2 keeps archives up to 62 days old, but maxRetentionDays = 30") {
		t.Errorf("keepMonthly beyond maxRetentionDays: exit %d\n%s", r.rc, r.stderr)
	}
}

// drillUnitsAgree: the NixOS drill service has the plain unit's settings
// and its timer the same OnCalendar; without backup.drill neither exists.
func drillUnitsAgree(t *testing.T, r evalResult, outDir string, s ServiceModel) {
	t.Helper()
	svc := s.DrillUnitBase() + ".service"
	if !s.DrillOn() {
		if r.unit(svc) != "" || r.unit(s.DrillUnitBase()+".timer") != "" {
			t.Errorf("%s: no backup.drill, but drill units are emitted", s.Name)
		}
		return
	}
	unitAndTimerAgree(t, r, outDir, s.DrillUnitBase(), s.Backup.DrillOnCalendar)
}

// unitAndTimerAgree: the NixOS service BASE.service has the settings of
// the plain unit of that name, and its timer the OnCalendar Go computed.
func unitAndTimerAgree(t *testing.T, r evalResult, outDir, base string, onCalendar []string) {
	t.Helper()
	svc := base + ".service"
	plain, err := os.ReadFile(filepath.Join(outDir, "etc/systemd/system", svc))
	if err != nil {
		t.Fatal(err)
	}
	worker := goldenOptions.WorkerPath
	if diff := cmp.Diff(unitSettings(string(plain), worker), unitSettings(r.unit(svc), worker)); diff != "" {
		t.Errorf("%s: the NixOS unit differs from the plain unit (-plain +nixos):\n%s", svc, diff)
	}
	timer, _ := r.get("systemd", "timers", base, "timerConfig", "OnCalendar").([]any)
	var cal []string
	for _, c := range timer {
		cal = append(cal, c.(string))
	}
	if diff := cmp.Diff(onCalendar, cal); diff != "" {
		t.Errorf("%s.timer: OnCalendar from Nix differs from Go (-go +nix):\n%s", base, diff)
	}
}

// TestNixCaptureFirstAgreesWithGo: lib.nix's captureFirstProblems (the
// check a hand-written module gets, and the generated modules' assertion)
// refuses captureFirst exactly where config.Validate does: when every
// destination is remote. And a host that turns it on for a service with
// only remote destinations fails evaluation naming the key.
func TestNixCaptureFirstAgreesWithGo(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	type input struct {
		CaptureFirst bool     `json:"captureFirst"`
		Paths        []string `json:"paths"`
	}
	var inputs []input
	for _, on := range []bool{false, true} {
		for _, paths := range [][]string{
			{"/var/backups/app"}, {"s3://bucket/p"}, {"sftp://u@nas.lan/srv/b"}, {"s3://bucket", "sftp://u@nas.lan/srv/b"},
			{"s3://bucket", "/var/backups/app"}, {"sftp://u@nas.lan/srv/b", "/mnt/usb/app", "s3://bucket"},
		} {
			inputs = append(inputs, input{on, paths})
		}
	}
	js, _ := json.Marshal(inputs)
	in := writeNix(t, "inputs.json", string(js))
	expr := fmt.Sprintf(`let h = import %s { }; xs = builtins.fromJSON (builtins.readFile %s); in
  map (x: h.captureFirstProblems (h.defaults.backup // x) != [ ]) xs`,
		nixString(exampleFile(t, "lib.nix")), nixString(in))
	out, err := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, out)
	}
	var nixRefuses []bool
	if err := json.Unmarshal(out, &nixRefuses); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i, x := range inputs {
		b := map[string]any{"paths": x.Paths, "captureFirst": x.CaptureFirst, "hostName": "h",
			"s3":   map[string]any{"endpoint": "https://s3.example.org", "credentialsFile": "/run/secrets/s3"},
			"sftp": map[string]any{"privateKeyFile": "/run/secrets/key", "knownHostsFile": "/etc/known_hosts"}}
		js, _ := json.Marshal(map[string]any{"name": "app", "dataPaths": []string{"/srv/app"}, "user": "u", "group": "g", "backup": b})
		_, err := config.Decode(strings.NewReader(string(js)))
		goRefuses := err != nil && strings.Contains(err.Error(), "backup.captureFirst: no usable local destination")
		if err != nil && !goRefuses {
			t.Fatalf("%+v: unexpected error %v", x, err)
		}
		if goRefuses {
			refused++
		}
		if nixRefuses[i] != goRefuses {
			t.Errorf("%+v: Nix refuses=%v, Go refuses=%v", x, nixRefuses[i], goRefuses)
		}
	}
	if refused == 0 || refused == len(inputs) {
		t.Fatalf("%d of %d refused: the table tests nothing", refused, len(inputs))
	}
	my := exampleNS + ".myapp"
	r := nixosEval(t, exampleDefault(t), exampleHost(t, my+`.backup.paths = [ "s3://offsite/myapp" ]; `+my+`.backup.captureFirst = true;`))
	if r.rc == 0 || !strings.Contains(r.stderr, "backup.captureFirst: no usable local destination to stage the capture in") {
		t.Errorf("captureFirst with only an s3:// destination: exit %d\n%s", r.rc, r.stderr)
	}
}
