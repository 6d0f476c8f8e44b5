package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
	"github.com/backupgen/backupgen/internal/schedule"
)

// Status is what `backup-worker status --json` prints.
type Status struct {
	Service string   `json:"service"`
	LastRun *LastRun `json:"lastRun"`
	// LastRunError says why there is no LastRun ("no run recorded", or
	// a record that could not be read).
	LastRunError string `json:"lastRunError,omitempty"`
	// NextRun is the next time backup.onCalendar elapses (nil: never, or
	// no schedule in the config); the timer may add its randomized delay.
	NextRun  *time.Time `json:"nextRun"`
	Schedule []string   `json:"schedule"`
	// Timer is the state of NAME-backup.timer as systemctl reports it,
	// or "unknown".
	Timer        string       `json:"timer"`
	Destinations []DestStatus `json:"destinations"`
	// LastDrill is the latest restore drill (drill_report.go); nil: none
	// recorded, or drills are off.
	LastDrill      *LastDrill `json:"lastDrill,omitempty"`
	LastDrillError string     `json:"lastDrillError,omitempty"`
}

// DestStatus summarizes the archives in one destination.
type DestStatus struct {
	Path       string     `json:"path"`
	Archives   int        `json:"archives"`
	Newest     string     `json:"newest,omitempty"`
	NewestTime *time.Time `json:"newestTime,omitempty"`
	TotalBytes int64      `json:"totalBytes"`
	// Missing: an optional destination that is not there (not an error).
	Missing bool   `json:"missing,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ExitCode is the exit code of `status`: failed when a destination could
// not be listed or the last-run record is unreadable (no record yet is ok).
func (st Status) ExitCode() int {
	for _, d := range st.Destinations {
		if d.Error != "" {
			return ExitFailed
		}
	}
	if st.LastRun == nil && !strings.HasPrefix(st.LastRunError, errNoLastRun.Error()) {
		return ExitFailed
	}
	return ExitOK
}

// ReadStatus gathers the status: the last-run record, the next run
// and what each destination holds (through Destination, so remote stores
// are listed with the unit's credentials like local directories).
func ReadStatus(ctx context.Context, cfg *config.Config, sd Systemd, log *slog.Logger, now time.Time) Status {
	st := Status{Service: cfg.Name, Schedule: cfg.Backup.OnCalendar, Timer: "unknown"}
	rec, err := readLastRun(cfg.Backup.StateDirectory)
	switch {
	case errors.Is(err, errNoLastRun):
		st.LastRunError = fmt.Sprintf("%s in %s (none yet, or none since the last boot if it is under /run)", errNoLastRun, cfg.Backup.StateDirectory)
	case err != nil:
		st.LastRunError = err.Error()
	default:
		st.LastRun = rec
	}
	st.NextRun = nextRun(cfg.Backup.OnCalendar, now)
	if state, err := sd.ActiveState(ctx, cfg.Name+"-backup.timer"); err == nil {
		st.Timer = state
	}
	for _, dir := range cfg.Backup.Paths {
		st.Destinations = append(st.Destinations, destStatus(ctx, cfg, dir, log))
	}
	st.readLastDrill(cfg)
	return st
}

// nextRun is the earliest next elapse of the timer's OnCalendar values,
// computed with the parser checked against systemd (internal/schedule):
// it needs no running systemd and reads the same config on NixOS and
// plain hosts; `systemctl list-timers` also shows the randomized delay.
func nextRun(exprs []string, now time.Time) *time.Time {
	var next time.Time
	for _, e := range exprs {
		cal, err := schedule.ParseCalendar(e)
		if err != nil {
			continue
		}
		if t := cal.Next(now, nil); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return nil
	}
	return &next
}

// destStatus lists one destination's archives: how many, the newest, and
// their total size (each archive's Size from Open).
func destStatus(ctx context.Context, cfg *config.Config, dir string, log *slog.Logger) DestStatus {
	ds := DestStatus{Path: dir}
	store, err := openStore(cfg, dir, cfg.Backup.IsOptional(dir), owner{uid: -1, gid: -1}, nil, log)
	var archives []StoredArchive
	if err == nil {
		defer closeStore(store)
		archives, err = store.List(ctx)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir) {
			ds.Missing = true
			return ds
		}
		ds.Error = err.Error()
		return ds
	}
	ds.Archives = len(archives)
	if len(archives) > 0 {
		ds.Newest = archives[0].Name
		t := archives[0].Time
		ds.NewestTime = &t
	}
	for _, a := range archives {
		r, err := store.Open(ctx, a.Name)
		if err != nil {
			ds.Error = fmt.Sprintf("%s: %v", a.Name, err)
			continue
		}
		ds.TotalBytes += r.Size()
		r.Close()
	}
	return ds
}

// WriteText writes the human form of `status` (ages relative to now).
func (st Status) WriteText(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "%s\n", st.Service)
	if r := st.LastRun; r != nil {
		fmt.Fprintf(w, "  last run   %s at %s (%s ago), exit %d\n", r.Result, r.Finished.Local().Format("2006-01-02 15:04:05 MST"), age(now, r.Finished), r.ExitCode)
		if r.Archive != "" {
			fmt.Fprintf(w, "  archive    %s, %s\n", r.Archive, notify.HumanBytes(r.SizeBytes))
		}
		fmt.Fprintf(w, "  took       %s, service down %s\n", secs(r.DurationSec), secs(r.DowntimeSec))
		if r.Health != "" {
			fmt.Fprintf(w, "  health     %s\n", r.Health)
		}
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  error      %s\n", e)
		}
		for _, e := range r.Warnings {
			fmt.Fprintf(w, "  warning    %s\n", e)
		}
	} else {
		fmt.Fprintf(w, "  last run   %s\n", st.LastRunError)
	}
	next := "never (no backup.onCalendar in the config)"
	if st.NextRun != nil {
		next = fmt.Sprintf("%s (in %s)", st.NextRun.Local().Format("2006-01-02 15:04:05 MST"), age(*st.NextRun, now))
	}
	fmt.Fprintf(w, "  next run   %s; %s-backup.timer %s\n", next, st.Service, st.Timer)
	st.writeDrill(w, now)
	fmt.Fprintf(w, "  archives\n")
	for _, d := range st.Destinations {
		switch {
		case d.Missing:
			fmt.Fprintf(w, "    %s: missing (optional)\n", d.Path)
		case d.Error != "" && d.Archives == 0:
			fmt.Fprintf(w, "    %s: error: %s\n", d.Path, d.Error)
		case d.Archives == 0:
			fmt.Fprintf(w, "    %s: no archives\n", d.Path)
		default:
			fmt.Fprintf(w, "    %s: %d, newest %s (%s ago), %s in all\n", d.Path, d.Archives, d.Newest, age(now, *d.NewestTime), notify.HumanBytes(d.TotalBytes))
			if d.Error != "" {
				fmt.Fprintf(w, "      error: %s\n", d.Error)
			}
		}
	}
}

func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	if d < time.Minute {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
