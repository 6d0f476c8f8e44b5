package worker

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/notify"
)

// Progress display. On a terminal (stderr is a character device and not
// under systemd) one status line is redrawn every second on stderr and
// erased when the phase ends; otherwise (systemd, a pipe, a file) a
// "progress" line is logged every progressLogInterval. Both show the bytes
// and files done, the rate, and an ETA from the preflight data size.
//
// Hand-written rather than github.com/schollz/progressbar/v3: its current
// release (v3.19.1) requires go 1.25 and pulls in golang.org/x/term and
// x/sys, while this module supports go 1.23; one line of text needs none of
// that.
const (
	progressLogInterval = 30 * time.Second
	progressTTYInterval = time.Second
)

// stderrIsTerminal reports whether progress should be drawn on stderr.
func stderrIsTerminal() bool {
	if os.Getenv("JOURNAL_STREAM") != "" {
		return false
	}
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress reports p's advance for phase until the returned stop
// function is called. total is the expected byte count (0: unknown).
func (rn *run) startProgress(ctx context.Context, phase string, total int64, p *archive.Progress) (stop func()) {
	tty := rn.progressTTY()
	interval := rn.progressInterval
	if interval <= 0 {
		interval = progressLogInterval
		if tty {
			interval = progressTTYInterval
		}
	}
	var out io.Writer = os.Stderr
	if rn.progressOut != nil {
		out = rn.progressOut
	}
	start := time.Now()
	report := func() {
		files, bytes := p.Files(), p.Bytes()
		rate := float64(bytes) / time.Since(start).Seconds()
		eta, pct := "unknown", ""
		if total > 0 && rate > 0 {
			left := max(total-bytes, 0)
			eta = time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second).String()
			pct = fmt.Sprintf(" (%d%%)", min(100*bytes/total, 100))
		}
		if tty {
			fmt.Fprintf(out, "\r\x1b[K%s: %s of ~%s%s, %d files, %s/s, ETA %s",
				phase, notify.HumanBytes(bytes), notify.HumanBytes(total), pct, files, notify.HumanBytes(int64(rate)), eta)
			return
		}
		rn.log.Info("progress", "phase", phase, "files", files, keyBytes, bytes, "total_bytes", total,
			"rate", notify.HumanBytes(int64(rate))+"/s", "eta", eta)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				report()
				continue
			case <-done:
			case <-ctx.Done():
			}
			if tty {
				fmt.Fprint(out, "\r\x1b[K")
			}
			return
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
