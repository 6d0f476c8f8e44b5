//go:build linux

package worker

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// threadPriority is one thread's nice value and I/O priority.
type threadPriority struct{ nice, ioprio int }

// threadPriorities reads every thread's nice value from /proc (field 19 of
// stat) and its I/O priority with ioprio_get.
func threadPriorities(t *testing.T) map[int]threadPriority {
	t.Helper()
	tids, err := threadIDs()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]threadPriority{}
	for _, tid := range tids {
		b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
		if err != nil {
			continue // the thread exited
		}
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		nice, err := strconv.Atoi(fields[16]) // field 19; fields[0] is field 3
		if err != nil {
			t.Fatalf("thread %d stat: %v", tid, err)
		}
		io, _, e := syscall.Syscall(syscall.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
		if e != 0 {
			continue
		}
		out[tid] = threadPriority{nice, int(io)}
	}
	return out
}

// priorityRecorder wraps the systemd stand-in and records the threads'
// priorities whenever the worker stops or starts a unit.
type priorityRecorder struct {
	Systemd
	t       *testing.T
	mu      sync.Mutex
	atStop  []map[int]threadPriority
	atStart []map[int]threadPriority
}

func (p *priorityRecorder) Stop(ctx context.Context, unit string) error {
	p.mu.Lock()
	p.atStop = append(p.atStop, threadPriorities(p.t))
	p.mu.Unlock()
	return p.Systemd.Stop(ctx, unit)
}

func (p *priorityRecorder) Start(ctx context.Context, unit string) error {
	p.mu.Lock()
	p.atStart = append(p.atStart, threadPriorities(p.t))
	p.mu.Unlock()
	return p.Systemd.Start(ctx, unit)
}

// TestPriorityLoweredAfterRestart: while the unit is stopped the worker
// runs at normal priority (the unit no longer sets Nice=19/idle), and once
// it is started again every worker thread is at nice 19 and best-effort
// I/O level 7. It changes the process's priority, so it runs in a child
// process of the test binary.
func TestPriorityLoweredAfterRestart(t *testing.T) {
	t.Parallel()
	if os.Getenv("BACKUPGEN_PRIORITY_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPriorityLoweredAfterRestart$", "-test.v", "-test.count=1")
		// As under systemd, which sets INVOCATION_ID for every unit.
		cmd.Env = append(os.Environ(), "BACKUPGEN_PRIORITY_CHILD=1", "INVOCATION_ID=0123456789abcdef0123456789abcdef")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestPriorityLoweredAfterRestart") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "--- SKIP") {
			t.Skipf("child skipped:\n%s", out)
		}
		return
	}
	normal := threadPriority{0, ioprioClassBE<<ioprioClassShift | 4}
	if err := setProcessPriority(normal.nice, normal.ioprio); err != nil {
		t.Skipf("!!! cannot set a normal priority to start from (%v): this check did NOT run", err)
	}
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, nil)
	r := e.runner(cfg)
	rec := &priorityRecorder{Systemd: r.systemd, t: t}
	r.systemd = rec
	if code := r.Run(context.Background()); code != 0 {
		t.Fatalf("exit %d\n%s", code, e.logBuf.String())
	}
	if len(rec.atStop) != 1 || len(rec.atStart) != 1 {
		t.Fatalf("stops %d, starts %d; want 1 each", len(rec.atStop), len(rec.atStart))
	}
	for _, snap := range [][]map[int]threadPriority{rec.atStop, rec.atStart} {
		for tid, p := range snap[0] {
			if p != normal {
				t.Errorf("thread %d at %+v while the unit was stopped, want %+v", tid, p, normal)
			}
		}
	}
	want := threadPriority{backgroundNice, backgroundIOPrio}
	after := threadPriorities(t)
	if len(after) == 0 {
		t.Fatal("no threads read")
	}
	for tid, p := range after {
		if p != want {
			t.Errorf("thread %d at %+v after the restart, want %+v", tid, p, want)
		}
	}
}
