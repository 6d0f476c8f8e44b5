package main

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hwmWatch samples the peak RSS (VmHWM) of a process and, separately, the
// largest of its child processes (a native compressor the worker starts),
// every 20 ms until stop. wait4's rusage cannot tell them apart: its
// ru_maxrss is the largest process of the tree. VmHWM only grows, so the
// last sample before the exit misses at most the final 20 ms.
type hwmWatch struct {
	pid         int
	mu          sync.Mutex
	self, child int64 // KiB
	done        chan struct{}
	stopped     chan struct{}
}

func watchHWM(pid int) *hwmWatch {
	w := &hwmWatch{pid: pid, done: make(chan struct{}), stopped: make(chan struct{})}
	go w.loop()
	return w
}

func (w *hwmWatch) loop() {
	defer close(w.stopped)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		w.sample()
		select {
		case <-w.done:
			return
		case <-t.C:
		}
	}
}

func (w *hwmWatch) sample() {
	self := vmHWM(w.pid)
	var child int64
	for _, c := range childPIDs(w.pid) {
		child = max(child, vmHWM(c))
	}
	w.mu.Lock()
	w.self, w.child = max(w.self, self), max(w.child, child)
	w.mu.Unlock()
}

// stop ends the sampling (call it once the process has exited) and returns
// the worker's and the largest child's peak RSS in KiB.
func (w *hwmWatch) stop() (self, child int64) {
	close(w.done)
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.self, w.child
}

// vmHWM reads VmHWM (KiB) from /proc/PID/status, 0 when it is gone.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// childPIDs lists the children of every thread of pid.
func childPIDs(pid int) []int {
	p := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(p)
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(p + "/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
