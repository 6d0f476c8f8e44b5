package worker

// The archive is verified while it is written (archive.StreamCheck) and
// each copy is re-read after the fsync only for its CRC-64 and length. See
// docs/RELIABILITY.md, "fullrun: verified while written".

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
)

// diskCorruptions damage the uncommitted archive in a destination, on
// disk, after its fsync: the file found by its temp name.
var diskCorruptions = map[string]func(t *testing.T, path string){
	"bit flipped": func(t *testing.T, path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		b := make([]byte, 1)
		f.ReadAt(b, fi.Size()/2)
		b[0] ^= 0x01
		if _, err := f.WriteAt(b, fi.Size()/2); err != nil {
			t.Error(err)
		}
	},
	"truncated": func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err == nil {
			err = os.Truncate(path, fi.Size()/2)
		}
		if err != nil {
			t.Error(err)
		}
	},
}

// corruptTempIn returns a beforeReread seam that damages the archive temp
// file in dir (and no other destination's), counting the damage in hits.
func corruptTempIn(t *testing.T, dir string, corrupt func(t *testing.T, path string), hits *atomic.Int32) func(string) {
	return func(d string) {
		if d != dir {
			return
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Error(err)
			return
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, ".app-") && strings.Contains(n, ".tmp-") && !strings.Contains(n, ".sha256") && !strings.Contains(n, ".sig") {
				corrupt(t, filepath.Join(d, n))
				hits.Add(1)
			}
		}
	}
}

// TestRunDiskCorruptionBeforeReread: a copy damaged on disk between its
// fsync and the re-read (bit flip, truncation) is never committed, and so
// never counts toward retention: its destination keeps its old archive
// (nothing is pruned against the damaged copy) and no temp file; the run
// fails (exit 1) when no destination holds the archive and is partial
// (exit 3) when another does. Layouts: a single destination; a second file
// system's destination (its own stream); a copy on the primary's file
// system (copy_file_range, still re-hashed); the primary itself, whose
// copy then fails with it; a copy that shares its primary's extents
// (reflink on XFS: the damage is copy-on-write, the copy's re-hash sees it).
func TestRunDiskCorruptionBeforeReread(t *testing.T) {
	layouts := []struct {
		name     string
		dests    func(t *testing.T, e *testEnv) []string
		bad      int // index of the damaged destination
		failed   []int
		wantCode int
	}{
		{"single destination", func(t *testing.T, e *testEnv) []string { return e.dests[:1] }, 0, []int{0}, ExitFailed},
		{"other file system", func(t *testing.T, e *testEnv) []string {
			other := filepath.Join(e.root, "other")
			testtool.MountTmpfs(t, other, "16m")
			return []string{e.dests[0], filepath.Join(other, "d")}
		}, 1, []int{1}, ExitPartial},
		{"copy on the same file system", func(t *testing.T, e *testEnv) []string { return e.dests }, 1, []int{1}, ExitPartial},
		{"primary with a copy", func(t *testing.T, e *testEnv) []string { return e.dests }, 0, []int{0, 1}, ExitFailed},
		{"reflinked copy on XFS", func(t *testing.T, e *testEnv) []string {
			xfs := filepath.Join(e.root, "xfs")
			testtool.MountXFS(t, xfs, "300M")
			return []string{filepath.Join(xfs, "a"), filepath.Join(xfs, "b")}
		}, 1, []int{1}, ExitPartial},
	}
	const old = "app-20200101T000000Z.tar.gz"
	for _, l := range layouts {
		for how, corrupt := range diskCorruptions {
			t.Run(l.name+"/"+how, func(t *testing.T) {
				e := newTestEnv(t)
				e.setUnit("app.service", "active")
				e.dests = l.dests(t, e)
				for _, d := range e.dests {
					e.writeSummedArchive(d, old)
				}
				var hits atomic.Int32
				e.seams.beforeReread = corruptTempIn(t, e.dests[l.bad], corrupt, &hits)
				cfg := e.config([]string{"app.service"}, func(m map[string]any) {
					backupSettings(m)["retentionSnapshots"] = 1
				})
				if code := e.run(cfg); code != l.wantCode {
					t.Fatalf("exit %d, want %d", code, l.wantCode)
				}
				if hits.Load() != 1 {
					t.Fatalf("damaged %d files, want 1", hits.Load())
				}
				for i, d := range e.dests {
					got := archivesIn(t, d, "tar.gz")
					if slices.Contains(l.failed, i) {
						if len(got) != 1 || got[0] != old {
							t.Errorf("%s holds %v, want only the old archive", d, got)
						}
					} else if len(got) != 1 || got[0] == old {
						t.Errorf("%s holds %v, want only the new archive", d, got)
					}
				}
				assertNoTemps(t, e.dests...)
				log := e.logBuf.String()
				// A flipped bit changes the CRC-64; a truncated file
				// cannot even be read back to its size.
				if !strings.Contains(log, "verify: written copy has CRC-64") && !strings.Contains(log, "verify: re-read:") {
					t.Error("log does not say the copy on disk differs from the stream")
				}
				if e.unitState("app.service") != "active" {
					t.Error("unit not restarted")
				}
			})
		}
	}
}

// TestRunStreamCountsMustMatch: an archiver that reports other entries than
// the stream holds (here one file more) fails the run before anything is
// committed: the stream is an archive, but not of what was archived.
func TestRunStreamCountsMustMatch(t *testing.T) {
	for _, format := range []string{"tar.gz", "zip"} {
		t.Run(format, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			e.seams.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
				st, err := archive.Write(ctx, w, paths, opts)
				st.Files++
				return st, err
			}
			cfg := e.config([]string{"app.service"}, func(m map[string]any) { backupSettings(m)["format"] = format })
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			if !strings.Contains(e.logBuf.String(), "verify the archive while it was written: archive: the stream holds") {
				t.Error("log does not say the stream's counts differ from the archiver's")
			}
			assertNoArchives(t, e.dests...)
			assertNoTemps(t, e.dests...)
		})
	}
}

// pathWithout returns a PATH directory holding a link to every program of
// /usr/bin except the named ones, so the archiver falls back to its
// pure-Go encoders.
func pathWithout(t *testing.T, dir string, names ...string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/usr/bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !slices.Contains(names, e.Name()) {
			os.Symlink(filepath.Join("/usr/bin", e.Name()), filepath.Join(dir, e.Name()))
		}
	}
	return dir
}

// TestRunEveryFormatVerifiedWhileWritten: in every format, with the native
// compressor and with the pure-Go encoder, encrypted or not, and with
// one destination or a copy, a run commits archives that read back
// complete, and a bit flipped on disk after the fsync fails the run.
func TestRunEveryFormatVerifiedWhileWritten(t *testing.T) {
	cases := []struct {
		name, format string
		native       bool
		encrypted    bool
	}{
		{"tar.gz", "tar.gz", true, false},
		{"tar.zst native", "tar.zst", true, false},
		{"tar.zst Go", "tar.zst", false, false},
		{"tar.xz native", "tar.xz", true, false},
		{"tar.bz2 native", "tar.bz2", true, false},
		{"zip", "zip", true, false},
		{"tar.zst encrypted", "tar.zst", true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if pkg := map[string][2]string{"tar.zst": {"zstd", "zstd"}, "tar.xz": {"xz", "xz-utils"}, "tar.bz2": {"pbzip2", "pbzip2"}}[tc.format]; pkg[0] != "" {
				testtool.Require(t, pkg[0], pkg[1])
			}
			for _, damage := range []bool{false, true} {
				e := newTestEnv(t)
				if !tc.native {
					bin := filepath.Join(e.root, "bin") // the stand-in systemctl
					t.Setenv("PATH", bin+":"+pathWithout(t, filepath.Join(e.root, "nonative"), "zstd", "xz", "pbzip2", "bzip2"))
				}
				e.setUnit("app.service", "active")
				var hits atomic.Int32
				if damage {
					e.seams.beforeReread = corruptTempIn(t, e.dests[0], diskCorruptions["bit flipped"], &hits)
				}
				mutate := func(b map[string]any) { b["format"] = tc.format }
				var cfg *config.Config
				if tc.encrypted {
					k := newEncKeys(t, filepath.Join(e.root, "keys-age"))
					cfg, _ = config.Load(e.encryptedConfig(k, mutate))
				} else {
					cfg = e.config([]string{"app.service"}, func(m map[string]any) { mutate(backupSettings(m)) })
				}
				code := e.run(cfg)
				if damage {
					if code != ExitFailed || hits.Load() != 1 {
						t.Fatalf("damaged on disk: exit %d (want %d), %d files damaged", code, ExitFailed, hits.Load())
					}
					assertNoTemps(t, e.dests...)
					continue
				}
				if code != ExitOK {
					t.Fatalf("exit %d", code)
				}
				if !tc.native && strings.Contains(e.logBuf.String(), "using native compressor") {
					t.Fatal("a native compressor ran")
				}
				ext := config.ArchiveExt(tc.format)
				if tc.encrypted {
					ext += config.EncryptedSuffix
				}
				for _, d := range e.dests {
					got := archivesIn(t, d, ext)
					if len(got) != 1 {
						t.Fatalf("%s holds %v", d, got)
					}
					if !tc.encrypted {
						st, err := archive.VerifyFile(context.Background(), filepath.Join(d, got[0]), tc.format)
						if err != nil || st.Files != 4 {
							t.Errorf("%s: %d files, %v", got[0], st.Files, err)
						}
					}
				}
			}
		})
	}
}

// TestRunNativeDecoderRefusesStream: the stream check decompresses a
// native compressor's stream with the native tool, and the tool's refusal
// fails the run before anything is committed. The compressor on PATH is
// the real one, whose output gets bytes appended after the end of its
// stream (the tar inside stays complete, so only the decompressor sees
// the damage); `-d` runs the real tool untouched. tar.zst is checked by
// the frame walk and zstd -t (streamcheck_native.go), and the walk
// refuses the bytes after the frame (more: TestRunZstdCheckRefuses).
func TestRunNativeDecoderRefusesStream(t *testing.T) {
	for _, tc := range []struct{ format, tool, pkg, refusal string }{
		{"tar.zst", "zstd", "zstd", "bytes after the end of the zstd frame"},
		{"tar.xz", "xz", "xz-utils", "xz -d: exit status"},
		{"tar.bz2", "pbzip2", "pbzip2", "pbzip2 -d: exit status"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			testtool.Require(t, tc.tool, tc.pkg)
			real, err := exec.LookPath(tc.tool)
			if err != nil {
				t.Fatal(err)
			}
			e := newTestEnv(t)
			wrap := filepath.Join(e.root, "wrap")
			if err := os.MkdirAll(wrap, 0o755); err != nil {
				t.Fatal(err)
			}
			script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" -d \"*|*\" -t \"*) exec %s \"$@\";; esac\n%s \"$@\" && printf garbage\n", real, real)
			if err := os.WriteFile(filepath.Join(wrap, tc.tool), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", wrap+":"+os.Getenv("PATH"))
			e.setUnit("app.service", "active")
			cfg := e.config([]string{"app.service"}, func(m map[string]any) { backupSettings(m)["format"] = tc.format })
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			if log := e.logBuf.String(); !strings.Contains(log, "verify the archive while it was written") || !strings.Contains(log, tc.refusal) {
				t.Errorf("log does not say %q:\n%s", tc.refusal, lastLogLines(log, 5))
			}
			assertNoArchives(t, e.dests...)
			assertNoTemps(t, e.dests...)
			if e.unitState("app.service") != "active" {
				t.Error("unit not restarted")
			}
		})
	}
}

func lastLogLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
