// Command archiver is the bench harness's stand-in for backup-worker: it
// calls archive.Write for the given data paths and writes the archive to -o.
// On success it prints one line to stderr: "selfrss_kib=N files=N bytes=N",
// N being this process's own peak RSS (VmHWM), without child processes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/backupgen/backupgen/internal/archive"

	"github.com/backupgen/backupgen/internal/worker"
)

func main() {
	// The same soft memory limit as backup-worker, so the rows compare what
	// the worker does.
	worker.ApplyMemoryLimit()
	format := flag.String("format", "tar.gz", "archive format")
	level := flag.Int("level", 0, "compression level (0 = default)")
	threads := flag.Int("threads", 0, "threads (0 = all cores)")
	out := flag.String("o", "", "output file")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: archiver -format F -o FILE DATAPATH...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Like the worker with one destination (or all on one file system):
	// archive.Write gets the *os.File, so a native compressor writes it
	// itself and the Go encoders write through a 1 MiB buffer.
	lvl := slog.LevelWarn
	if os.Getenv("BENCH_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	st, err := archive.Write(ctx, f, flag.Args(), archive.Options{Format: *format, Level: *level, Threads: *threads, Logger: log})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "archiver:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "selfrss_kib=%d files=%d bytes=%d\n", vmHWM(), st.Files, st.BytesRead)
}

func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var n int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")), "%d", &n)
			return n
		}
	}
	return -1
}
