// Command bench measures backupgen's archiver against the native tools on a
// deterministic corpus and writes a Markdown table to -results (make bench:
// the untracked bench/out/results.md; make bench-record: the tracked
// bench/results.md).
//
//	go run ./bench [-size 1GiB] [-reps 3] [-xz-reps 3] [-formats tar.gz,zip] ...
//
// (`make bench` builds it and passes BENCH_SIZE, BENCH_REPS, BENCH_XZ_REPS,
// BENCH_FORMATS, BENCH_FLAGS.) It must be run from the repository root. It
// installs nothing: a missing baseline tool is reported as "missing".
//
// "ours" is bench/archiver (archive.Write given the output file, as the
// worker does with one destination or all on one file system). When cmd/backup-worker builds, a
// "backup-worker run" row is added per format: the whole run (archive, fsync,
// full verification of the written copy, state/retention bookkeeping) with a
// stand-in systemctl first on PATH; it is not comparable to a bare `tar`.
// With -targets (BENCH_TARGETS) the worker targets of bench/targets.go are
// measured too (three destinations vs one, peak RSS at 1x and 4x the corpus,
// downtime with captureFirst; downtime-load, bench/load.go: downtime idle
// vs under a competing load, current vs old priority, written to
// bench/out/downtime-load.md only); -skip-main measures only those and updates
// their section of the results file in place. Runs alternate between tools within each format; the table shows the
// median wall and CPU (user+sys, including child processes) time, the
// largest peak RSS over the repetitions (wait4 rusage: the largest single
// process of the tree; for ours also the Go process alone), and the output
// size.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
)

type tool struct {
	name   string // table label
	ours   bool   // our archiver (the ratio reference)
	worker bool   // backup-worker run
	// baseline: the native pipeline the full run is compared with
	// (fullrun.go).
	baseline bool
	needs    []string // executables that must be on PATH
	argv     []string
	dir      string
	env      []string
	out      string // output file, or a directory for the worker
	reps     int
}

type result struct {
	wall, cpu []time.Duration
	rss, self int64 // KiB, max over reps
	child     int64 // KiB: the worker's largest child process (native compressor)
	size      int64
	missing   string
	failed    string
	note      string
}

func main() {
	sizeFlag := flag.String("size", envOr("BENCH_SIZE", "1GiB"), "corpus size (e.g. 256MiB, 1GiB)")
	reps := flag.Int("reps", envInt("BENCH_REPS", 3), "repetitions per tool")
	xzReps := flag.Int("xz-reps", envInt("BENCH_XZ_REPS", 3), "repetitions for the (slow) tar.xz tools")
	workerReps := flag.Int("worker-reps", envInt("BENCH_WORKER_REPS", -1), "repetitions of the backup-worker run rows (0 = none; default: -reps)")
	workerFormats := flag.String("worker-formats", envOr("BENCH_WORKER_FORMATS", "tar.gz,tar.zst,zip,tar.bz2,tar.xz"), "formats that get a backup-worker run row")
	pureGo := flag.Bool("pure-go", false, "also run our archiver without native compressors on PATH (pure-Go fallbacks)")
	formats := flag.String("formats", envOr("BENCH_FORMATS", "tar,tar.gz,tar.zst,zip,tar.bz2,tar.xz"), "comma-separated formats to run")
	threads := flag.Int("threads", runtime.NumCPU(), "threads for every tool (N)")
	outDir := flag.String("out", "bench/out", "work directory (corpus cache, archives, binaries)")
	resultsFile := flag.String("results", "bench/results.md", "Markdown results file")
	targets := flag.String("targets", envOr("BENCH_TARGETS", ""), "worker targets to measure too (comma-separated: fullrun,dests,rss,downtime,downtime-load,offsite,restore; see bench/fullrun.go, bench/targets.go, bench/load.go, bench/offsite.go, bench/restore.go)")
	rssFormats := flag.String("rss-formats", envOr("BENCH_RSS_FORMATS", "tar.gz,zip,tar.zst,tar.bz2,tar.xz"), "formats of -targets rss")
	fullrunFormats := flag.String("fullrun-formats", envOr("BENCH_FULLRUN_FORMATS", "tar.zst,tar.gz,zip,tar.bz2,tar.xz"), "formats of -targets fullrun")
	targetReps := flag.Int("target-reps", envInt("BENCH_TARGET_REPS", 3), "repetitions of each worker-target run (tar.xz: -xz-reps)")
	destFormat := flag.String("dest-format", envOr("BENCH_DEST_FORMAT", "tar.gz"), "format of the three-vs-one-destinations target")
	downtimeFormats := flag.String("downtime-formats", envOr("BENCH_DOWNTIME_FORMATS", "tar.gz,tar.xz"), "formats of the downtime target")
	normalFormats := flag.String("downtime-normal-formats", envOr("BENCH_DOWNTIME_NORMAL_FORMATS", "tar.gz,tar.xz"), "formats of the downtime target also run in normal mode (a tar.xz run in normal mode keeps the unit down for minutes)")
	loadFormat := flag.String("downtime-load-format", envOr("BENCH_DOWNTIME_LOAD_FORMAT", "tar.gz"), "format of the downtime-load target")
	loadBusy := flag.Int("downtime-load-busy", envInt("BENCH_DOWNTIME_LOAD_BUSY", runtime.NumCPU()), "busy-loop processes of the downtime-load target's load")
	loadWrite := flag.Int("downtime-load-write-mib", envInt("BENCH_DOWNTIME_LOAD_WRITE_MIB", 256), "size in MiB of the file the downtime-load writer rewrites")
	loadTimeout := flag.Duration("downtime-load-timeout", 5*time.Minute, "kill a downtime-load run after this long (reported as a timeout)")
	loadSchedIdle := flag.Bool("downtime-load-sched-idle", false, "downtime-load: also measure the old unit's CPUSchedulingPolicy=idle (chrt --idle)")
	captureDir := flag.String("capture-dir", envOr("BENCH_CAPTURE_DIR", ""), "downtime target: put a copy of the corpus, the destinations (so the capture) and `tar cf` output in this directory (e.g. a loop-mounted ext4; see bench/targets.go)")
	baselineBin := flag.String("downtime-baseline-bin", envOr("BENCH_DOWNTIME_BASELINE_BIN", ""), "downtime target: also measure this backup-worker binary's captureFirst downtime, alternating with the current build's (before/after)")
	workerBinFlag := flag.String("worker-bin", envOr("BENCH_WORKER_BIN", ""), "measure this backup-worker binary instead of building ./cmd/backup-worker (e.g. an older commit's, for a before/after)")
	skipMain := flag.Bool("skip-main", false, "measure only -targets and update their section of the results file, keeping the main table")
	flag.Parse()
	if *workerReps < 0 {
		*workerReps = *reps
	}

	size, err := parseSize(*sizeFlag)
	check(err)
	if _, err := os.Stat("go.mod"); err != nil {
		fatalf("run from the repository root (go.mod not found)")
	}
	work, err := filepath.Abs(*outDir)
	check(err)
	check(os.MkdirAll(work, 0o755))
	corpus := filepath.Join(work, "corpus-"+*sizeFlag)
	check(buildCorpus(corpus, size))
	corpusBytes, corpusFiles := du(corpus)

	bin := filepath.Join(work, "bin")
	check(os.MkdirAll(bin, 0o755))
	archiver := filepath.Join(bin, "archiver")
	if out, err := exec.Command("go", "build", "-o", archiver, "./bench/archiver").CombinedOutput(); err != nil {
		fatalf("building bench/archiver: %v\n%s", err, out)
	}
	workerBin := filepath.Join(bin, "backup-worker")
	workerNote := ""
	if *workerReps > 0 || *targets != "" || *pureGo {
		if *workerBinFlag != "" {
			workerBin, err = filepath.Abs(*workerBinFlag)
			check(err)
			check(os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fakeSystemctl), 0o755))
		} else if out, err := exec.Command("go", "build", "-o", workerBin, "./cmd/backup-worker").CombinedOutput(); err != nil {
			workerNote = fmt.Sprintf("cmd/backup-worker does not build; only the archive-only program was measured: %s", firstLine(string(out)))
			workerBin = ""
		} else {
			check(os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fakeSystemctl), 0o755))
		}
	} else {
		workerBin = ""
	}
	doTargets := func() {
		if *targets == "" {
			return
		}
		if workerBin == "" {
			fatalf("-targets needs backup-worker: %s", workerNote)
		}
		which := map[string]bool{}
		downtimeLoad, offsite, restore := false, false, false
		for _, t := range strings.Split(*targets, ",") {
			switch t = strings.TrimSpace(t); t {
			case "restore":
				restore = true
			case "dests", "rss", "downtime":
				which[t] = true
			case "downtime-load":
				downtimeLoad = true
			case "offsite":
				offsite = true
			case "fullrun":
				// measured by runFullrun
			default:
				fatalf("unknown target %q (want fullrun, dests, rss, downtime, downtime-load, offsite, restore)", t)
			}
		}
		te := &targetsEnv{workerBin: workerBin, bin: bin, work: work, threads: strconv.Itoa(*threads), reps: *targetReps, xzReps: *xzReps}
		if *captureDir != "" {
			te.captureDir, err = filepath.Abs(*captureDir)
			check(err)
		}
		if *baselineBin != "" {
			te.baseline, err = filepath.Abs(*baselineBin)
			check(err)
		}
		if len(which) > 0 {
			section := runTargets(te, which, corpus, filepath.Base(corpus), size, *destFormat, strings.Split(*downtimeFormats, ","), strings.Split(*normalFormats, ","), strings.Split(*rssFormats, ","))
			check(upsertTargets(*resultsFile, section))
			os.Stdout.WriteString(section)
		}
		if offsite {
			section := te.offsiteSection(corpus, size)
			check(upsertSection(*resultsFile, offsiteBegin, offsiteEnd, section))
			os.Stdout.WriteString(section)
		}
		if restore {
			// Written under -out only, like downtime-load (bench/restore.go).
			md := te.restoreTarget(corpus, filepath.Base(corpus))
			out := filepath.Join(work, "restore.md")
			check(os.WriteFile(out, []byte("## Restore (issue 15)\n\n"+md), 0o644))
			fmt.Fprintf(os.Stderr, "bench: wrote %s\n", out)
			os.Stdout.WriteString(md)
		}
		if downtimeLoad {
			// Written under -out only: the tracked results file gets this
			// table by hand, with the command that produced it.
			md, err := te.downtimeLoad(corpus, filepath.Base(corpus), loadOpts{format: *loadFormat, busy: *loadBusy, writeMiB: *loadWrite,
				timeout: *loadTimeout, schedIdle: *loadSchedIdle, warmup: time.Second})
			check(err)
			out := filepath.Join(work, "downtime-load.md")
			check(os.WriteFile(out, []byte("## Downtime under load (issue 11 item 9)\n\n"+md), 0o644))
			fmt.Fprintf(os.Stderr, "bench: wrote %s\n", out)
			os.Stdout.WriteString(md)
		}
	}
	mainWorkerBin := workerBin
	if *workerReps == 0 && !strings.Contains(","+*targets+",", ",fullrun,") {
		mainWorkerBin = ""
	}

	n := strconv.Itoa(*threads)
	parent, base := filepath.Dir(corpus), filepath.Base(corpus)
	arch := filepath.Join(work, "archives")
	check(os.MkdirAll(arch, 0o755))
	oursTool := func(format string) []tool {
		out := filepath.Join(arch, "ours."+format)
		ts := []tool{{name: "ours (archive.Write)", ours: true, argv: []string{archiver, "-format", format, "-threads", n, "-o", out, corpus}, out: out}}
		if *pureGo && format != "zip" {
			ts = append(ts, tool{name: "ours, pure Go (no native tools on PATH)", argv: ts[0].argv, out: out, env: []string{"PATH=/nonexistent"}})
		}
		if mainWorkerBin != "" && strings.Contains(","+*workerFormats+",", ","+format+",") {
			dest := filepath.Join(arch, "worker-"+format)
			cfg := filepath.Join(arch, "worker-"+format+".json")
			check(os.WriteFile(cfg, []byte(fmt.Sprintf(`{"name":"bench","serviceName":[],"dataPaths":[%q],"user":"root","group":"root",
"backup":{"paths":[%q],"format":%q,"threads":%s,"stateDirectory":%q}}`, corpus, dest, format, n, filepath.Join(arch, "worker-state"))), 0o644))
			wr := *workerReps
			if format == "tar.xz" {
				wr = min(wr, *xzReps)
			}
			ts = append(ts, tool{name: "backup-worker run (+fsync+verify)", worker: true, argv: []string{workerBin, "run", "--config", cfg}, out: dest,
				env: []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "FAKE_SYSTEMCTL_DIR=" + arch}, reps: wr})
		}
		return ts
	}
	tarI := func(label, prog, ext string) tool {
		out := filepath.Join(arch, label+"."+ext)
		return tool{name: "tar -I '" + prog + "'", needs: []string{"tar", strings.Fields(prog)[0]}, argv: []string{"tar", "-I", prog, "-cf", out, "-C", parent, base}, out: out, baseline: true}
	}
	groups := map[string][]tool{
		"tar": {{name: "tar cf (I/O floor)", needs: []string{"tar"}, argv: []string{"tar", "cf", filepath.Join(arch, "plain.tar"), "-C", parent, base}, out: filepath.Join(arch, "plain.tar")}},
		"tar.gz": append(oursTool("tar.gz"),
			tool{name: "tar czf", needs: []string{"tar", "gzip"}, argv: []string{"tar", "czf", filepath.Join(arch, "tarczf.tar.gz"), "-C", parent, base}, out: filepath.Join(arch, "tarczf.tar.gz")},
			tarI("pigz", "pigz -p "+n, "tar.gz")),
		"tar.zst": append(oursTool("tar.zst"), tarI("zstd", "zstd -T"+n, "tar.zst")),
		"zip": append(oursTool("zip"),
			tool{name: "zip -r -q -y", needs: []string{"zip"}, argv: []string{"zip", "-r", "-q", "-y", filepath.Join(arch, "zip.zip"), base}, dir: parent, out: filepath.Join(arch, "zip.zip"), baseline: true}),
		"tar.bz2": append(oursTool("tar.bz2"),
			tool{name: "tar cjf", needs: []string{"tar", "bzip2"}, argv: []string{"tar", "cjf", filepath.Join(arch, "tarcjf.tar.bz2"), "-C", parent, base}, out: filepath.Join(arch, "tarcjf.tar.bz2")},
			tarI("pbzip2", "pbzip2 -p"+n, "tar.bz2")),
		"tar.xz": append(oursTool("tar.xz"), tarI("xz", "xz -T"+n, "tar.xz")),
	}

	type row struct {
		format string
		t      tool
		r      *result
	}
	if strings.Contains(","+*targets+",", ",fullrun,") && *skipMain {
		// Only the headline pairs: each format's full run and its native
		// pipeline, alternating, from a warm page cache (a cold first
		// run, e.g. after the restore bench dropped the caches, took
		// 74 s instead of 7 s and made a median of 2 meaningless).
		warmCorpus(corpus)
		results := map[string][]*result{}
		var fs []string
		for _, f := range strings.Split(*fullrunFormats, ",") {
			f = strings.TrimSpace(f)
			var ts []tool
			for _, t := range groups[f] {
				if t.worker || t.baseline {
					t.reps = 0 // both -reps (tar.xz: -xz-reps)
					ts = append(ts, t)
				}
			}
			if len(ts) != 2 {
				fatalf("fullrun: no worker and native rows for format %q", f)
			}
			groups[f] = ts
			results[f] = runGroup(f, ts, *reps, *xzReps)
			fs = append(fs, f)
		}
		section := fullrunSection(fullrunRows(fs, groups, results), fmt.Sprintf("`bench -skip-main -targets fullrun` (bench/fullrun.go; corpus %s, %s)", base, human(corpusBytes)))
		check(upsertFullrun(*resultsFile, section))
		os.Stdout.WriteString(section)
		doTargets()
		return
	}
	if *skipMain {
		doTargets()
		return
	}
	var rows []row
	results := map[string][]*result{}
	var formatList []string
	for _, format := range strings.Split(*formats, ",") {
		format = strings.TrimSpace(format)
		ts, ok := groups[format]
		if !ok {
			fatalf("unknown format %q", format)
		}
		results[format] = runGroup(format, ts, *reps, *xzReps)
		formatList = append(formatList, format)
		for i := range ts {
			rows = append(rows, row{format, ts[i], results[format][i]})
		}
	}

	// Markdown.
	var md bytes.Buffer
	fmt.Fprintf(&md, "# Archive benchmark\n\n")
	if fr := fullrunRows(formatList, groups, results); len(fr) > 0 {
		md.WriteString(fullrunSection(fr, "`make bench` (bench/main.go, from the rows below)") + "\n## Archive only\n\n")
	}
	fmt.Fprintf(&md, "Generated by `make bench` (bench/main.go) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&md, "- Machine: %s, %d cores, %s RAM, Linux %s, Go %s\n", cpuModel(), runtime.NumCPU(), memTotal(), kernel(), runtime.Version())
	fmt.Fprintf(&md, "- Corpus: %s (%s, %d files/dirs/symlinks; seed %d): ~20%% small text/JSON/YAML/INI files of 1-20 KB, ~40%% logs, ~15%% database-like pages, ~25%% random (media-like), symlinks, empty dirs. Warm page cache.\n", base, human(corpusBytes), corpusFiles, corpusSeed)
	fmt.Fprintf(&md, "- N = %s threads for every tool; repetitions: %d (tar.xz: %d, backup-worker rows: %d), alternating; median wall and CPU (user+sys incl. children), max peak RSS (largest single process; \"Go\" = our Go process alone).\n", n, *reps, *xzReps, *workerReps)
	fmt.Fprintf(&md, "- Tools: %s\n", toolVersions())
	if workerNote != "" {
		fmt.Fprintf(&md, "- %s\n", workerNote)
	}
	fmt.Fprintf(&md, "\n| format | tool | wall s | CPU s | peak RSS MiB | output MiB | ours/this wall | ours/this size | notes |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n")
	var ours *result
	for _, rw := range rows {
		r := rw.r
		if rw.t.ours {
			ours = r
		}
		switch {
		case r.missing != "":
			fmt.Fprintf(&md, "| %s | %s | missing | | | | | | `%s` not on PATH |\n", rw.format, rw.t.name, r.missing)
			continue
		case len(r.wall) == 0:
			fmt.Fprintf(&md, "| %s | %s | failed | | | | | | %s |\n", rw.format, rw.t.name, r.failed)
			continue
		}
		rss := fmt.Sprintf("%.0f", float64(r.rss)/1024)
		if rw.t.worker && r.self > 0 {
			rss = fmt.Sprintf("%.0f (worker %.0f)", float64(r.rss)/1024, float64(r.self)/1024)
		} else if r.self > 0 {
			rss = fmt.Sprintf("%.0f (Go %.0f)", float64(r.rss)/1024, float64(r.self)/1024)
		}
		ratioW, ratioS := "", ""
		if !rw.t.ours && !rw.t.worker && ours != nil && len(ours.wall) > 0 && rw.format != "tar" {
			ratioW = fmt.Sprintf("%.2f", median(ours.wall).Seconds()/median(r.wall).Seconds())
			ratioS = fmt.Sprintf("%.3f", float64(ours.size)/float64(r.size))
		}
		note := r.note
		if r.failed != "" {
			note += " FAILED: " + r.failed
		}
		fmt.Fprintf(&md, "| %s | %s | %.2f | %.2f | %s | %.1f | %s | %s | %s |\n", rw.format, rw.t.name,
			median(r.wall).Seconds(), median(r.cpu).Seconds(), rss, float64(r.size)/(1<<20), ratioW, ratioS, strings.TrimSpace(note))
	}
	// Keep the worker-targets and offsite sections of an earlier run
	// (doTargets replaces them when it runs).
	if old, err := os.ReadFile(*resultsFile); err == nil {
		for _, m := range [][2]string{{targetsBegin, targetsEnd}, {offsiteBegin, offsiteEnd}} {
			if i := strings.Index(string(old), m[0]); i >= 0 {
				if j := strings.Index(string(old)[i:], m[1]); j >= 0 {
					md.WriteString("\n" + string(old)[i:i+j+len(m[1])] + "\n")
				}
			}
		}
	}
	check(os.WriteFile(*resultsFile, md.Bytes(), 0o644))
	os.Stdout.Write(md.Bytes())
	doTargets()
}

var selfRSS = regexp.MustCompile(`selfrss_kib=(\d+)`)

func runOnce(t tool, r *result) {
	if t.worker {
		os.RemoveAll(t.out)
		os.RemoveAll(filepath.Join(filepath.Dir(t.out), "worker-state"))
		os.MkdirAll(t.out, 0o755)
	} else {
		os.Remove(t.out)
	}
	cmd := exec.Command(t.argv[0], t.argv[1:]...)
	cmd.Dir = t.dir
	cmd.Env = append(os.Environ(), t.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if t.ours || t.worker {
		// Let our archiver log which compressor it picked.
		cmd.Env = append(cmd.Env, "BENCH_LOG=debug")
	}
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		var w *hwmWatch
		if t.worker {
			w = watchHWM(cmd.Process.Pid)
		}
		err = cmd.Wait()
		if w != nil {
			self, child := w.stop()
			r.self, r.child = max(r.self, self), max(r.child, child)
		}
	}
	wall := time.Since(start)
	if err != nil {
		r.failed = fmt.Sprintf("%v: %s", err, lastLines(stderr.String(), 3))
		return
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r.wall = append(r.wall, wall)
	r.cpu = append(r.cpu, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
	r.rss = max(r.rss, ru.Maxrss)
	if m := selfRSS.FindStringSubmatch(stderr.String()); m != nil {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		r.self = max(r.self, v)
	}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "compressor") && !strings.Contains(r.note, "compressor") {
			if i := strings.Index(l, "msg="); i >= 0 {
				l = l[i+4:]
			}
			r.note += " " + strings.ReplaceAll(l, "|", "/")
		}
	}
	r.size = outputSize(t.out)
}

func (r *result) last() string {
	if r.failed != "" {
		return "FAILED " + r.failed
	}
	i := len(r.wall) - 1
	return fmt.Sprintf("wall %.2fs cpu %.2fs rss %d MiB size %.1f MiB", r.wall[i].Seconds(), r.cpu[i].Seconds(), r.rss/1024, float64(r.size)/(1<<20))
}

func outputSize(p string) int64 {
	var n int64
	filepath.Walk(p, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.HasSuffix(fi.Name(), ".json") {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func du(dir string) (bytes int64, entries int) {
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			entries++
			if fi.Mode().IsRegular() {
				bytes += fi.Size()
			}
		}
		return nil
	})
	return
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suf), 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return int64(v * float64(u.m)), nil
		}
	}
	return 0, fmt.Errorf("bad size %q", s)
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(l[strings.Index(l, ":")+1:])
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	var kb int64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:")), "%d", &kb)
		}
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func toolVersions() string {
	var out []string
	for _, t := range [][]string{{"tar", "--version"}, {"gzip", "--version"}, {"pigz", "--version"}, {"zstd", "--version"}, {"zip", "-v"}, {"bzip2", "--help"}, {"pbzip2", "--version"}, {"xz", "--version"}} {
		if _, err := exec.LookPath(t[0]); err != nil {
			out = append(out, t[0]+" missing")
			continue
		}
		b, _ := exec.Command(t[0], t[1:]...).CombinedOutput()
		v := regexp.MustCompile(`\d+\.\d+(\.\d+)?`).FindString(string(b))
		out = append(out, t[0]+" "+v)
	}
	return strings.Join(out, ", ")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.ReplaceAll(strings.Join(ls, " / "), "|", "/")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if v := os.Getenv(k); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fatalf("%s=%q: %v", k, v, err)
		}
		return n
	}
	return def
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...)
	os.Exit(1)
}

// fakeSystemctl stands in for systemctl during the backup-worker runs. It
// keeps each unit's state in FAKE_SYSTEMCTL_DIR (active until stopped) and
// answers is-active as systemctl does (the state on stdout, exit 3 when
// inactive): the worker refuses a unit whose state it cannot read. Every
// call is logged with its time (seconds since the epoch), so a target can
// measure the downtime from the stand-in's side too.
const fakeSystemctl = `#!/bin/sh
echo "$(date +%s.%N) $*" >> "$FAKE_SYSTEMCTL_DIR/systemctl-calls.log"
unit=$(printf %s "$3" | tr -c 'A-Za-z0-9@._-' _)
state="$FAKE_SYSTEMCTL_DIR/unit-$unit.stopped"
case "$1" in
is-active)
	if [ -e "$state" ]; then echo inactive; exit 3; fi
	echo active; exit 0 ;;
stop) : > "$state"; exit 0 ;;
start) rm -f "$state"; exit 0 ;;
esac
exit 0
`

// runGroup runs a format's tools reps times each (tar.xz: xzReps), in turn,
// and returns their results in the tools' order.
func runGroup(format string, ts []tool, reps, xzReps int) []*result {
	results := make([]*result, len(ts))
	maxReps := 0
	for i := range ts {
		results[i] = &result{}
		if ts[i].reps == 0 {
			ts[i].reps = reps
			if format == "tar.xz" {
				ts[i].reps = xzReps
			}
		}
		maxReps = max(maxReps, ts[i].reps)
		for _, need := range ts[i].needs {
			if _, err := exec.LookPath(need); err != nil {
				results[i].missing = need
			}
		}
	}
	for rep := 0; rep < maxReps; rep++ {
		for i, t := range ts {
			r := results[i]
			if r.missing != "" || r.failed != "" || rep >= t.reps {
				continue
			}
			runOnce(t, r)
			if t.ours && rep == 0 && r.failed == "" {
				// Our output must be a valid archive (checksums and
				// all), or its numbers mean nothing.
				if _, err := archive.VerifyFile(context.Background(), t.out, format); err != nil {
					r.failed = "output does not verify: " + err.Error()
				}
			}
			fmt.Fprintf(os.Stderr, "%-8s %-42s rep %d: %s\n", format, t.name, rep+1, r.last())
		}
	}
	return results
}
