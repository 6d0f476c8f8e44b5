package generator

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
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

// TestGolden renders every case and compares with want/ (valid specs) or
// stderr.txt (invalid specs).
func TestGolden(t *testing.T) {
	for _, dir := range caseDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, "spec.toml"))
			if err != nil {
				t.Fatal(err)
			}
			files, genErr := Generate("spec.toml", data, goldenOptions)
			wantDir := filepath.Join(dir, "want")
			stderrFile := filepath.Join(dir, "stderr.txt")
			if *update {
				os.RemoveAll(wantDir)
				os.Remove(stderrFile)
				if genErr != nil {
					if err := os.WriteFile(stderrFile, []byte(genErr.Error()+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				} else {
					writeTreeForTest(t, wantDir, files)
				}
				return
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
			if diff := cmp.Diff(readTree(t, wantDir), filesToMap(files)); diff != "" {
				t.Errorf("output mismatch (-want +got); run go test ./generator -update:\n%s", diff)
			}
		})
	}
}

// TestExamples checks that the committed output of every example spec is
// what the spec generates now. examples/<name>/backup.toml writes to the
// folder named by its "--out" comment; the homelab example writes nixos/.
func TestExamples(t *testing.T) {
	examples := map[string]string{
		"../examples/homelab/backup.toml": "../nixos",
	}
	for spec, out := range examples {
		data, err := os.ReadFile(spec)
		if err != nil {
			t.Fatal(err)
		}
		files, err := Generate(strings.TrimPrefix(spec, "../"), data, goldenOptions)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		got := filesToMap(files)
		if *update {
			for p, c := range got {
				full := filepath.Join(out, filepath.FromSlash(p))
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Only generated files count: nixos/ also holds hand-written ones.
		want := map[string]string{}
		for p, c := range readTree(t, out) {
			if strings.Contains(c[:min(len(c), 256)], strings.TrimSuffix(Header, ".")) {
				want[p] = c
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
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
			if !strings.Contains(string(f.Content[:min(len(f.Content), 120)]), strings.TrimSuffix(Header, ".")) {
				t.Errorf("%s: %s lacks the generated header", dir, f.Path)
			}
		}
	}
}
