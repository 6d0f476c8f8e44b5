package generator

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ and examples/")

// goldenOptions are fixed so goldens do not depend on flags.
var goldenOptions = DefaultOptions

// caseDirs lists testdata/<case> folders.
func caseDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join("testdata", e.Name(), "spec.toml")); err == nil {
				dirs = append(dirs, filepath.Join("testdata", e.Name()))
			}
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no golden cases under testdata/")
	}
	return dirs
}

// readTree reads every regular file under dir into path -> content.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func filesToMap(files []File) map[string]string {
	m := map[string]string{}
	for _, f := range files {
		m[f.Path] = string(f.Content)
	}
	return m
}

// writeTreeForTest replaces dir with files (used by -update and by tests
// that need the output on disk).
func writeTreeForTest(t *testing.T, dir string, files []File) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// constantDir holds the files every generated folder shares (helperFiles),
// stored once instead of in every case's want/.
const constantDir = "testdata/_constant"

// exampleOut is the example's generated folder, relative to the project
// root: examples/<name>/backup.toml generates examples/<name>/backup/.
const exampleOut = "examples/homelab/backup"

// splitConstant separates the shared helper files from a case's own files.
func splitConstant(files map[string]string) (constant, own map[string]string) {
	constant, own = map[string]string{}, map[string]string{}
	for p, c := range files {
		if slices.Contains(helperFiles, p) {
			constant[p] = c
		} else {
			own[p] = c
		}
	}
	return constant, own
}

// goldenConstant returns the constant files from testdata/_constant; with
// -update it first rewrites that folder from a fresh render, once.
func goldenConstant(t *testing.T) map[string]string {
	t.Helper()
	if *update {
		version, err := HelpersVersion()
		if err != nil {
			t.Fatal(err)
		}
		helpers, err := renderHelpers(version)
		if err != nil {
			t.Fatal(err)
		}
		var files []File
		for _, name := range helperFiles {
			files = append(files, File{Path: name, Content: helpers[name]})
		}
		writeTreeForTest(t, constantDir, files)
	}
	return readTree(t, constantDir)
}

// TestGolden renders every case and compares with want/ (valid specs) or
// stderr.txt (invalid specs); the helper files every case shares are
// compared with testdata/_constant/. -update rewrites want/ and
// stderr.txt from scratch, so a file the generator no longer produces is
// deleted.
func TestGolden(t *testing.T) {
	constant := goldenConstant(t)
	if len(constant) != len(helperFiles) {
		t.Fatalf("%s holds %d files, want %q; run go test ./generator -update", constantDir, len(constant), helperFiles)
	}
	for _, dir := range caseDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, "spec.toml"))
			if err != nil {
				t.Fatal(err)
			}
			files, genErr := Generate("spec.toml", data, goldenOptions)
			gotConstant, got := splitConstant(filesToMap(files))
			wantDir := filepath.Join(dir, "want")
			stderrFile := filepath.Join(dir, "stderr.txt")
			if *update {
				updateCase(t, wantDir, stderrFile, got, genErr)
			}
			if want, err := os.ReadFile(stderrFile); err == nil {
				if genErr == nil {
					t.Fatalf("spec is valid, but %s expects diagnostics", stderrFile)
				}
				if diff := cmp.Diff(string(want), genErr.Error()+"\n"); diff != "" {
					t.Errorf("diagnostics mismatch (-want +got):\n%s", diff)
				}
				if files != nil {
					t.Errorf("invalid spec produced %d files", len(files))
				}
				return
			}
			if genErr != nil {
				t.Fatalf("Generate: %v", genErr)
			}
			if diff := cmp.Diff(readTree(t, wantDir), got); diff != "" {
				t.Errorf("output mismatch (-want +got); run go test ./generator -update:\n%s", diff)
			}
			if diff := cmp.Diff(constant, gotConstant); diff != "" {
				t.Errorf("helper files differ from %s (-want +got); run go test ./generator -update:\n%s", constantDir, diff)
			}
		})
	}
}

// updateCase replaces a case's golden files: want/ without the constant
// files for a valid spec, stderr.txt for an invalid one, never both.
func updateCase(t *testing.T, wantDir, stderrFile string, own map[string]string, genErr error) {
	t.Helper()
	if err := os.RemoveAll(wantDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(stderrFile); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if genErr != nil {
		if err := os.WriteFile(stderrFile, []byte(genErr.Error()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	var files []File
	for p, c := range own {
		files = append(files, File{Path: p, Content: []byte(c)})
	}
	writeTreeForTest(t, wantDir, files)
}

// TestGoldenUpdateRemovesStale: a golden file the generator no longer
// produces is deleted by -update, and a stale stderr.txt goes when the
// spec becomes valid.
func TestGoldenUpdateRemovesStale(t *testing.T) {
	dir := t.TempDir()
	wantDir, stderrFile := filepath.Join(dir, "want"), filepath.Join(dir, "stderr.txt")
	writeTreeForTest(t, wantDir, []File{{Path: "modules/gone.nix", Content: []byte("# old\n")}, {Path: "default.nix", Content: []byte("old")}})
	if err := os.WriteFile(stderrFile, []byte("old diagnostics\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	updateCase(t, wantDir, stderrFile, map[string]string{"default.nix": "new"}, nil)
	if diff := cmp.Diff(map[string]string{"default.nix": "new"}, readTree(t, wantDir)); diff != "" {
		t.Errorf("want/ after update (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(stderrFile); !os.IsNotExist(err) {
		t.Errorf("stale stderr.txt survived the update: %v", err)
	}
}

// TestExamples checks that the committed output of every example is what
// its spec generates now: examples/<name>/backup.toml generates
// examples/<name>/backup/, a folder of generated files only. -update
// rewrites the folder, stale files included.
func TestExamples(t *testing.T) {
	specs, err := filepath.Glob("../examples/*/backup.toml")
	if err != nil || len(specs) == 0 {
		t.Fatalf("no examples/*/backup.toml (%v)", err)
	}
	if !slices.Contains(specs, "../"+filepath.FromSlash(exampleOut)+".toml") {
		t.Fatalf("%s.toml, which the tests and the flake use, is not among %q", exampleOut, specs)
	}
	for _, spec := range specs {
		out := strings.TrimSuffix(spec, ".toml")
		data, err := os.ReadFile(spec)
		if err != nil {
			t.Fatal(err)
		}
		files, err := Generate(strings.TrimPrefix(spec, "../"), data, goldenOptions)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if *update {
			writeTreeForTest(t, out, files)
		}
		if diff := cmp.Diff(readTree(t, out), filesToMap(files)); diff != "" {
			t.Errorf("%s is stale against %s (-want +got); run make generate:\n%s", out, spec, diff)
		}
	}
}

// TestDeterministic renders each case twice and requires identical bytes,
// sorted paths, and the header on every file.
func TestDeterministic(t *testing.T) {
	for _, dir := range caseDirs(t) {
		data, _ := os.ReadFile(filepath.Join(dir, "spec.toml"))
		a, errA := Generate("spec.toml", data, goldenOptions)
		b, errB := Generate("spec.toml", data, goldenOptions)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%s: errors differ: %v / %v", dir, errA, errB)
		}
		if errA != nil {
			if errA.Error() != errB.Error() {
				t.Errorf("%s: diagnostics differ between runs", dir)
			}
			continue
		}
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%s: output differs between runs:\n%s", dir, diff)
		}
		if !sort.SliceIsSorted(a, func(i, j int) bool { return a[i].Path < a[j].Path }) {
			t.Errorf("%s: files are not sorted by path", dir)
		}
		for _, f := range a {
			if !IsGenerated(f.Content) {
				t.Errorf("%s: %s lacks the generated header", dir, f.Path)
			}
		}
	}
}

// TestIsGenerated: the header within the first HeaderWindow bytes, in a
// Nix/unit comment or a JSON "_comment", marks a file as generated;
// anything else is hand-written.
func TestIsGenerated(t *testing.T) {
	cases := []struct {
		name    string
		content string
		want    bool
	}{
		{"nix comment", "# " + Header + "\n{ }\n", true},
		{"json comment", "{\n  \"_comment\": \"generated by backupgen, do not edit\",\n  \"name\": \"x\"\n}\n", true},
		{"after a first line", "#!/bin/sh\n# " + Header + "\n", true},
		{"hand-written", "{ config, ... }:\n{ }\n", false},
		{"empty", "", false},
		{"header too deep", strings.Repeat("#\n", HeaderWindow) + "# " + Header + "\n", false},
		{"a different generator", "# generated by nix/vendor-hash.sh (make vendor-hash), do not edit.\n", false},
	}
	for _, c := range cases {
		if got := IsGenerated([]byte(c.content)); got != c.want {
			t.Errorf("%s: IsGenerated = %v, want %v", c.name, got, c.want)
		}
	}
}
