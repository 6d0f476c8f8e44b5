package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/backupgen/backupgen/generator"
)

// isGenerated reports whether a file on disk was written by backupgen
// (generator.IsGenerated on its first bytes). Only such files are ever
// removed as stale, so hand-written files in the output folder are left
// alone.
func isGenerated(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, generator.HeaderWindow)
	n, _ := io.ReadFull(f, head)
	return generator.IsGenerated(head[:n])
}

// staleFiles lists generated files under out that files does not contain.
func staleFiles(out string, files []generator.File) ([]string, error) {
	want := map[string]bool{}
	for _, f := range files {
		want[filepath.FromSlash(f.Path)] = true
	}
	var stale []string
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == out {
				return filepath.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(out, p)
		if err != nil {
			return err
		}
		if !want[rel] && isGenerated(p) {
			stale = append(stale, rel)
		}
		return nil
	})
	sort.Strings(stale)
	return stale, err
}

// writeTree writes every file whose content changed, all or none: each goes
// to a temporary file beside its target first, and only when all of them are
// written are they renamed into place. Stale generated files are removed
// last. It returns how many files changed and how many were removed.
func writeTree(out string, files []generator.File) (changed, removed int, err error) {
	// Stale files are found before any temporary file exists beside them.
	stale, err := staleFiles(out, files)
	if err != nil {
		return 0, 0, err
	}
	type pending struct{ tmp, final string }
	var todo []pending
	cleanup := func() {
		for _, p := range todo {
			os.Remove(p.tmp)
		}
	}
	for _, f := range files {
		final := filepath.Join(out, filepath.FromSlash(f.Path))
		// Anything but a regular file in the way would make a rename fail
		// half-way through; refuse before writing anything.
		if fi, err := os.Lstat(final); err == nil && !fi.Mode().IsRegular() {
			cleanup()
			return 0, 0, fmt.Errorf("%s exists and is not a regular file; move it away and run again", final)
		}
		mode := os.FileMode(0o644)
		if f.Executable {
			mode = 0o755
		}
		if old, err := os.ReadFile(final); err == nil && bytes.Equal(old, f.Content) {
			if fi, err := os.Stat(final); err == nil && fi.Mode().Perm() != mode {
				if err := os.Chmod(final, mode); err != nil {
					cleanup()
					return 0, 0, err
				}
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
			cleanup()
			return 0, 0, err
		}
		tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".tmp-*")
		if err != nil {
			cleanup()
			return 0, 0, err
		}
		todo = append(todo, pending{tmp: tmp.Name(), final: final})
		_, werr := tmp.Write(f.Content)
		if werr == nil {
			werr = tmp.Chmod(mode)
		}
		if werr == nil {
			werr = tmp.Sync()
		}
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			cleanup()
			return 0, 0, fmt.Errorf("write %s: %w", final, werr)
		}
	}
	for i, p := range todo {
		if err := os.Rename(p.tmp, p.final); err != nil {
			for _, q := range todo[i:] {
				os.Remove(q.tmp)
			}
			return i, 0, fmt.Errorf("rename %s: %w", p.final, err)
		}
	}
	for _, rel := range stale {
		if err := os.Remove(filepath.Join(out, rel)); err != nil {
			return len(todo), removed, err
		}
		removed++
	}
	return len(todo), removed, nil
}

// diffTree returns a unified diff of what is on disk against what the spec
// generates, plus stale generated files; "" when they agree.
func diffTree(out string, files []generator.File) (string, error) {
	var b strings.Builder
	for _, f := range files {
		final := filepath.Join(out, filepath.FromSlash(f.Path))
		old, err := os.ReadFile(final)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if bytes.Equal(old, f.Content) && err == nil {
			continue
		}
		from := final
		if err != nil {
			from = "/dev/null"
		}
		d, derr := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A:        difflib.SplitLines(string(old)),
			B:        difflib.SplitLines(string(f.Content)),
			FromFile: from,
			ToFile:   final + " (generated)",
			Context:  3,
		})
		if derr != nil {
			return "", derr
		}
		b.WriteString(d)
	}
	stale, err := staleFiles(out, files)
	if err != nil {
		return "", err
	}
	for _, rel := range stale {
		fmt.Fprintf(&b, "stale: %s is generated but no longer produced by the spec (generate removes it)\n", filepath.Join(out, rel))
	}
	return b.String(), nil
}
