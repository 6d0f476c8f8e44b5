package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/backupgen/backupgen/schedule"
)

// runSchedule prints the OnCalendar values for a schedule and, with
// --next, when the timer will start. The times come from the OnCalendar
// values themselves, read as systemd reads them (schedule.Calendar), in the
// zone the timer's machine runs in: the local zone, or --tz. They are
// labelled with that zone, because a timer without a zone in its
// expression fires at local time.
func runSchedule(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("schedule", pflag.ContinueOnError)
	next := fs.IntP("next", "n", 0, "also print the next N elapses")
	tz := fs.String("tz", "", "the zone of the machine the timer runs on (tz database name, e.g. Europe/Berlin; default: the local zone)")
	if code := parse(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "backupgen schedule: want one expression, e.g. backupgen schedule '0 2 * * 1-5'\n")
		return exitUsage
	}
	loc := time.Local
	if *tz != "" {
		l, err := time.LoadLocation(*tz)
		if err != nil || *tz == "Local" {
			fmt.Fprintf(stderr, "backupgen schedule: --tz %q: not a tz database zone (e.g. Europe/Berlin, UTC)\n", *tz)
			return exitUsage
		}
		loc = l
	}
	if *next < 0 || *next > 10000 {
		fmt.Fprintf(stderr, "backupgen schedule: --next %d: want 0 to 10000\n", *next)
		return exitUsage
	}
	cal, err := schedule.ToOnCalendar(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "backupgen schedule: %v\n", err)
		return exitInvalid
	}
	for _, c := range cal {
		fmt.Fprintln(stdout, c)
	}
	if *next == 0 {
		return exitOK
	}
	times, err := elapses(cal, time.Now(), loc, *next)
	if err != nil {
		fmt.Fprintf(stderr, "backupgen schedule: %v\n", err)
		return exitInvalid
	}
	fmt.Fprintf(stdout, "\nnext %d elapses (zone %s):\n", len(times), zoneName(loc))
	for _, t := range times {
		fmt.Fprintln(stdout, t.In(loc).Format("Mon 2006-01-02 15:04:05.999999 MST"))
	}
	return exitOK
}

// zoneName names loc; for the local zone, the name it was loaded from.
func zoneName(loc *time.Location) string {
	if loc != time.Local {
		return loc.String()
	}
	name := strings.TrimPrefix(os.Getenv("TZ"), ":")
	if name == "" {
		if target, err := os.Readlink("/etc/localtime"); err == nil {
			if _, after, ok := strings.Cut(target, "zoneinfo/"); ok {
				name = after
			}
		}
	}
	if name == "" {
		name = "UTC"
		if _, err := os.Stat("/etc/localtime"); err == nil {
			name = "/etc/localtime"
		}
	}
	return "local, " + name
}

// elapses merges the next n elapses of the OnCalendar values after now,
// as one timer with all of them fires.
func elapses(cal []string, now time.Time, loc *time.Location, n int) ([]time.Time, error) {
	seen := map[int64]bool{}
	var all []time.Time
	for _, expr := range cal {
		c, err := schedule.ParseCalendarIn(expr, loc)
		if err != nil {
			return nil, err
		}
		for t, i := now, 0; i < n; i++ {
			if t = c.Next(t, loc); t.IsZero() {
				break
			}
			if !seen[t.UnixMicro()] {
				seen[t.UnixMicro()] = true
				all = append(all, t)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Before(all[j]) })
	if len(all) > n {
		all = all[:n]
	}
	return all, nil
}
