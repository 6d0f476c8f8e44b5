package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Owner ids used for files owned by "someone else" (no names on purpose).
const otherUID, otherGID = 12345, 23456

var baseTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

func mustWrite(t testing.TB, p string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func pseudoRandom(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func textish(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	words := []string{"backup", "nixos", "data", "restore", "service", "archive", "the", "of", "and", "config", "\n"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[r.Intn(len(words))])
		sb.WriteByte(' ')
	}
	return []byte(sb.String()[:n])
}

// buildTree creates the test data tree under dir/src and a single-file data
// path dir/single.conf; it returns both absolute paths.
func buildTree(t *testing.T, dir string) (src, single string) {
	t.Helper()
	src = filepath.Join(dir, "src")
	single = filepath.Join(dir, "single.conf")
	mustWrite(t, single, []byte("key = value\n"), 0o640)

	mustWrite(t, filepath.Join(src, "a/b/c/deep.txt"), []byte("deep\n"), 0o644)
	mustWrite(t, filepath.Join(src, "a/top.txt"), textish(10000, 1), 0o644)
	if err := os.MkdirAll(filepath.Join(src, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	big := append(pseudoRandom(1<<20, 2), textish(2<<20, 3)...) // 3 MiB
	mustWrite(t, filepath.Join(src, "big.bin"), big, 0o644)
	mustWrite(t, filepath.Join(src, "secret.txt"), []byte("secret\n"), 0o600)
	mustWrite(t, filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	mustWrite(t, filepath.Join(src, "zero.txt"), nil, 0o644)
	must(t, os.Symlink("a/b/c/deep.txt", filepath.Join(src, "rel-link")))
	must(t, os.Symlink("does/not/exist", filepath.Join(src, "dangling")))
	mustWrite(t, filepath.Join(src, "hard1.txt"), []byte("hard link content\n"), 0o644)
	must(t, os.Link(filepath.Join(src, "hard1.txt"), filepath.Join(src, "a/hard2.txt")))
	mustWrite(t, filepath.Join(src, "données/ünïcødé.txt"), []byte("unicode\n"), 0o644)
	mustWrite(t, filepath.Join(src, strings.Repeat("n", 150)+".txt"), []byte("long name\n"), 0o644)
	longDir := filepath.Join(src, "long", strings.Repeat("d", 90), strings.Repeat("e", 90), strings.Repeat("f", 90))
	mustWrite(t, filepath.Join(longDir, strings.Repeat("g", 60)+".txt"), []byte("long path\n"), 0o644)
	if rel, _ := filepath.Rel(src, filepath.Join(longDir, strings.Repeat("g", 60)+".txt")); len(rel) <= 255 {
		t.Fatalf("long path too short: %d", len(rel))
	}
	must(t, syscall.Mkfifo(filepath.Join(src, "a/fifo"), 0o644))
	if os.Geteuid() == 0 {
		mustWrite(t, filepath.Join(src, "owned/file.txt"), []byte("owned\n"), 0o644)
		must(t, os.Lchown(filepath.Join(src, "owned/file.txt"), otherUID, otherGID))
		must(t, os.Lchown(filepath.Join(src, "owned"), otherUID, otherGID))
		must(t, os.Lchown(filepath.Join(src, "rel-link"), otherUID, otherGID))
	}
	// mtimes: files first, then directories deepest first.
	var dirs []string
	i := 0
	must(t, filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		} else if d.Type().IsRegular() {
			i++
			ts := baseTime.Add(time.Duration(i) * time.Hour)
			return os.Chtimes(p, ts, ts)
		}
		return nil
	}))
	for j := len(dirs) - 1; j >= 0; j-- {
		ts := baseTime.Add(-time.Duration(j+1) * time.Minute)
		must(t, os.Chtimes(dirs[j], ts, ts))
	}
	return src, single
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type node struct {
	Type     string
	Mode     fs.FileMode
	Target   string
	SHA      string
	Size     int64
	MTime    int64 // seconds, files (and dirs when compared)
	UID, GID int
	LinkTo   string // for hard links: the lexically first name of the inode
}

type snapOpts struct {
	dirMTimes bool
	owners    bool
	hardlinks bool
}

// snapshot describes the tree at root (relative slash names); fifos and
// other specials are left out (they are never archived).
func snapshot(t *testing.T, root string, o snapOpts) map[string]node {
	t.Helper()
	out := map[string]node{}
	inodes := map[uint64][]string{}
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		n := node{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
		st := fi.Sys().(*syscall.Stat_t)
		if o.owners {
			n.UID, n.GID = int(st.Uid), int(st.Gid)
		}
		switch {
		case fi.IsDir():
			n.Type = "dir"
			if o.dirMTimes {
				n.MTime = fi.ModTime().Unix()
			}
		case fi.Mode().IsRegular():
			n.Type = "file"
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			n.SHA = hex.EncodeToString(h[:8])
			n.Size = fi.Size()
			n.MTime = fi.ModTime().Unix()
			if st.Nlink > 1 {
				inodes[st.Ino] = append(inodes[st.Ino], rel)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Mode = 0
			n.Target, err = os.Readlink(p)
			if err != nil {
				return err
			}
		default:
			return nil
		}
		out[rel] = n
		return nil
	}))
	if o.hardlinks {
		for _, names := range inodes {
			sort.Strings(names)
			for _, nm := range names[1:] {
				n := out[nm]
				n.LinkTo = names[0]
				out[nm] = n
			}
		}
	}
	return out
}

// requireTool skips (or fails under CI) when a tool is missing.
func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("required tool %s missing (CI is set): %v", name, err)
		}
		t.Skipf("!!! SKIPPING: tool %s not installed; this format is NOT checked against the real tool", name)
	}
}

func writeArchive(t testing.TB, file, format string, paths []string, opts Options) Stats {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	opts.Format = format
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	st, err := Write(context.Background(), f, paths, opts)
	if err != nil {
		f.Close()
		t.Fatalf("Write %s: %v", format, err)
	}
	must(t, f.Close())
	return st
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func archiveExt(format string) string { return "archive." + format }
