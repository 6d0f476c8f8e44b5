package main

// The restore target (issue 15): `backup-worker restore --target`, which
// checks the signature, hashes the archive and extracts it in one pass
// into a private staging directory, vs the native extraction a user would
// run, `tar -I 'pigz -p2' -xf` for tar.gz and `tar -I 'zstd -T2' -xf` for
// tar.zst, on the bench corpus; target ≤ 1.0×. The native time is also
// shown with `sha256sum` of the archive before it (what a user who checks
// the .sha256 waits for). Runs alternate between ours and native (which
// goes first alternates too). Before each timed run the previous run's
// tree is removed, everything is written back (sync) and the page cache
// is dropped (coldStart): otherwise the write-back of the last run's
// 20,000 files lands in whichever run comes next, and dominated it.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// nativeExtract is the native command per format ({archive}, {dir}).
var nativeExtract = map[string][]string{
	"tar.gz":  {"tar", "-I", "pigz -p2", "-xf", "{archive}", "-C", "{dir}"},
	"tar.zst": {"tar", "-I", "zstd -T2", "-xf", "{archive}", "-C", "{dir}"},
}

// restoreArchive makes one archive of corpus with backup-worker run and
// returns the config and the archive's path.
func (te *targetsEnv) restoreArchive(corpus, format string) (cfg, archive string, err error) {
	dir := filepath.Join(te.work, "targets", "restore-"+format)
	os.RemoveAll(dir)
	dest := filepath.Join(dir, "dest")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return "", "", err
	}
	cfg = filepath.Join(dir, "config.json")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`{"name":"bench","serviceName":[],"dataPaths":[%q],"user":"root","group":"root",
"backup":{"paths":[%q],"format":%q,"threads":%s,"stateDirectory":%q}}`,
		corpus, dest, format, te.threads, filepath.Join(dir, "state"))), 0o644)
	if err != nil {
		return "", "", err
	}
	cmd := exec.Command(te.workerBin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+te.bin+":"+os.Getenv("PATH"), "FAKE_SYSTEMCTL_DIR="+dir, "JOURNAL_STREAM=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("backup-worker run: %v: %s", err, lastLines(string(out), 3))
	}
	m, _ := filepath.Glob(filepath.Join(dest, "bench-*."+format))
	if len(m) != 1 {
		return "", "", fmt.Errorf("want one archive in %s, found %v", dest, m)
	}
	return cfg, m[0], nil
}

// coldStart removes dir (the previous run's tree), writes every dirty
// page back and drops the page cache, so each timed run starts from the
// same state: nothing of an earlier run left to write back, the archive
// read from disk. mkdir: recreate dir empty (tar -C needs it). Dropping
// the cache needs root (CI and the bench machine run as root); without
// it the sync alone is done and the result says so (dropNote).
func coldStart(dir string, mkdir bool) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if mkdir {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil && dropNote == "" {
		dropNote = fmt.Sprintf(" The page cache could not be dropped (%v): runs read the archive warm.", err)
	}
	return nil
}

// dropNote says when coldStart could not drop the page cache.
var dropNote string

// timed runs argv after a sync and returns its wall time.
func timed(argv []string, env []string) (time.Duration, error) {
	d, _, err := timedCPU(argv, env)
	return d, err
}

// timedCPU is timed that also returns the CPU time (user + system) of
// the process and the children it waited for (pigz, zstd).
func timedCPU(argv []string, env []string) (time.Duration, time.Duration, error) {
	syscall.Sync()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, 0, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, lastLines(out.String(), 3))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return d, cpu, nil
}

// restoreRow measures one format: ours, native, native after sha256sum.
type restoreTimes struct {
	ours, native, nativeSum, oursCPU, nativeCPU time.Duration
}

func (te *targetsEnv) restoreRow(corpus, format string) (rt restoreTimes, err error) {
	cfg, arch, err := te.restoreArchive(corpus, format)
	if err != nil {
		return rt, err
	}
	defer os.RemoveAll(filepath.Dir(filepath.Dir(arch)))
	target := filepath.Join(te.work, "targets", "restore-target")
	env := append(os.Environ(), "PATH="+te.bin+":"+os.Getenv("PATH"), "JOURNAL_STREAM=")
	var o, n, s, oc, nc []time.Duration
	ours := func() error {
		if err := coldStart(target, false); err != nil {
			return err
		}
		d, c, err := timedCPU([]string{te.workerBin, "restore", "--config", cfg, "--archive", arch, "--target", target}, env)
		o, oc = append(o, d), append(oc, c)
		return err
	}
	argv := slicesReplace(nativeExtract[format], arch, target)
	native := func() error {
		if err := coldStart(target, true); err != nil {
			return err
		}
		d, c, err := timedCPU(argv, env)
		n, nc = append(n, d), append(nc, c)
		if err != nil {
			return err
		}
		if err := coldStart(target, true); err != nil {
			return err
		}
		sum, err := timed([]string{"sha256sum", arch}, env)
		if err != nil {
			return err
		}
		d, err = timed(argv, env)
		s = append(s, sum+d)
		return err
	}
	for i := 0; i < te.reps; i++ {
		first, second := ours, native
		if i%2 == 1 {
			first, second = native, ours
		}
		if err := first(); err != nil {
			return rt, err
		}
		if err := second(); err != nil {
			return rt, err
		}
		fmt.Fprintf(os.Stderr, "restore %-8s rep %d: ours %.2fs (cpu %.2fs) native %.2fs (cpu %.2fs) sha256sum+native %.2fs\n",
			format, i+1, o[i].Seconds(), oc[i].Seconds(), n[i].Seconds(), nc[i].Seconds(), s[i].Seconds())
	}
	os.RemoveAll(target)
	return restoreTimes{median(o), median(n), median(s), median(oc), median(nc)}, nil
}

func slicesReplace(argv []string, archive, dir string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = strings.NewReplacer("{archive}", archive, "{dir}", dir).Replace(a)
	}
	return out
}

// restoreTarget measures every format and returns the Markdown table.
func (te *targetsEnv) restoreTarget(corpus, corpusName string) string {
	var md bytes.Buffer
	fmt.Fprintf(&md, "### Restore: `backup-worker restore --target` vs native extraction (%s)\n\n", corpusName)
	fmt.Fprintf(&md, "Median of %d alternating runs (which goes first alternates); before each, the previous tree is removed, `sync`, and the page cache dropped. Ours includes the signature check, the SHA-256 of the archive and the staging directory; native is plain extraction (and, in the last column, `sha256sum` of the archive first).\n\n", te.reps)
	fmt.Fprintf(&md, "| format | ours s | native s | ours / native | sha256sum + native s | ours / (sha256sum + native) | CPU s ours / native |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range []string{"tar.gz", "tar.zst"} {
		rt, err := te.restoreRow(corpus, f)
		if err != nil {
			fmt.Fprintf(&md, "| %s | failed: %s | | | | | |\n", f, strings.ReplaceAll(err.Error(), "|", "/"))
			continue
		}
		r := rt.ours.Seconds() / rt.native.Seconds()
		fmt.Fprintf(&md, "| %s | %.2f | %.2f | **%.2f×** (%s) | %.2f | %.2f× | %.2f / %.2f |\n", f, rt.ours.Seconds(), rt.native.Seconds(), r, verdict(r <= 1.0),
			rt.nativeSum.Seconds(), rt.ours.Seconds()/rt.nativeSum.Seconds(), rt.oursCPU.Seconds(), rt.nativeCPU.Seconds())
	}
	md.WriteString("\nNative commands: `tar -I 'pigz -p2' -xf` (tar.gz), `tar -I 'zstd -T2' -xf` (tar.zst); target ≤ 1.0×." + dropNote + "\n")
	return md.String()
}
