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
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/backupgen/backupgen/config"
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

// stubLib stands in for the few nixpkgs lib functions the generated modules
// use, so they evaluate with builtins only (CI has no nixpkgs).
const stubLib = `{
  mkOption = o: o;
  mkIf = cond: v: if cond then v else { };
  types = {
    bool = "bool"; str = "str"; anything = "anything"; package = "package";
    listOf = t: "listOf"; attrsOf = t: "attrsOf"; enum = l: "enum";
    ints = { unsigned = "unsigned"; positive = "positive"; between = a: b: "between"; };
  };
}`

// nixEvalModules evaluates every generated module of a case with its option
// defaults as config. mkBackupService is replaced by mkWorkerConfig so the
// result shows the exact JSON the NixOS service would hand the worker.
func nixEvalModules(t *testing.T, nix, outDir string, m *Model) []byte {
	t.Helper()
	var entries strings.Builder
	ns := nixStringList(m.Namespace)
	for _, s := range m.Services {
		fmt.Fprintf(&entries, "  %s = evalModule %s %s;\n", nixString(s.Name), nixString(filepath.Join(outDir, s.ModuleFile())), nixString(s.Name))
	}
	expr := fmt.Sprintf(`let
  stubLib = %s;
  helpers = import %s { worker = "/nix/store/00000000000000000000000000000000-backup-worker"; writeText = name: text: "/nix/store/fake-" + name; };
  isOption = v: v ? type && v ? description;
  defaultsOf = opts: builtins.mapAttrs (n: v: if isOption v then v.default else defaultsOf v) opts;
  setPath = path: value: if path == [ ] then value else { ${builtins.head path} = setPath (builtins.tail path) value; };
  getPath = path: set: if path == [ ] then set else getPath (builtins.tail path) set.${builtins.head path};
  evalModule = file: name:
    let
      path = %s ++ [ name ];
      mod = import (/. + file) {
        inherit config;
        lib = stubLib;
        mkBackupService = helpers.mkWorkerConfig;
        inherit (helpers) mkBackupTimer mkBackupDirectories;
      };
      defaults = defaultsOf (getPath path mod.options);
      config = setPath path (defaults // { enable = true; backup = defaults.backup // { enable = true; }; });
    in { inherit defaults; inherit (mod) config; };
in {
%s}`, stubLib, nixString(filepath.Join(outDir, "lib.nix")), ns, entries.String())
	var stderr bytes.Buffer
	cmd := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval: %v\n%s\nexpression:\n%s", err, stderr.String(), expr)
	}
	return out
}

type nixModuleResult struct {
	Defaults struct {
		Enable      bool     `json:"enable"`
		ServiceName []string `json:"serviceName"`
		DataPaths   []string `json:"dataPaths"`
		User        string   `json:"user"`
		Group       string   `json:"group"`
		Backup      struct {
			Enable             bool     `json:"enable"`
			Paths              []string `json:"paths"`
			OptionalPaths      []string `json:"optionalPaths"`
			Schedule           string   `json:"schedule"`
			Format             string   `json:"format"`
			MaxRetentionDays   int      `json:"maxRetentionDays"`
			RetentionSnapshots int      `json:"retentionSnapshots"`
			MinKeep            int      `json:"minKeep"`
			Exclude            []string `json:"exclude"`
			CompressionLevel   int      `json:"compressionLevel"`
			Threads            int      `json:"threads"`
			Persistent         bool     `json:"persistent"`
			RandomizedDelaySec int      `json:"randomizedDelaySec"`
			TimeoutStartSec    int      `json:"timeoutStartSec"`
			OnFailure          []string `json:"onFailure"`
			PreBackup          string   `json:"preBackup"`
			PostBackup         string   `json:"postBackup"`
			CaptureFirst       bool     `json:"captureFirst"`
		} `json:"backup"`
	} `json:"defaults"`
	Config struct {
		Systemd struct {
			Services map[string]json.RawMessage `json:"services"`
			Timers   map[string]struct {
				TimerConfig struct {
					OnCalendar         []string `json:"OnCalendar"`
					Persistent         bool     `json:"Persistent"`
					RandomizedDelaySec int      `json:"RandomizedDelaySec"`
				} `json:"timerConfig"`
			} `json:"timers"`
			Tmpfiles struct {
				Rules []string `json:"rules"`
			} `json:"tmpfiles"`
		} `json:"systemd"`
	} `json:"config"`
}

// TestNixModulesAgreeWithGo evaluates every generated module with real Nix
// and checks that the NixOS path produces exactly what the Go side renders
// for plain units: option defaults equal the spec's values (so hostile
// strings stay inert), the worker config equals etc/backupgen/<name>.json
// and is accepted by the worker's strict decoder, OnCalendar and tmpfiles
// rules match.
func TestNixModulesAgreeWithGo(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
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
			var results map[string]nixModuleResult
			if err := json.Unmarshal(nixEvalModules(t, nix, outDir, m), &results); err != nil {
				t.Fatal(err)
			}
			empty := cmpopts.EquateEmpty()
			for _, s := range m.Services {
				r, ok := results[s.Name]
				if !ok {
					t.Fatalf("no result for %s", s.Name)
				}
				d := r.Defaults
				b := s.Backup
				gotDefaults := []any{d.Enable, d.ServiceName, d.DataPaths, d.User, d.Group, d.Backup.Enable, d.Backup.Paths, d.Backup.OptionalPaths, d.Backup.Schedule, d.Backup.Format, d.Backup.MaxRetentionDays, d.Backup.RetentionSnapshots, d.Backup.MinKeep, d.Backup.Exclude, d.Backup.CompressionLevel, d.Backup.Threads, d.Backup.Persistent, d.Backup.RandomizedDelaySec, d.Backup.TimeoutStartSec, d.Backup.OnFailure, d.Backup.PreBackup, d.Backup.PostBackup, d.Backup.CaptureFirst}
				wantDefaults := []any{s.Enable, s.Units, s.DataPaths, s.User, s.Group, b.Enable, b.Paths, b.OptionalPaths, b.Schedule, b.Format, b.MaxRetentionDays, b.RetentionSnapshots, b.MinKeep, b.Exclude, b.CompressionLevel, b.Threads, b.Persistent, b.RandomizedDelaySec, b.TimeoutStartSec, b.OnFailure, b.PreBackup, b.PostBackup, b.CaptureFirst}
				if diff := cmp.Diff(wantDefaults, gotDefaults, empty); diff != "" {
					t.Errorf("%s: Nix option defaults differ from the spec (-want +got):\n%s", s.Name, diff)
				}

				raw, ok := r.Config.Systemd.Services[s.UnitBase()]
				if !ok {
					t.Fatalf("%s: systemd.services.%q missing; have %v", s.Name, s.UnitBase(), r.Config.Systemd.Services)
				}
				nixCfg, err := config.Decode(bytes.NewReader(raw))
				if err != nil {
					t.Fatalf("%s: the worker rejects the config Nix writes: %v\n%s", s.Name, err, raw)
				}
				goCfg := s.WorkerConfig()
				goCfg.Normalize()
				goCfg.Comment = ""
				if diff := cmp.Diff(&goCfg, nixCfg, empty); diff != "" {
					t.Errorf("%s: worker config from Nix differs from etc/backupgen/%s.json (-go +nix):\n%s", s.Name, s.Name, diff)
				}

				timer := r.Config.Systemd.Timers[s.UnitBase()].TimerConfig
				if diff := cmp.Diff(s.OnCalendar, timer.OnCalendar); diff != "" {
					t.Errorf("%s: OnCalendar from Nix cronToOnCalendar differs from Go (-go +nix):\n%s", s.Name, diff)
				}
				if timer.Persistent != b.Persistent || timer.RandomizedDelaySec != b.RandomizedDelaySec {
					t.Errorf("%s: timer settings %+v, want Persistent=%v RandomizedDelaySec=%d", s.Name, timer, b.Persistent, b.RandomizedDelaySec)
				}

				goRules := ruleLines(t, filepath.Join(outDir, "etc/tmpfiles.d", s.UnitBase()+".conf"))
				if diff := cmp.Diff(goRules, r.Config.Systemd.Tmpfiles.Rules); diff != "" {
					t.Errorf("%s: tmpfiles rules differ (-go +nix):\n%s", s.Name, diff)
				}
			}
		})
	}
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
		for _, p := range s.Backup.Paths {
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
