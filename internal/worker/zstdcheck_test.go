package worker

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// TestRunZstdCheckRefuses: the stream check of a tar.zst (zstd on PATH:
// the frame walk, zstd -t, and the frame's checksum against the XXH64 of
// the tar stream the archiver fed zstd; streamcheck_native.go) refuses
// every stream that does not decode to exactly that tar stream, in one
// frame with a checksum and nothing else: the run fails, nothing is
// committed, the old archive is kept (retentionSnapshots 1 would have
// pruned it), no temp file is left and the unit runs again. The zstd on
// PATH is testdata/zstd, which runs the real zstd and spoils its output
// (modes in the script); -t runs the real tool untouched. Most of these
// streams decode without complaint (zstd -d), and the check before this
// one (zstd -d, a parse of the decoded tar and a count compare) accepted
// altered-byte (also in captureFirst mode), short-input, two-frames,
// skippable-frame and no-check: run on that code, this test fails there.
func TestRunZstdCheckRefuses(t *testing.T) {
	real := testtool.Require(t, "zstd", "zstd")
	script, err := os.ReadFile(filepath.Join("testdata", "zstd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode, want string
		capture    bool
	}{
		{"altered-byte", "the frame holds other content", false},
		{"altered-byte", "the frame holds other content", true}, // captureFirst: Convert feeds zstd
		{"short-input", "the frame holds other content", false},
		{"two-frames", "a second zstd frame after the end of the zstd frame", false},
		{"skippable-frame", "a skippable frame after the end of the zstd frame", false},
		{"garbage", "bytes after the end of the zstd frame", false},
		{"no-check", "the zstd frame has no content checksum", false},
		{"truncated", "the stream ends inside the zstd frame", false},
		{"bit-flip", "zstd -t: exit status 1", false},
	} {
		name := tc.mode
		if tc.capture {
			name += "/captureFirst"
		}
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			// Content the altered-byte mode changes ("~" to "!").
			e.writeFile(filepath.Join(e.dataPaths[0], "tilde.txt"), []byte("~~~\n"), 0o644)
			wrap := filepath.Join(e.root, "wrap")
			if err := os.MkdirAll(wrap, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(wrap, "zstd"), script, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", wrap+":"+os.Getenv("PATH"))
			t.Setenv("REAL_ZSTD", real)
			t.Setenv("ZSTD_STANDIN", tc.mode)
			const old = "app-20200101T000000Z.tar.zst"
			for _, d := range e.dests {
				e.writeSummedArchive(d, old)
			}
			e.setUnit("app.service", "active")
			cfg := e.config([]string{"app.service"}, func(m map[string]any) {
				if tc.capture {
					captureFirst("tar.zst")(m)
				}
				b := backupSettings(m)
				b["format"] = "tar.zst"
				b["retentionSnapshots"] = 1
			})
			if code := e.run(cfg); code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			log := e.logBuf.String()
			if !strings.Contains(log, "using native compressor") || !strings.Contains(log, wrap+"/zstd") {
				t.Fatal("the stand-in zstd did not compress")
			}
			if !strings.Contains(log, "verify the archive while it was written") || !strings.Contains(log, tc.want) {
				t.Errorf("log does not say %q:\n%s", tc.want, lastLogLines(log, 5))
			}
			for _, d := range e.dests {
				if got := archivesIn(t, d, "tar.zst"); len(got) != 1 || got[0] != old {
					t.Errorf("%s holds %v, want only the old archive", d, got)
				}
			}
			assertNoTemps(t, e.dests...)
			if e.unitState("app.service") != "active" {
				t.Error("unit not restarted")
			}
		})
	}
}

// TestRunZstdCheckPasses: with the same stand-in passing the real zstd's
// output through unchanged, the run commits a tar.zst that the real zstd
// and tar extract: the refusals above are the spoiling's, not the
// stand-in's. zstd is started with --check whatever ZSTD_CLEVEL says.
func TestRunZstdCheckPasses(t *testing.T) {
	real := testtool.Require(t, "zstd", "zstd")
	for _, capture := range []bool{false, true} {
		t.Run(map[bool]string{false: "write", true: "captureFirst"}[capture], func(t *testing.T) {
			e := newTestEnv(t)
			wrap := filepath.Join(e.root, "wrap")
			if err := os.MkdirAll(wrap, 0o755); err != nil {
				t.Fatal(err)
			}
			// A recording stand-in: its argv, then the real zstd.
			argvLog := filepath.Join(e.root, "argv")
			script := "#!/bin/sh\necho \"$*\" >>" + argvLog + "\nexec " + real + " \"$@\"\n"
			if err := os.WriteFile(filepath.Join(wrap, "zstd"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", wrap+":"+os.Getenv("PATH"))
			t.Setenv("ZSTD_CLEVEL", "1")
			e.setUnit("app.service", "active")
			cfg := e.config([]string{"app.service"}, func(m map[string]any) {
				if capture {
					captureFirst("tar.zst")(m)
				}
				backupSettings(m)["format"] = "tar.zst"
			})
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			argv, err := os.ReadFile(argvLog)
			if err != nil {
				t.Fatal(err)
			}
			// The compressor and the check start concurrently.
			lines := strings.Split(strings.TrimSpace(string(argv)), "\n")
			slices.Sort(lines)
			if len(lines) != 2 || lines[1] != "-t -q" || !strings.Contains(" "+lines[0]+" ", " --check ") {
				t.Fatalf("zstd ran as %q, want the compressor with --check and the check (-t -q)", lines)
			}
			for _, d := range e.dests {
				got := archivesIn(t, d, "tar.zst")
				if len(got) != 1 {
					t.Fatalf("%s holds %v", d, got)
				}
				cmd := exec.Command("tar", "-I", real, "-tf", filepath.Join(d, got[0]))
				if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "db.sqlite") {
					t.Fatalf("tar -t: %v\n%s", err, out)
				}
			}
		})
	}
}
