package main

// Worker targets (the performance issue's remaining numbers), measured with
// the real `backup-worker run` and a stand-in systemctl:
//
//   - dests: one run to three destinations vs one destination (same format,
//     same corpus; all destinations on the bench directory's file system):
//     the fan-out's cost, target ≤ 1.15×;
//   - rss: peak RSS of the backup-worker process alone at the corpus size
//     and at 4× it, for every format (-rss-formats), target ≤ 64 MiB; a
//     native compressor's own peak is reported beside it;
//   - downtime: the downtime the worker reports (first stop → units started
//     again, for one unit the stand-in reports as active) with captureFirst
//     and in normal mode, vs the wall time of a plain `tar cf` of the same
//     data into the same directory (the I/O floor), target ≤ 1.0× for
//     captureFirst. With -capture-dir DIR (BENCH_CAPTURE_DIR) the corpus is
//     copied to DIR once and this target's data, destinations (so the
//     capture) and `tar cf` output are all in DIR, for example a
//     loop-mounted ext4: data and capture share a file system, as the
//     worker's staging preference arranges, so the capture copies file
//     contents with copy_file_range (the tar capture's fast path).
//     -downtime-baseline-bin BIN (BENCH_DOWNTIME_BASELINE_BIN) adds BIN's
//     captureFirst downtime, alternating run by run with the current
//     build's, each after its own `tar cf` (a before/after in one load).
//
// The section is delimited by marker comments and replaced in place in the
// results file, so `-skip-main` can refresh it without touching the main
// table or the notes below it.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

const (
	targetsBegin = "<!-- bench:worker-targets -->"
	targetsEnd   = "<!-- /bench:worker-targets -->"
)

type targetsEnv struct {
	workerBin  string
	bin        string // holds the stand-in systemctl
	work       string
	threads    string
	reps       int
	xzReps     int    // reps for tar.xz runs
	captureDir string // downtime target: data, destinations and `tar cf` here (-capture-dir)
	baseline   string // downtime target: also this backup-worker binary's captureFirst, alternating (-downtime-baseline-bin)
}

type workerRun struct {
	wall, downtime time.Duration
	rss            int64 // KiB (wait4: the largest process of the tree)
	self, child    int64 // KiB: the worker alone, its largest child (hwmWatch)
	// With workerSpec.floor: `tar cf` of the corpus timed right before
	// each run, and downtime/floor per run (medians over the runs).
	floor time.Duration
	ratio float64
}

var downtimeRE = regexp.MustCompile(`msg="backup finished".* downtime=(\S+)`)

// runWorker runs backup-worker once on corpus with fresh destinations.
func (te *targetsEnv) runWorker(label, corpus, format string, ndests int, unit, captureFirst bool) (workerRun, error) {
	dir := filepath.Join(te.work, "targets", label)
	os.RemoveAll(dir)
	var dests []string
	for i := 0; i < ndests; i++ {
		d := filepath.Join(dir, fmt.Sprintf("dest%d", i+1))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return workerRun{}, err
		}
		dests = append(dests, fmt.Sprintf("%q", d))
	}
	units := "[]"
	if unit {
		units = `["bench.service"]`
	}
	cfg := filepath.Join(dir, "config.json")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"name":"bench","serviceName":%s,"dataPaths":[%q],"user":"root","group":"root",
"backup":{"paths":[%s],"format":%q,"threads":%s,"captureFirst":%v,"stateDirectory":%q}}`,
		units, corpus, strings.Join(dests, ","), format, te.threads, captureFirst, filepath.Join(dir, "state"))), 0o644)
	if err != nil {
		return workerRun{}, err
	}
	// Start from a clean page cache (no dirty pages, no pending discards
	// of the previous run's deleted files), as tarOnce does.
	syscall.Sync()
	cmd := exec.Command(te.workerBin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+te.bin+":"+os.Getenv("PATH"), "FAKE_SYSTEMCTL_DIR="+dir, "JOURNAL_STREAM=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	var self, child int64
	if err = cmd.Start(); err == nil {
		w := watchHWM(cmd.Process.Pid)
		err = cmd.Wait()
		self, child = w.stop()
	}
	wall := time.Since(start)
	defer os.RemoveAll(dir)
	if err != nil {
		return workerRun{}, fmt.Errorf("%v: %s", err, lastLines(out.String(), 3))
	}
	r := workerRun{wall: wall, rss: cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, self: self, child: child}
	if m := downtimeRE.FindStringSubmatch(out.String()); m != nil {
		r.downtime, _ = time.ParseDuration(m[1])
	}
	return r, nil
}

// workerSpec is one configuration of a backup-worker run.
type workerSpec struct {
	label, corpus, format string
	ndests                int
	unit, captureFirst    bool
	// floor: time `tar cf` of the corpus right before each run, so the
	// downtime is compared with the I/O floor under the same conditions
	// (page cache, write-back, a reclaim pass of the host).
	floor bool
	bin   string // another backup-worker binary (the baseline); "" = te.workerBin
}

// medianRuns runs runWorker te.reps times and returns the median wall and
// downtime and the largest RSS.
func (te *targetsEnv) medianRuns(label, corpus, format string, ndests int, unit, captureFirst bool) (workerRun, error) {
	rs, err := te.alternate(workerSpec{label: label, corpus: corpus, format: format, ndests: ndests, unit: unit, captureFirst: captureFirst})
	if err != nil {
		return workerRun{}, err
	}
	return rs[0], nil
}

// alternate runs each spec once per repetition, in turn, so that a slow
// phase of the machine (or the write-back of an earlier run's files) weighs
// on every spec alike, and returns per spec the median wall and downtime
// and the largest RSS.
func (te *targetsEnv) alternate(specs ...workerSpec) ([]workerRun, error) {
	reps := te.reps
	for _, sp := range specs {
		if sp.format == "tar.xz" {
			reps = min(reps, te.xzReps)
		}
	}
	walls := make([][]time.Duration, len(specs))
	downs := make([][]time.Duration, len(specs))
	floors := make([][]time.Duration, len(specs))
	ratios := make([][]float64, len(specs))
	out := make([]workerRun, len(specs))
	for i := 0; i < max(reps, 1); i++ {
		for j, sp := range specs {
			var floor time.Duration
			if sp.floor {
				var err error
				if floor, err = te.tarOnce(sp.corpus); err != nil {
					return nil, err
				}
			}
			rte := te
			if sp.bin != "" {
				c := *te
				c.workerBin, rte = sp.bin, &c
			}
			r, err := rte.runWorker(sp.label, sp.corpus, sp.format, sp.ndests, sp.unit, sp.captureFirst)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sp.label, err)
			}
			fmt.Fprintf(os.Stderr, "targets %-34s rep %d: wall %.2fs downtime %.2fs rss %d MiB tar cf before %.2fs\n", sp.label, i+1, r.wall.Seconds(), r.downtime.Seconds(), r.rss/1024, floor.Seconds())
			walls[j], downs[j] = append(walls[j], r.wall), append(downs[j], r.downtime)
			if sp.floor {
				floors[j] = append(floors[j], floor)
				ratios[j] = append(ratios[j], r.downtime.Seconds()/floor.Seconds())
			}
			out[j].rss = max(out[j].rss, r.rss)
			out[j].self, out[j].child = max(out[j].self, r.self), max(out[j].child, r.child)
		}
	}
	for j := range specs {
		out[j].wall, out[j].downtime = median(walls[j]), median(downs[j])
		if specs[j].floor {
			out[j].floor = median(floors[j])
			sort.Float64s(ratios[j])
			out[j].ratio = ratios[j][len(ratios[j])/2]
		}
	}
	return out, nil
}

// tarFloor times `tar cf` of corpus (median of te.reps).
func (te *targetsEnv) tarFloor(corpus string) (time.Duration, error) {
	var walls []time.Duration
	for i := 0; i < te.reps; i++ {
		d, err := te.tarOnce(corpus)
		if err != nil {
			return 0, err
		}
		walls = append(walls, d)
	}
	return median(walls), nil
}

// tarOnce times one `tar cf` of corpus into the bench directory.
func (te *targetsEnv) tarOnce(corpus string) (time.Duration, error) {
	dir := filepath.Join(te.work, "targets", "tarcf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	syscall.Sync()
	start := time.Now()
	if b, err := exec.Command("tar", "cf", filepath.Join(dir, "plain.tar"), "-C", filepath.Dir(corpus), filepath.Base(corpus)).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("tar cf: %v: %s", err, b)
	}
	return time.Since(start), nil
}

// runTargets measures the selected targets and returns the Markdown section.
func runTargets(te *targetsEnv, which map[string]bool, corpus, corpusName string, size int64, destFormat string, downtimeFormats, normalFormats, rssFormats []string) string {
	var md bytes.Buffer
	fmt.Fprintf(&md, "%s\n## Worker targets\n\n", targetsBegin)
	fmt.Fprintf(&md, "Generated by `bench -targets %s` (bench/targets.go) on %s; %s, %d cores, Go %s; N = %s threads; median of %d runs (tar.xz: %d; RSS: max). `backup-worker run` with a stand-in systemctl; all destinations on one file system (the bench directory's).\n\n",
		strings.Join(sortedKeys(which), ","), time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), runtime.Version(), te.threads, te.reps, min(te.reps, te.xzReps))
	fail := func(what string, err error) {
		fmt.Fprintf(&md, "- %s: FAILED: %s\n", what, strings.ReplaceAll(err.Error(), "|", "/"))
	}
	if which["dests"] {
		fmt.Fprintf(&md, "### Three destinations vs one (%s, %s)\n\n", destFormat, corpusName)
		rs, err := te.alternate(
			workerSpec{label: "dests-1-" + destFormat, corpus: corpus, format: destFormat, ndests: 1},
			workerSpec{label: "dests-3-" + destFormat, corpus: corpus, format: destFormat, ndests: 3})
		if err != nil {
			fail("one vs three destinations", err)
		} else {
			one, three := rs[0], rs[1]
			ratio := three.wall.Seconds() / one.wall.Seconds()
			fmt.Fprintf(&md, "| destinations | wall s | peak RSS MiB |\n|---:|---:|---:|\n| 1 | %.2f | %d |\n| 3 | %.2f | %d |\n\n",
				one.wall.Seconds(), one.rss/1024, three.wall.Seconds(), three.rss/1024)
			fmt.Fprintf(&md, "Ratio 3/1: **%.3f×** (target ≤ 1.15×: %s). Runs alternate between one and three destinations. Each run includes the fsync and verification of every copy; the three destinations share the bench directory's file system, so the stream goes to the first and the other two are filled from it with copy_file_range (see worker/dest.go).\n\n", ratio, verdict(ratio <= 1.15))
		}
	}
	if which["rss"] {
		big := filepath.Join(filepath.Dir(corpus), filepath.Base(corpus)+"-x4")
		if err := buildCorpus(big, 4*size); err != nil {
			fail("4× corpus", err)
		} else {
			var growth, over []string
			fmt.Fprintf(&md, "### Peak RSS vs data size\n\n| format | %s: worker RSS MiB | 4× (%s): worker RSS MiB | native compressor RSS MiB (1× / 4×) | wall s (1× / 4×) |\n|---|---:|---:|---|---|\n", human(size), human(4*size))
			for _, f := range rssFormats {
				a, errA := te.medianRuns("rss-1x-"+f, corpus, f, 1, false, false)
				b, errB := te.medianRuns("rss-4x-"+f, big, f, 1, false, false)
				if errA != nil || errB != nil {
					fmt.Fprintf(&md, "| %s | failed | | | %v %v |\n", f, errA, errB)
					continue
				}
				child := "none"
				if a.child > 0 || b.child > 0 {
					child = fmt.Sprintf("%d / %d", a.child/1024, b.child/1024)
				}
				fmt.Fprintf(&md, "| %s | %d | %d | %s | %.2f / %.2f |\n", f, a.self/1024, b.self/1024, child, a.wall.Seconds(), b.wall.Seconds())
				growth = append(growth, fmt.Sprintf("%s %+d MiB", f, (b.self-a.self)/1024))
				if max(a.self, b.self) > 64<<10 {
					over = append(over, f)
				}
			}
			met := verdict(len(over) == 0)
			if len(over) > 0 {
				met += " (" + strings.Join(over, ", ") + ")"
			}
			fmt.Fprintf(&md, "\nWorker RSS is the backup-worker process alone (its VmHWM, sampled every 20 ms); a native compressor (zstd, xz, pbzip2) is its child and is reported separately. Target ≤ 64 MiB at 1× and 4×: %s. From 1× to 4× the data: %s.\n\n", met, strings.Join(growth, ", "))
		}
	}
	if which["downtime"] {
		if dte, dcorpus, err := te.onCaptureDir(corpus); err != nil {
			fail("copy the corpus to -capture-dir", err)
		} else {
			dte.downtimeSection(&md, dcorpus, corpusName, downtimeFormats, normalFormats)
		}
	}
	fmt.Fprintf(&md, "%s\n", targetsEnd)
	return md.String()
}

// onCaptureDir returns the environment and corpus of the downtime target:
// with -capture-dir, a copy of corpus in that directory (made once, kept
// for later runs) and the directory as the work directory, so the data,
// the capture and `tar cf` share its file system; otherwise te and corpus.
func (te *targetsEnv) onCaptureDir(corpus string) (*targetsEnv, string, error) {
	if te.captureDir == "" {
		return te, corpus, nil
	}
	dte := *te
	dte.work = te.captureDir
	dst := filepath.Join(te.captureDir, filepath.Base(corpus))
	if _, err := os.Stat(dst); err == nil {
		return &dte, dst, nil
	}
	tmp := dst + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("cp", "-a", corpus, tmp).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("cp -a %s %s: %v: %s", corpus, tmp, err, out)
	}
	return &dte, dst, os.Rename(tmp, dst)
}

// downtimeSection measures the downtime target: the worker's downtime in
// normal and captureFirst mode against `tar cf` of the same data.
func (te *targetsEnv) downtimeSection(md *bytes.Buffer, corpus, corpusName string, downtimeFormats, normalFormats []string) {
	floor, err := te.tarFloor(corpus)
	if err != nil {
		fmt.Fprintf(md, "- tar cf: FAILED: %s\n", strings.ReplaceAll(err.Error(), "|", "/"))
		return
	}
	where := "the bench directory"
	if te.captureDir != "" {
		where = fmt.Sprintf("`-capture-dir` %s (%s), which also holds a copy of the corpus", te.captureDir, fsType(te.captureDir))
	}
	fmt.Fprintf(md, "### Downtime: captureFirst vs normal mode vs `tar cf` (%s)\n\n`tar cf` of the same data into %s: **%.2f s** (the I/O floor; median of %d at the start). A captureFirst run is compared with a `tar cf` run right before it, so both see the same page cache and disk state; its ratio is the median of the per-run ratios.\n\n", corpusName, where, floor.Seconds(), te.reps)
	fmt.Fprintf(md, "| format | mode | downtime s | `tar cf` right before, s | total wall s | downtime / tar cf |\n|---|---|---:|---:|---:|---:|\n")
	var verdicts []string
	for _, f := range downtimeFormats {
		for _, cf := range []bool{false, true} {
			mode := "normal"
			if cf {
				mode = "captureFirst"
			} else if !slices.Contains(normalFormats, f) {
				continue
			}
			specs := []workerSpec{{label: "downtime-" + mode + "-" + f, corpus: corpus, format: f, ndests: 1, unit: true, captureFirst: cf, floor: cf}}
			modes := []string{mode}
			if cf && te.baseline != "" {
				// Alternating with the current build, each after its own tar cf.
				specs = append(specs, workerSpec{label: "downtime-baseline-" + f, corpus: corpus, format: f, ndests: 1, unit: true, captureFirst: true, floor: true, bin: te.baseline})
				modes = append(modes, "captureFirst, baseline binary")
			}
			rs, err := te.alternate(specs...)
			if err != nil {
				fmt.Fprintf(md, "| %s | %s | failed | | | %s |\n", f, mode, strings.ReplaceAll(err.Error(), "|", "/"))
				continue
			}
			for i, r := range rs {
				ratio, before := r.downtime.Seconds()/floor.Seconds(), ""
				if cf {
					ratio, before = r.ratio, fmt.Sprintf("%.2f", r.floor.Seconds())
				}
				fmt.Fprintf(md, "| %s | %s | %.2f | %s | %.2f | %.2f× |\n", f, modes[i], r.downtime.Seconds(), before, r.wall.Seconds(), ratio)
				if cf && i == 0 {
					verdicts = append(verdicts, fmt.Sprintf("%s %.2f× (%s)", f, ratio, verdict(ratio <= 1.0)))
				}
			}
		}
	}
	fmt.Fprintf(md, "\ncaptureFirst downtime / `tar cf` (target ≤ 1.0×): %s. Downtime is what the worker reports in its summary: first stop → units started again.\n\n", strings.Join(verdicts, ", "))
}

// fsType names the file system type of dir (statfs), for the results.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown file system"
	}
	switch st.Type {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x01021994:
		return "tmpfs"
	case 0x9123683E:
		return "btrfs"
	}
	return fmt.Sprintf("file system type %#x", st.Type)
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// upsertTargets replaces the delimited section in the results file (or
// appends it).
func upsertTargets(file, section string) error {
	return upsertSection(file, targetsBegin, targetsEnd, section)
}
