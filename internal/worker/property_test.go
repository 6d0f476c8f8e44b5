package worker

import (
	mathbits "math/bits"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
)

// configShape is one point of the config space the property test explores:
// every field the run acts on, each with valid and invalid variants
// (duplicate, nested or overlapping paths, out-of-range numbers, bad globs).
type configShape struct {
	format                     uint8
	level, threads             int
	exclude                    string // patterns, one per line
	layout                     uint32 // bit fields, see apply
	timeout, days, snaps, keep int
}

// apply turns the shape into the raw config map of e.
func (s configShape) apply(e *testEnv, m map[string]any) {
	b := backupSettings(m)
	formats := append(slices2(config.Formats), "rar")
	b["format"] = formats[int(s.format)%len(formats)]
	b["compressionLevel"] = s.level
	b["threads"] = s.threads
	if s.exclude != "" {
		b["exclude"] = strings.Split(s.exclude, "\n")
	}
	// bits reads the field at shift, just wide enough for n values.
	bits := func(shift, n uint32) uint32 {
		width := uint32(mathbits.Len32(n - 1))
		return (s.layout >> shift) & (1<<width - 1) % n
	}
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	m["dataPaths"] = [][]string{{d1, d2}, {d1}, {d1, d1 + "/"}, {filepath.Dir(d1), d1}, {d1 + "/", d2}}[bits(0, 5)]
	usb := filepath.Join(e.root, "mnt", "usb")
	dest1, dest2 := e.dests[0], e.dests[1]
	dests := [][]string{{dest1, dest2}, {dest1}, {dest1, dest1 + "/"}, {filepath.Join(d1, "backups")}, {dest1 + "/", dest2}, {dest1, usb}}[bits(3, 6)]
	b["paths"] = dests
	if bits(6, 2) == 1 && len(dests) > 1 {
		b["optionalPaths"] = dests[1:]
	}
	b["stateDirectory"] = []string{e.stateDir, filepath.Join(dest1, "state"), filepath.Join(d1, ".state"), e.stateDir + "/"}[bits(7, 4)]
	m["serviceName"] = [][]string{{}, {"app.service"}, {"app.service", "app-db.service"}, {"-x.service"}}[bits(9, 4)]
	b["captureFirst"] = bits(11, 2) == 1
	b["allowLiveBackup"] = bits(12, 2) == 1
	if p := []string{"", filepath.Join(e.root, "metrics", "app.prom"), filepath.Join(dest1, "app.prom")}[bits(13, 3)]; p != "" {
		b["prometheusTextfile"] = p
	}
	for i, key := range []string{"lockTimeoutSec", "startTimeoutSec", "stopTimeoutSec"} {
		if bits(15+uint32(i), 2) == 1 {
			b[key] = s.timeout
		}
	}
	b["maxRetentionDays"] = s.days
	b["retentionSnapshots"] = s.snaps
	if s.keep != 0 || bits(18, 2) == 1 {
		b["minKeep"] = s.keep
	}
}

func slices2(s []string) []string { return append([]string(nil), s...) }

// checkRunAccepts: if check-config accepts the shape's config, a run of it
// (recording systemctl stand-in, real data and destinations) succeeds and
// leaves the units active. Exit 5 (warning: e.g. every file excluded, so
// the data is empty) is not a failure.
func checkRunAccepts(t *testing.T, s configShape) {
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	e.setUnit("app-db.service", "active")
	must(t, os.MkdirAll(filepath.Join(e.root, "mnt", "usb"), 0o755))
	path := e.configFile(nil, func(m map[string]any) { s.apply(e, m) })
	if code, _, checkErr := e.checkConfigCmd(path, false); code != ExitOK {
		t.Logf("rejected by check-config:\n%s", checkErr)
		return // the run refuses it too, before doing anything (cmd/backup-worker/cmd_run.go)
	}
	var out, errOut strings.Builder
	code := e.runCmd(path, false, &out, &errOut)
	if code != ExitOK && code != 5 {
		raw, _ := os.ReadFile(path)
		t.Fatalf("check-config accepted this config, run exited %d:\n%s\nlog:\n%s", code, raw, errOut.String())
	}
	for _, u := range []string{"app.service", "app-db.service"} {
		if e.unitState(u) != "active" {
			t.Errorf("%s not active after the run", u)
		}
	}
}

// FuzzRunAcceptsWhatCheckConfigAccepts (issue 11 item 2): whatever
// check-config accepts, run never fails for a configuration reason. The
// seeds are issue 11's reproductions, the edges of every bound, and 40
// pseudo-random shapes; `make fuzz` explores further.
func FuzzRunAcceptsWhatCheckConfigAccepts(f *testing.F) {
	seeds := []configShape{
		{format: 0, level: 15},            // tar.gz 15 (issue 11)
		{format: 1, level: 12},            // tar.xz 12 (issue 11)
		{format: 0, exclude: "[unclosed"}, // issue 11
		{format: 3, level: 22, threads: config.MaxThreads},
		{format: 4, level: 9, threads: config.MaxThreads + 1},
		{format: 2, level: 9, threads: 100_000_000},
		{format: 0, exclude: "cache/**\n*.tmp\n./config/\n{a,b}/*\n\\[x"},
		{format: 4, exclude: "**"},
		{format: 0, layout: 1<<15 | 1<<16 | 1<<17, timeout: config.MaxTimeoutSec},
		{format: 0, layout: 1 << 15, timeout: config.MaxTimeoutSec + 1},
		{format: 0, days: config.MaxRetentionDays, snaps: 1 << 40, keep: 1},
		{format: 0, days: 1 << 40},
		{format: 0, layout: 1 << 18, keep: 0},
	}
	r := rand.New(rand.NewSource(11))
	for i := 0; i < 40; i++ {
		seeds = append(seeds, randomShape(r))
	}
	for _, s := range seeds {
		f.Add(s.format, s.level, s.threads, s.exclude, s.layout, s.timeout, s.days, s.snaps, s.keep)
	}
	f.Fuzz(func(t *testing.T, format uint8, level, threads int, exclude string, layout uint32, timeout, days, snaps, keep int) {
		checkRunAccepts(t, configShape{format, level, threads, exclude, layout, timeout, days, snaps, keep})
	})
}

// randomShape draws a shape whose every dimension is valid 19 times in
// 20, so that about two thirds of the shapes pass check-config as a whole.
func randomShape(r *rand.Rand) configShape {
	pick := func(valid, invalid []uint32) uint32 {
		if r.Intn(20) > 0 {
			return valid[r.Intn(len(valid))]
		}
		return invalid[r.Intn(len(invalid))]
	}
	layout := pick([]uint32{0, 1, 4}, []uint32{2, 3}) |
		pick([]uint32{0, 1, 4, 5}, []uint32{2, 3})<<3 |
		uint32(r.Intn(2))<<6 |
		pick([]uint32{0, 3}, []uint32{1, 2})<<7 |
		pick([]uint32{0, 1, 2}, []uint32{3})<<9 |
		uint32(r.Intn(4))<<11 |
		pick([]uint32{0, 1}, []uint32{2})<<13 |
		uint32(r.Intn(8))<<15
	s := configShape{format: uint8(r.Intn(5)), layout: layout, days: r.Intn(3) * 7, snaps: r.Intn(4), keep: 1 + r.Intn(3)}
	l, _ := config.LevelRange(config.Formats[s.format])
	s.level = int(pick([]uint32{0, uint32(l.Min), uint32(l.Max), uint32(l.Default)}, []uint32{uint32(l.Max + 1)}))
	s.threads = []int{0, 1, 3, config.MaxThreads, 1 << 20}[pick([]uint32{0, 1, 2, 3}, []uint32{4})]
	s.exclude = []string{"", "*.tmp", "cache/", "a/**/b", "**/*.sqlite", "[", "/abs", "\\"}[pick([]uint32{0, 1, 2, 3, 4}, []uint32{5, 6, 7})]
	s.timeout = []int{0, 1, 30, config.MaxTimeoutSec, 1 << 50}[pick([]uint32{1, 2, 3}, []uint32{4})]
	return s
}
