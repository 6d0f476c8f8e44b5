package archive

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
)

// TestLevelsAreConfigs: for every format, the archiver (native tool and
// pure-Go encoder) accepts exactly the compression levels that
// config.Validate accepts, and no other: one definition, config.LevelRange.
// On the old code tar.gz took -2..9 and tar.xz with the native xz
// accepted 0, while the config took 0..22 for every format.
func TestLevelsAreConfigs(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("some data\n"), 0o644))
	modes := []string{"pure-Go"}
	if _, err := exec.LookPath("xz"); err == nil {
		modes = append(modes, "native")
	} else if os.Getenv("CI") != "" {
		t.Fatal("xz not on PATH in CI")
	}
	for _, mode := range modes {
		for _, format := range Formats {
			for level := -3; level <= 25; level++ {
				if mode == "pure-Go" {
					withoutNativeTools(t)
				}
				_, werr := Write(context.Background(), io.Discard, []string{dir}, Options{Format: format, Level: level, Threads: 1, Logger: quietLogger})
				_, cerr := config.ResolveLevel(format, level)
				if (werr == nil) != (cerr == nil) {
					t.Errorf("%s %s level %d: archive says %v, config says %v", mode, format, level, werr, cerr)
				}
			}
		}
	}
}

// TestThreadsCappedAtCores: config allows threads up to config.MaxThreads,
// and a run with the most any format allows still works: the compressors
// get at most the host's cores. On the old code zstd(1) -T1024 -22 failed
// with "Allocation error" (about 0.5 GiB per thread).
func TestThreadsCappedAtCores(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("some data\n"), 0o644))
	for _, format := range Formats {
		l, _ := config.LevelRange(format)
		if _, err := Write(context.Background(), io.Discard, []string{dir}, Options{Format: format, Level: l.Max, Threads: config.MaxThreads, Logger: quietLogger}); err != nil {
			t.Errorf("%s level %d threads %d: %v", format, l.Max, config.MaxThreads, err)
		}
	}
	if got := hostThreads(config.MaxThreads); got != runtime.NumCPU() {
		t.Errorf("hostThreads(%d) = %d", config.MaxThreads, got)
	}
}
