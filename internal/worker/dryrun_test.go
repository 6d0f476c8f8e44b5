package worker

import (
	"bytes"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// treeSnapshot records every path under root with its mode, size and
// modification time, except the stand-in systemctl's own logs.
func treeSnapshot(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p == skip && d.IsDir() {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	return out
}

// TestRunDryRunChangesNothing: `run --dry-run` prints the units it would
// stop (read with is-active, as the run does), the data size and archive
// estimate, each destination's preflight result and what retention would
// remove, and changes nothing: no file under the test's root (data,
// destinations, state directory, key) is created, removed or modified,
// and systemctl saw only read-only verbs.
func TestRunDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	e.setUnit("db.service", "inactive")
	for _, ts := range []string{"20200101T000000Z", "20200102T000000Z", "20200103T000000Z"} {
		e.writeSummedArchive(e.dests[0], "app-"+ts+".tar.gz")
	}
	file := filepath.Join(e.root, "not-a-dir")
	e.writeFile(file, []byte("x"), 0o644)
	usb := filepath.Join(e.root, "usb")
	cfgPath := e.configFile([]string{"app.service", "db.service"}, func(m map[string]any) {
		b := backupSettings(m)
		b["paths"] = append(e.dests, usb, file)
		b["optionalPaths"] = []string{usb}
		b["retentionSnapshots"] = 1
		b["healthCheck"] = map[string]any{"tcp": "127.0.0.1:9"}
	})
	before := treeSnapshot(t, e.root, e.sysDir)
	var stdout, stderr bytes.Buffer
	code := e.runCmd(cfgPath, true, &stdout, &stderr)
	out := stdout.String()
	t.Logf("exit %d\n%s%s", code, out, stderr.String())
	if code != ExitPartial {
		t.Errorf("exit %d, want 3 (one destination would fail)", code)
	}
	after := treeSnapshot(t, e.root, e.sysDir)
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s changed or appeared: %q -> %q", p, before[p], v)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s removed", p)
		}
	}
	for _, c := range e.calls() {
		if !strings.HasPrefix(c, "is-active ") {
			t.Errorf("systemctl %s: a dry run uses read-only verbs only", c)
		}
	}
	if e.unitState("app.service") != "active" {
		t.Error("app.service was touched")
	}
	for _, want := range []string{
		"app.service: active, would be stopped and started again",
		"db.service: inactive, left alone",
		"then health check tcp 127.0.0.1:9",
		e.dests[0] + ": ok (writable",
		e.dests[1] + ": ok (would be created)",
		usb + ": would be skipped (optional, missing)",
		file + ": would fail: not a directory",
		e.dests[0] + ": 1 kept, 2 would be removed",
		"would remove app-20200101T000000Z.tar.gz",
		"would remove app-20200102T000000Z.tar.gz",
		"estimated archive at most about 351.8 KiB (the data size; no earlier ratio recorded)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
