package archive

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// withoutNativeTools makes Write use the pure-Go encoders.
func withoutNativeTools(t *testing.T) {
	t.Helper()
	old := lookPath
	lookPath = func(string) (string, error) { return "", exec.ErrNotFound }
	t.Cleanup(func() { lookPath = old })
}

// withFakeTool makes every native compressor lookup return a shell script.
func withFakeTool(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-compressor")
	must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755))
	old := lookPath
	lookPath = func(string) (string, error) { return p, nil }
	t.Cleanup(func() { lookPath = old })
}

// recordPids collects the pids of the native compressors started.
func recordPids(t *testing.T) func() []int {
	var mu sync.Mutex
	var pids []int
	testHookNativeStarted = func(pid int) { mu.Lock(); pids = append(pids, pid); mu.Unlock() }
	t.Cleanup(func() { testHookNativeStarted = nil })
	return func() []int { mu.Lock(); defer mu.Unlock(); return append([]int(nil), pids...) }
}

// requireReaped fails unless every pid is gone (killed and waited for: a
// zombie would still accept signal 0).
func requireReaped(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("compressor process %d still exists after Write returned (kill(0): %v)", pid, err)
		}
	}
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestNativeAndPureGo: the native-compressor path and the pure-Go fallback
// both produce archives GNU tar extracts to the source tree.
func TestNativeAndPureGo(t *testing.T) {
	requireTool(t, "tar")
	root := os.Geteuid() == 0
	for _, format := range []string{FormatTarXz, FormatTarBz2, FormatTarZst} {
		for _, variant := range []string{"native", "pure-Go"} {
			t.Run(format+"/"+variant, func(t *testing.T) {
				requireTool(t, compressorTool(format))
				if variant == "pure-Go" {
					withoutNativeTools(t)
				}
				pids := recordPids(t)
				dir := t.TempDir()
				src, single := buildTree(t, filepath.Join(dir, "data"))
				arch := filepath.Join(dir, archiveExt(format))
				logs := &logBuffer{}
				writeArchive(t, arch, format, []string{src, single}, Options{Threads: 2, Level: 1,
					Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
				fallback := strings.Contains(logs.String(), "native compressor not found, using pure-Go")
				if variant == "native" && (fallback || len(pids()) != 1) {
					t.Errorf("native compressor not used (pids %v); log:\n%s", pids(), logs)
				}
				if variant == "pure-Go" && (!fallback || len(pids()) != 0) {
					t.Errorf("want the pure-Go fallback logged and no process (pids %v); log:\n%s", pids(), logs)
				}
				requireReaped(t, pids())

				dst := filepath.Join(dir, "tool")
				must(t, os.Mkdir(dst, 0o755))
				tool, args := toolCommand(format, arch, dst)
				if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
					t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
				}
				o := snapOpts{dirMTimes: true, owners: root, hardlinks: true}
				if d := cmp.Diff(snapshot(t, src, o), snapshot(t, filepath.Join(dst, EntryName(src)), o)); d != "" {
					t.Errorf("tree extracted by GNU tar differs (-want +got):\n%s", d)
				}
				if _, err := VerifyFile(context.Background(), arch, format); err != nil {
					t.Errorf("VerifyFile: %v", err)
				}
			})
		}
	}
}

func bigTree(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "data")
	mustWrite(t, filepath.Join(dir, "big"), pseudoRandom(8<<20, 1), 0o644)
	mustWrite(t, filepath.Join(dir, "text"), textish(4<<20, 2), 0o644)
	return dir
}

// TestNativeCancelKillsProcess: cancelling ctx kills a compressor that
// hangs (it never reads its input, so Write is blocked on the pipe) and
// Write returns promptly with the cancellation.
func TestNativeCancelKillsProcess(t *testing.T) {
	dir := bigTree(t)
	withFakeTool(t, "exec sleep 600")
	pids := recordPids(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := Write(ctx, io.Discard, []string{dir}, Options{Format: FormatTarXz, Logger: quietLogger})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Write took %s after cancellation", d)
	}
	if len(pids()) != 1 {
		t.Fatalf("pids %v", pids())
	}
	requireReaped(t, pids())
}

// TestNativeCancelRealTools: cancellation in the middle of a real native
// compression returns context.Canceled and leaves no process behind.
func TestNativeCancelRealTools(t *testing.T) {
	dir := bigTree(t)
	for _, format := range []string{FormatTarXz, FormatTarBz2, FormatTarZst} {
		t.Run(format, func(t *testing.T) {
			requireTool(t, compressorTool(format))
			pids := recordPids(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n := 0
			w := writerFunc(func(p []byte) (int, error) {
				if n += len(p); n > 64<<10 {
					cancel()
				}
				return len(p), nil
			})
			_, err := Write(ctx, w, []string{dir}, Options{Format: format, Logger: quietLogger})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			requireReaped(t, pids())
		})
	}
}

// TestFailingOutput: when the output writer fails (a destination hit
// ENOSPC), Write returns that error without hanging, on every path.
func TestFailingOutput(t *testing.T) {
	dir := bigTree(t)
	type tc struct{ format, variant string }
	var cases []tc
	for _, f := range Formats {
		cases = append(cases, tc{f, "default"})
		if f == FormatTarXz || f == FormatTarBz2 || f == FormatTarZst {
			cases = append(cases, tc{f, "pure-Go"})
		}
	}
	for _, c := range cases {
		t.Run(c.format+"/"+c.variant, func(t *testing.T) {
			if c.variant == "pure-Go" {
				withoutNativeTools(t)
			}
			pids := recordPids(t)
			n := 0
			w := writerFunc(func(p []byte) (int, error) {
				if n += len(p); n > 32<<10 {
					return 0, fmt.Errorf("destination: %w", syscall.ENOSPC)
				}
				return len(p), nil
			})
			done := make(chan error, 1)
			go func() {
				_, err := Write(context.Background(), w, []string{dir}, Options{Format: c.format, Level: 1, Logger: quietLogger})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("got %v, want an error wrapping ENOSPC", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Write hangs after the output writer failed")
			}
			requireReaped(t, pids())
		})
	}
}

// TestNativeProcessFails: a compressor's non-zero exit is an error that
// carries its exit status and stderr, whether it consumed its input or not.
func TestNativeProcessFails(t *testing.T) {
	dir := bigTree(t)
	for name, script := range map[string]string{
		"after reading": "cat >/dev/null; echo 'compressor: boom' >&2; exit 3",
		"immediately":   "echo 'compressor: boom' >&2; exit 3",
	} {
		t.Run(name, func(t *testing.T) {
			withFakeTool(t, script)
			pids := recordPids(t)
			_, err := Write(context.Background(), io.Discard, []string{dir}, Options{Format: FormatTarZst, Logger: quietLogger})
			if err == nil || !strings.Contains(err.Error(), "compressor: boom") || !strings.Contains(err.Error(), "exit status 3") {
				t.Errorf("got %v, want the exit status and stderr", err)
			}
			requireReaped(t, pids())
		})
	}
}

// TestZipChunks: files around the chunk size, compressed concurrently in
// chunks, read back with their CRC-32 checked, at several thread counts.
func TestZipChunks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	sizes := []int{0, 1, zipDictSize, zipChunkSize - 1, zipChunkSize, zipChunkSize + 1, 3*zipChunkSize + 12345}
	want := map[string][]byte{}
	for i, n := range sizes {
		data := append(textish(n/2, int64(i)), pseudoRandom(n-n/2, int64(i))...)
		name := fmt.Sprintf("f%d-%d", i, n)
		mustWrite(t, filepath.Join(dir, name), data, 0o644)
		want[name] = data
	}
	// Small files after the chunked ones: each compressor must start them
	// without the previous chunk's dictionary.
	for i := 0; i < 40; i++ {
		data := textish(3000+i, int64(100+i))
		name := fmt.Sprintf("g-small-%02d", i)
		mustWrite(t, filepath.Join(dir, name), data, 0o644)
		want[name] = data
	}
	for _, threads := range []int{1, 3} {
		t.Run(fmt.Sprint("threads=", threads), func(t *testing.T) {
			arch := filepath.Join(t.TempDir(), "a.zip")
			writeArchive(t, arch, FormatZip, []string{dir}, Options{Threads: threads})
			zr, err := zip.OpenReader(arch)
			must(t, err)
			defer zr.Close()
			got := 0
			for _, f := range zr.File {
				if strings.HasSuffix(f.Name, "/") {
					continue
				}
				rc, err := f.Open()
				must(t, err)
				b, err := io.ReadAll(rc) // checks the CRC-32 and size
				must(t, err)
				rc.Close()
				if !bytes.Equal(b, want[filepath.Base(f.Name)]) {
					t.Errorf("%s: content differs", f.Name)
				}
				got++
			}
			if got != len(want) {
				t.Errorf("got %d files, want %d", got, len(want))
			}
			if _, err := exec.LookPath("unzip"); err == nil {
				if out, err := exec.Command("unzip", "-tq", arch).CombinedOutput(); err != nil {
					t.Errorf("unzip -t: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestNativeWritesOutputFile: given an *os.File, the native compressor's
// stdout is that file (its output is not copied through this process), and
// the archive it writes is complete.
func TestNativeWritesOutputFile(t *testing.T) {
	dir := bigTree(t)
	for _, format := range []string{FormatTarXz, FormatTarBz2, FormatTarZst} {
		t.Run(format, func(t *testing.T) {
			requireTool(t, compressorTool(format))
			arch := filepath.Join(t.TempDir(), archiveExt(format))
			var stdout []string
			testHookNativeStarted = func(pid int) {
				l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
				stdout = append(stdout, l, fmt.Sprint(err))
			}
			t.Cleanup(func() { testHookNativeStarted = nil })
			writeArchive(t, arch, format, []string{dir}, Options{Level: 1})
			if want := []string{arch, "<nil>"}; !cmp.Equal(stdout, want) {
				t.Errorf("compressor's stdout: got %q, want %q", stdout, want)
			}
			if _, err := VerifyFile(context.Background(), arch, format); err != nil {
				t.Errorf("VerifyFile: %v", err)
			}
		})
	}
}

// TestNativeOutputFileFull: when the output file's file system fills up,
// the native compressor writing it fails, and Write returns its error
// (exit status and stderr) without hanging or leaving a process behind.
func TestNativeOutputFileFull(t *testing.T) {
	requireTool(t, "zstd")
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	data := bigTree(t)
	full := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", full).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", full).Run() })
	f, err := os.Create(filepath.Join(full, "a.tar.zst"))
	must(t, err)
	defer f.Close()
	pids := recordPids(t)
	_, err = Write(context.Background(), f, []string{data}, Options{Format: FormatTarZst, Logger: quietLogger})
	t.Logf("Write: %v", err)
	if err == nil || !strings.Contains(err.Error(), "zstd") || !strings.Contains(err.Error(), "exit status") {
		t.Errorf("got %v, want zstd's failure", err)
	}
	if len(pids()) != 1 {
		t.Errorf("pids %v", pids())
	}
	requireReaped(t, pids())
}
