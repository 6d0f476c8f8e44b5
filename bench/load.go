package main

// The downtime-load target (issue 11 item 9): the downtime of a full
// `backup-worker run` (one unit, which the stand-in systemctl reports as
// active) on an idle machine and under a competing CPU and I/O load, for
//
//   - the current unit: the worker runs at the priority it was started with
//     while the unit is stopped and drops to nice 19 and best-effort I/O
//     level 7 once the unit is started again (worker/priority.go; only with
//     INVOCATION_ID set, which systemd sets for every unit, so the bench
//     sets it);
//   - the old unit's priority: `nice -n 19 ionice -c 3` for the whole run
//     (the unit set Nice=19 and IOSchedulingClass=idle), without
//     INVOCATION_ID, so the worker keeps it. With -downtime-load-sched-idle
//     a third row adds CPUSchedulingPolicy=idle (`chrt --idle 0`), which the
//     old unit set too; it is off by default because under load that run
//     barely gets the CPU.
//
// The load is started by the bench before each loaded run and killed after
// it: busy-loop shells (one per core by default) and a writer that rewrites
// a file on the bench directory's file system with dd and fsyncs it, all at
// normal priority, like the application's neighbours would be. Runs
// alternate between the four cases in every repetition.
//
// The table goes to bench/out/downtime-load.md (the -out directory), never
// to the tracked results file.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type loadOpts struct {
	format    string
	busy      int // busy-loop processes
	writeMiB  int // size of the file the writer rewrites
	timeout   time.Duration
	schedIdle bool // add the old unit's CPUSchedulingPolicy=idle row
	warmup    time.Duration
}

// loadCase is one column × row cell of the table.
type loadCase struct {
	label string
	prio  string // row
	wrap  []string
	env   []string
	load  bool
}

// loadRun is one measured run.
type loadRun struct {
	wall      time.Duration // the bench's clock, start to exit
	downtime  time.Duration // the worker's summary: first stop → start
	standIn   time.Duration // the stand-in's clock: stop call → start call
	total     time.Duration // the worker's summary: duration=
	lowered   bool          // the worker logged its priority drop
	timedOut  bool
	loadBytes int64 // bytes the writer wrote during the run
}

var (
	durationRE = regexp.MustCompile(`msg="backup finished".* duration=(\S+)`)
	resultRE   = regexp.MustCompile(`msg="backup finished".* result=(\S+)`)
)

// runLoadCase runs backup-worker once for c, with the load running if
// c.load.
func (te *targetsEnv) runLoadCase(c loadCase, corpus string, o loadOpts) (loadRun, error) {
	dir := filepath.Join(te.work, "targets", "downtime-load-"+c.label)
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	dest := filepath.Join(dir, "dest")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return loadRun{}, err
	}
	cfg := filepath.Join(dir, "config.json")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"name":"bench","serviceName":["bench.service"],"dataPaths":[%q],"user":"root","group":"root",
"backup":{"paths":[%q],"format":%q,"threads":%s,"stateDirectory":%q}}`, corpus, dest, o.format, te.threads, filepath.Join(dir, "state"))), 0o644)
	if err != nil {
		return loadRun{}, err
	}
	syscall.Sync()
	var ld *loadGen
	if c.load {
		if ld, err = startLoad(filepath.Join(te.work, "targets", "load"), o.busy, o.writeMiB); err != nil {
			return loadRun{}, err
		}
		defer ld.stop()
		time.Sleep(o.warmup)
	}
	argv := append(append([]string(nil), c.wrap...), te.workerBin, "run", "--log-level", "debug", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+te.bin+":"+os.Getenv("PATH"), "FAKE_SYSTEMCTL_DIR="+dir, "JOURNAL_STREAM=", "INVOCATION_ID=")
	cmd.Env = append(cmd.Env, c.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var w0 int64
	if ld != nil {
		w0 = ld.written()
	}
	start := time.Now()
	err = cmd.Run()
	r := loadRun{wall: time.Since(start)}
	if ld != nil {
		r.loadBytes = ld.written() - w0
	}
	if ctx.Err() != nil {
		r.timedOut = true
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("%v: %s", err, lastLines(out.String(), 3))
	}
	return r, parseLoadRun(&r, out.String(), filepath.Join(dir, "systemctl-calls.log"))
}

// parseLoadRun reads the worker's summary and the stand-in's call log. A
// summary without result=success, downtime= or duration= is an error: the
// bench must not report a run whose numbers are missing.
func parseLoadRun(r *loadRun, out, callLog string) error {
	res := resultRE.FindStringSubmatch(out)
	if res == nil || res[1] != "success" {
		return fmt.Errorf("no successful summary: %s", lastLines(out, 3))
	}
	var err1, err2 error
	if m := downtimeRE.FindStringSubmatch(out); m != nil {
		r.downtime, err1 = time.ParseDuration(m[1])
	} else {
		err1 = errors.New("the summary has no downtime=")
	}
	if m := durationRE.FindStringSubmatch(out); m != nil {
		r.total, err2 = time.ParseDuration(m[1])
	} else {
		err2 = errors.New("the summary has no duration= (total time)")
	}
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	r.lowered = strings.Contains(out, "worker priority lowered")
	calls, err := os.ReadFile(callLog)
	if err != nil {
		return err
	}
	var stop, startAt float64
	for _, l := range strings.Split(string(calls), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		t, _ := strconv.ParseFloat(f[0], 64)
		switch {
		case f[1] == "stop" && stop == 0:
			stop = t
		case f[1] == "start":
			startAt = t
		}
	}
	if stop == 0 || startAt < stop {
		return fmt.Errorf("the stand-in saw no stop followed by a start:\n%s", calls)
	}
	r.standIn = time.Duration((startAt - stop) * float64(time.Second))
	return nil
}

// downtimeLoad measures the four (or six) cases and returns the Markdown.
func (te *targetsEnv) downtimeLoad(corpus, corpusName string, o loadOpts) (string, error) {
	const (
		rowNew   = "current unit: normal while stopped, then nice 19 + best-effort 7 (INVOCATION_ID set)"
		rowOld   = "old unit's Nice=19 + IOSchedulingClass=idle (`nice -n 19 ionice -c 3`)"
		rowOldCS = "old unit exactly: also CPUSchedulingPolicy=idle (`chrt --idle 0 nice -n 19 ionice -c 3`)"
	)
	rows := []struct {
		name, short string
		wrap, env   []string
	}{
		{rowNew, "new", nil, []string{"INVOCATION_ID=bench-downtime-load"}},
		{rowOld, "old", []string{"nice", "-n", "19", "ionice", "-c", "3"}, nil},
	}
	if o.schedIdle {
		rows = append(rows, struct {
			name, short string
			wrap, env   []string
		}{rowOldCS, "old-schedidle", []string{"chrt", "--idle", "0", "nice", "-n", "19", "ionice", "-c", "3"}, nil})
	}
	for _, need := range []string{"nice", "ionice", "dd", "sh"} {
		if _, err := exec.LookPath(need); err != nil {
			return "", fmt.Errorf("%s not on PATH", need)
		}
	}
	var cases []loadCase
	for _, rw := range rows {
		for _, ld := range []bool{false, true} {
			l := rw.short + "-idle"
			if ld {
				l = rw.short + "-load"
			}
			cases = append(cases, loadCase{label: l, prio: rw.name, wrap: rw.wrap, env: rw.env, load: ld})
		}
	}
	runs := make([][]loadRun, len(cases))
	load0 := loadAvg()
	for rep := 0; rep < max(te.reps, 1); rep++ {
		for i, c := range cases {
			r, err := te.runLoadCase(c, corpus, o)
			if err != nil {
				return "", fmt.Errorf("%s: %w", c.label, err)
			}
			fmt.Fprintf(os.Stderr, "downtime-load %-20s rep %d: downtime %.2fs (stand-in %.2fs) total %.2fs wall %.2fs priority lowered %v load writer %.0f MiB timeout %v\n",
				c.label, rep+1, r.downtime.Seconds(), r.standIn.Seconds(), r.total.Seconds(), r.wall.Seconds(), r.lowered, float64(r.loadBytes)/(1<<20), r.timedOut)
			runs[i] = append(runs[i], r)
		}
	}

	var md bytes.Buffer
	fmt.Fprintf(&md, "Generated by `bench -skip-main -targets downtime-load` (bench/load.go) on %s; %s, %d cores, %s RAM, Linux %s, Go %s; corpus %s; %s, one destination, normal mode (the unit is down until the archive is written; fsync and verification follow the restart); N = %s threads; repetitions: %d, alternating; load average before: %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), memTotal(), kernel(), runtime.Version(), corpusName, o.format, te.threads, max(te.reps, 1), load0)
	fmt.Fprintf(&md, "Load: %d busy-loop shells and a writer rewriting a %d MiB file with `dd conv=fsync` on the bench directory's file system (I/O scheduler: %s), started %s before each loaded run and killed after it. Downtime = the worker's summary `downtime=` (first stop → start); the stand-in systemctl's own clock (stop call → start call) in parentheses. Total = the worker's summary `duration=`. Medians.\n\n",
		o.busy, o.writeMiB, ioScheduler(te.work), o.warmup)
	fmt.Fprintf(&md, "| priority | idle: downtime s | load: downtime s | load/idle | idle: total s | load: total s | priority drop logged |\n|---|---:|---:|---:|---:|---:|---|\n")
	loadDown := map[string]float64{}
	for ri, rw := range rows {
		idle, loaded := runs[2*ri], runs[2*ri+1]
		di, si, ti, oi := medians(idle)
		dl, sl, tl, ol := medians(loaded)
		loadDown[rw.short] = dl
		fmt.Fprintf(&md, "| %s | %s | %s | %s | %s | %s | %s |\n", rw.name,
			cell(di, si, oi), cell(dl, sl, ol), ratioCell(dl, di, oi+ol), secs(ti, oi), secs(tl, ol), dropCell(idle, loaded))
	}
	if n, o := loadDown["new"], loadDown["old"]; n > 0 && o > 0 {
		fmt.Fprintf(&md, "\nUnder load, the old priority's downtime is **%.2f×** the current unit's.\n", o/n)
	}
	fmt.Fprintf(&md, "\nPer run (downtime / stand-in / total, s; for loaded runs the bytes the writer wrote during the run):\n\n")
	for i, c := range cases {
		var parts []string
		for _, r := range runs[i] {
			if r.timedOut {
				parts = append(parts, fmt.Sprintf("timeout after %.0f", r.wall.Seconds()))
				continue
			}
			p := fmt.Sprintf("%.2f / %.2f / %.2f", r.downtime.Seconds(), r.standIn.Seconds(), r.total.Seconds())
			if c.load {
				p += fmt.Sprintf(" (writer: %.0f MiB)", float64(r.loadBytes)/(1<<20))
			}
			parts = append(parts, p)
		}
		fmt.Fprintf(&md, "- %s: %s\n", c.label, strings.Join(parts, "; "))
	}
	return md.String(), nil
}

// medians returns the median worker downtime, stand-in downtime and total
// time in seconds over the runs that finished, and how many timed out.
func medians(rs []loadRun) (down, standIn, total float64, timeouts int) {
	var d, s, t []time.Duration
	for _, r := range rs {
		if r.timedOut {
			timeouts++
			continue
		}
		d, s, t = append(d, r.downtime), append(s, r.standIn), append(t, r.total)
	}
	if len(d) == 0 {
		return 0, 0, 0, timeouts
	}
	return median(d).Seconds(), median(s).Seconds(), median(t).Seconds(), timeouts
}

func cell(down, standIn float64, timeouts int) string {
	if down == 0 && timeouts > 0 {
		return "all timed out"
	}
	s := fmt.Sprintf("%.2f (%.2f)", down, standIn)
	if timeouts > 0 {
		s += fmt.Sprintf(", %d timed out", timeouts)
	}
	return s
}

func secs(v float64, timeouts int) string {
	if v == 0 && timeouts > 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func ratioCell(loaded, idle float64, timeouts int) string {
	if loaded == 0 || idle == 0 {
		return "-"
	}
	s := fmt.Sprintf("**%.2f×**", loaded/idle)
	if timeouts > 0 {
		s += " (timeouts left out)"
	}
	return s
}

// dropCell says in how many runs the worker logged "worker priority
// lowered" (idle runs, loaded runs).
func dropCell(idle, loaded []loadRun) string {
	n := func(rs []loadRun) int {
		c := 0
		for _, r := range rs {
			if r.lowered {
				c++
			}
		}
		return c
	}
	return fmt.Sprintf("%d/%d, %d/%d", n(idle), len(idle), n(loaded), len(loaded))
}

// loadGen is the competing load: busy loops and a writer, each in its own
// process group so that stop kills their children (dd) too.
type loadGen struct {
	cmds []*exec.Cmd
	file string
}

func startLoad(dir string, busy, writeMiB int) (*loadGen, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lg := &loadGen{file: filepath.Join(dir, "writer.dat")}
	argvs := make([][]string, 0, busy+1)
	for i := 0; i < busy; i++ {
		argvs = append(argvs, []string{"sh", "-c", "while :; do :; done"})
	}
	argvs = append(argvs, []string{"sh", "-c", `while :; do dd if=/dev/zero of="$1" bs=1M count="$2" conv=fsync status=none || exit 1; done`, "sh", lg.file, strconv.Itoa(writeMiB)})
	for _, argv := range argvs {
		cmd := exec.Command(argv[0], argv[1:]...)
		// Pdeathsig: the load must not outlive a bench that dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			lg.stop()
			return nil, err
		}
		lg.cmds = append(lg.cmds, cmd)
	}
	return lg, nil
}

// written is the writer's bytes written so far: /proc/<pid>/io of the
// members of the writer's process group (the shell's count includes the dd
// processes it has reaped; the running dd counts its own).
func (lg *loadGen) written() int64 {
	w := lg.cmds[len(lg.cmds)-1].Process.Pid
	var n int64
	for _, p := range groupPIDs(w) {
		n += procWriteBytes(p)
	}
	return n
}

func (lg *loadGen) stop() {
	for _, c := range lg.cmds {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	for _, c := range lg.cmds {
		c.Wait()
	}
	os.Remove(lg.file)
}

// groupPIDs lists the processes in process group pgid.
func groupPIDs(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// procWriteBytes is write_bytes from /proc/pid/io, which includes the
// reaped children's counts (cumulative, like rusage).
func procWriteBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// ioScheduler names the active I/O scheduler of the disk holding dir.
func ioScheduler(dir string) string {
	var st syscall.Stat_t
	if syscall.Stat(dir, &st) != nil {
		return "unknown"
	}
	major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	for _, p := range []string{sys + "/queue/scheduler", sys + "/../queue/scheduler"} {
		if b, err := os.ReadFile(p); err == nil {
			if m := regexp.MustCompile(`\[(\S+)\]`).FindStringSubmatch(string(b)); m != nil {
				return m[1]
			}
		}
	}
	return "unknown"
}
