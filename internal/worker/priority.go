//go:build linux

package worker

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
)

// The worker runs at normal CPU and I/O priority while the application is
// stopped, so downtime is as short as the machine allows; once the units
// are started again, the rest of the run (compression after a capture,
// copies, verification, pruning) yields to the application.
const (
	backgroundNice = 19
	// ioprioClassBE with the lowest level: idle would starve the run
	// under a busy disk until its TimeoutStartSec kills it.
	ioprioClassBE     = 2
	ioprioClassShift  = 13
	ioprioLowestLevel = 7
	ioprioWhoProcess  = 1
	backgroundIOPrio  = ioprioClassBE<<ioprioClassShift | ioprioLowestLevel
)

// lowerPriority moves the worker to background priority. Nice values and
// I/O priorities belong to threads on Linux, so every thread of the
// process is changed; threads and children started later inherit the
// value from the thread that creates them. Failure only costs the
// application some speed, so it is logged, not fatal.
//
// Only under systemd (INVOCATION_ID is set for every unit): the generated
// unit no longer sets Nice=/IOSchedulingClass=, and this is its
// replacement. A run started by hand, and the test binaries that drive the
// worker in-process, keep the priority they were given.
func lowerPriority(log *slog.Logger) {
	if os.Getenv("INVOCATION_ID") == "" {
		return
	}
	if err := setProcessPriority(backgroundNice, backgroundIOPrio); err != nil {
		log.Warn("could not lower the worker's priority", "error", err)
		return
	}
	log.Debug("units are running again; worker priority lowered", "nice", backgroundNice, "io_class", "best-effort", "io_level", ioprioLowestLevel)
}

// setProcessPriority sets nice and ioprio on every thread. Twice over the
// thread list: a thread the runtime starts meanwhile may have copied the
// old values from a thread not yet changed.
func setProcessPriority(nice, ioprio int) error {
	for pass := 0; pass < 2; pass++ {
		tids, err := threadIDs()
		if err != nil {
			return err
		}
		for _, tid := range tids {
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("setpriority(thread %d, %d): %w", tid, nice, err)
			}
			if _, _, e := syscall.Syscall(syscall.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(ioprio)); e != 0 && e != syscall.ESRCH {
				return fmt.Errorf("ioprio_set(thread %d): %w", tid, e)
			}
		}
	}
	return nil
}

// threadIDs lists the process's threads.
func threadIDs() ([]int, error) {
	f, err := os.Open("/proc/self/task")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(names))
	for _, n := range names {
		if tid, err := strconv.Atoi(n); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
