// Package nix_test runs the repository's Nix checks under go test: every
// hand-written .nix file parses, the helper evaluation tests
// (tests/helpers.nix) and the flake output tests (tests/flake-outputs.nix,
// against a stub nixpkgs) evaluate to no failed case, and vendor-hash.nix
// is current. Nothing is built: evaluation only, so it runs offline.
//
// A missing nix-instantiate skips loudly; with CI set it fails instead.
package nix_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// root is the repository root, relative to this package.
const root = ".."

// privateStoreEnv points Nix at a store, state and config of its own under
// a temporary folder: evaluation may copy sources into the store
// (builtins.path), and that must not need root or touch /nix.
func privateStoreEnv(t *testing.T) []string {
	t.Helper()
	d := t.TempDir()
	env := []string{
		"HOME=" + d,
		"NIX_STORE_DIR=" + filepath.Join(d, "store"),
		"NIX_STATE_DIR=" + filepath.Join(d, "state"),
		"NIX_LOG_DIR=" + filepath.Join(d, "log"),
		"NIX_CONF_DIR=" + filepath.Join(d, "etc"),
		"NIX_REMOTE=",
		"NIX_PATH=",
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "NIX_") && k != "HOME" {
			env = append(env, kv)
		}
	}
	return env
}

// nixFiles lists the hand-written .nix files: flake.nix, package.nix and
// everything under nix/ and nixos/.
func nixFiles(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join(root, "flake.nix"), filepath.Join(root, "package.nix")}
	for _, dir := range []string{"nix", "nixos"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() && strings.HasSuffix(p, ".nix") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestParse(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	files := nixFiles(t)
	for _, f := range files {
		out, err := exec.Command(nix, "--parse", f).CombinedOutput()
		if err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, out)
		}
	}
	for _, want := range []string{"nixos/module.nix", "nix/vendor-hash.nix", "nix/tests/helpers.nix", "nix/tests/flake-outputs.nix", "nix/tests/stub-nixpkgs.nix"} {
		found := false
		for _, f := range files {
			found = found || filepath.ToSlash(f) == root+"/"+want
		}
		if !found {
			t.Errorf("%s not found among %q", want, files)
		}
	}
}

// failedCase is one entry of the failure list a tests/*.nix file
// evaluates to.
type failedCase struct {
	Name     string          `json:"name"`
	Expected json.RawMessage `json:"expected"`
	Result   json.RawMessage `json:"result"`
}

// evalCases evaluates expr (a list of failed cases) and reports each one.
func evalCases(t *testing.T, expr string) {
	t.Helper()
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	cmd := exec.Command(nix, "--read-write-mode", "--eval", "--strict", "--json", "-E", expr)
	cmd.Dir = root
	cmd.Env = privateStoreEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval -E %q: %v\n%s", expr, err, stderr.String())
	}
	var failed []failedCase
	if err := json.Unmarshal(out, &failed); err != nil {
		t.Fatalf("%s: not a list of failed cases: %v\n%s", expr, err, out)
	}
	for _, c := range failed {
		t.Errorf("%s\n  expected: %s\n  result:   %s", c.Name, c.Expected, c.Result)
	}
}

func TestHelpers(t *testing.T) {
	evalCases(t, "import ./nix/tests/helpers.nix { }")
}

// nixpkgsLib finds the real nixpkgs lib bundled with the NixOS evaluation
// harness (NIXPKGS_LIB overrides), beside the project root or, from a
// worktree, one level higher; it skips loudly, or fails with CI set.
func nixpkgsLib(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("NIXPKGS_LIB"); dir != "" {
		return dir
	}
	for _, up := range []string{"..", "../.."} {
		dir, err := filepath.Abs(filepath.Join(root, up, "shared", "nixos-eval", "inputs", "nixpkgs-lib"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "fileset", "default.nix")); err == nil {
			return dir
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nixpkgs lib not found beside the project (../shared/nixos-eval/inputs/nixpkgs-lib); set NIXPKGS_LIB")
	}
	t.Skip("!!! nixpkgs lib not found (../shared/nixos-eval/inputs/nixpkgs-lib): this check did NOT run; set NIXPKGS_LIB")
	return ""
}

func TestFlakeOutputs(t *testing.T) {
	evalCases(t, "import ./nix/tests/flake-outputs.nix { nixpkgsLib = "+nixString(nixpkgsLib(t))+"; }")
}

// nixString quotes s as a Nix string; paths here hold no ${ or control
// characters, but a backslash or quote must not end the string.
func nixString(s string) string {
	b, _ := json.Marshal(s)
	return strings.ReplaceAll(string(b), "${", "\\${")
}

// TestEvalCasesCatchFailures guards the harness: a false case must be
// reported, not read as an empty list.
func TestEvalCasesCatchFailures(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	expr := `map (c: { inherit (c) name expected; result = c.expr; }) (builtins.filter (c: c.expr != c.expected) [ { name = "ok"; expr = 1; expected = 1; } { name = "bad"; expr = 1; expected = 2; } ])`
	out, err := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr).Output()
	if err != nil {
		t.Fatal(err)
	}
	var failed []failedCase
	if err := json.Unmarshal(out, &failed); err != nil || len(failed) != 1 || failed[0].Name != "bad" {
		t.Fatalf("got %s (%v), want one failed case named bad", out, err)
	}
}

var sriRE = regexp.MustCompile(`(?m)^"(sha256-[A-Za-z0-9+/]{43}=)"$`)

// TestVendorHash runs nix/vendor-hash.sh --check: `go mod vendor` (module
// cache or GOPROXY) hashed with Nix must equal nix/vendor-hash.nix.
func TestVendorHash(t *testing.T) {
	testtool.Require(t, "nix-hash", "nix-bin")
	testtool.Require(t, "bash", "bash")
	data, err := os.ReadFile(filepath.Join(root, "nix", "vendor-hash.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if !sriRE.Match(data) {
		t.Fatalf("nix/vendor-hash.nix holds no SRI sha256 line:\n%s", data)
	}
	// The caller's environment: go mod vendor needs its module cache (or
	// GOPROXY), and hashing a path writes nothing to the store.
	cmd := exec.Command("bash", filepath.Join(root, "nix", "vendor-hash.sh"), "--check")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix/vendor-hash.sh --check: %v\n%s", err, out)
	}
}
