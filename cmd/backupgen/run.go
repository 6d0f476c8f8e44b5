package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/backupgen/backupgen/generator"
	"github.com/backupgen/backupgen/internal/schedule"
)

// Exit codes.
const (
	exitOK      = 0 // success; for check: the output is current
	exitInvalid = 1 // the spec is invalid, or check found drift, or I/O failed
	exitUsage   = 2 // bad command line
)

const usage = `backupgen renders NixOS backup modules and systemd units from a TOML spec.

Usage:
  backupgen generate [--spec FILE | FILE] [--out DIR] [--worker PATH] [--config-dir DIR]
  backupgen check    [--spec FILE | FILE] [--out DIR] [--worker PATH] [--config-dir DIR]
  backupgen validate [--spec FILE | FILE]
  backupgen schedule [--next N] [--tz ZONE] EXPR
  backupgen --version

Commands:
  generate   write every generated file to DIR (all or none), removing
             generated files that the spec no longer produces
  check      exit 1 and print a unified diff when DIR is not what the spec
             generates (for CI)
  validate   report every problem in the spec, write nothing
  schedule   print the OnCalendar values for a cron or calendar expression

The spec is backup.toml unless given with --spec or as the one argument.

Exit codes: 0 ok, 1 invalid spec / drift / I/O error, 2 usage error.
Run "backupgen COMMAND --help" for a command's flags.
`

// Run is the whole command; main only wires the process to it.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "--version", "version":
		fmt.Fprintf(stdout, "backupgen %s\n", version)
		return exitOK
	case "generate":
		return runGenerate(ctx, args[1:], stdout, stderr, false)
	case "check":
		return runGenerate(ctx, args[1:], stdout, stderr, true)
	case "validate":
		return runValidate(args[1:], stdout, stderr)
	case "schedule":
		return runSchedule(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "backupgen: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// specFlags are shared by generate, check and validate.
type specFlags struct {
	spec, out, worker, configDir string
}

func (f *specFlags) register(fs *pflag.FlagSet, withOutput bool) {
	fs.StringVarP(&f.spec, "spec", "s", "backup.toml", "the TOML spec (or give it as the argument)")
	if withOutput {
		fs.StringVarP(&f.out, "out", "o", "backup", "output folder")
		fs.StringVar(&f.worker, "worker", generator.DefaultOptions.WorkerPath, "backup-worker path used by the plain systemd units")
		fs.StringVar(&f.configDir, "config-dir", generator.DefaultOptions.ConfigDir, "where the plain units read worker configs")
	}
}

// specArg takes the spec from the one positional argument, if any. It
// returns a non-negative exit code on a usage error: more than one
// argument, or an argument that contradicts --spec.
func (f *specFlags) specArg(fs *pflag.FlagSet, stderr io.Writer) int {
	switch {
	case fs.NArg() == 0:
		return -1
	case fs.NArg() > 1:
		fmt.Fprintf(stderr, "backupgen %s: want at most one spec file, got %d arguments: %s\n", fs.Name(), fs.NArg(), strings.Join(fs.Args(), " "))
		return exitUsage
	case fs.Changed("spec") && fs.Arg(0) != f.spec:
		fmt.Fprintf(stderr, "backupgen %s: two spec files: --spec %s and %s; give one\n", fs.Name(), f.spec, fs.Arg(0))
		return exitUsage
	}
	f.spec = fs.Arg(0)
	return -1
}

// parse parses flags; it returns a non-negative exit code when the command
// should end (help or usage error).
func parse(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) int {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage of backupgen %s:\n%s", fs.Name(), fs.FlagUsages())
			return exitOK
		}
		fmt.Fprintf(stderr, "backupgen %s: %v\n%s", fs.Name(), err, fs.FlagUsages())
		return exitUsage
	}
	return -1
}

func runGenerate(_ context.Context, args []string, stdout, stderr io.Writer, check bool) int {
	name := "generate"
	if check {
		name = "check"
	}
	var f specFlags
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	f.register(fs, true)
	if code := parse(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if code := f.specArg(fs, stderr); code >= 0 {
		return code
	}
	data, err := os.ReadFile(f.spec)
	if err != nil {
		fmt.Fprintf(stderr, "backupgen: %v\n", err)
		return exitInvalid
	}
	files, err := generator.Generate(f.spec, data, generator.Options{WorkerPath: f.worker, ConfigDir: f.configDir})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitInvalid
	}
	if check {
		drift, err := diffTree(f.out, files)
		if err != nil {
			fmt.Fprintf(stderr, "backupgen: %v\n", err)
			return exitInvalid
		}
		if drift != "" {
			fmt.Fprint(stdout, drift)
			fmt.Fprintf(stderr, "backupgen: %s is not what %s generates; run: backupgen generate --spec %s --out %s\n", f.out, f.spec, f.spec, f.out)
			return exitInvalid
		}
		fmt.Fprintf(stdout, "%s is up to date (%d files)\n", f.out, len(files))
		return exitOK
	}
	written, removed, err := writeTree(f.out, files)
	if err != nil {
		fmt.Fprintf(stderr, "backupgen: %v\n", err)
		return exitInvalid
	}
	fmt.Fprintf(stdout, "wrote %d files to %s (%d changed, %d stale removed)\n", len(files), f.out, written, removed)
	return exitOK
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	var f specFlags
	fs := pflag.NewFlagSet("validate", pflag.ContinueOnError)
	f.register(fs, false)
	if code := parse(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if code := f.specArg(fs, stderr); code >= 0 {
		return code
	}
	data, err := os.ReadFile(f.spec)
	if err != nil {
		fmt.Fprintf(stderr, "backupgen: %v\n", err)
		return exitInvalid
	}
	spec, err := generator.Validate(f.spec, data)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitInvalid
	}
	fmt.Fprintf(stdout, "%s: ok (%d services)\n", f.spec, len(spec.Services))
	return exitOK
}

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
