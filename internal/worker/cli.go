// Package worker runs one backup job: for the service a config.Config
// describes, it stops the service's units if they run, archives the data
// paths into every destination, starts the units again and prunes (the
// Runner; run.go lists the phases, one file each). It also holds the
// maintenance commands around it (recover, list, verify, prune, restore,
// check-config) and Main, which the backup-worker program calls.
// Destinations are reached through the Destination interface
// (destination.go); localDir is the local directory.
//
// Exit codes:
//
//	0    success
//	1    failed (no verified archive anywhere, a hook or unit stop failed,
//	     a unit did not come back, verify found a bad archive, ...)
//	2    usage error, or missing/invalid config (all problems listed)
//	3    partial: some destinations failed, at least one has a verified archive
//	4    lock held: another run for this service is in progress
//	130  interrupted by SIGINT/SIGTERM (units are started again first)
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failed
  2    usage error or invalid config
  3    partial: some destinations failed, at least one succeeded
  4    lock held: another run for this service is in progress
  130  interrupted (SIGINT/SIGTERM); units were started again
`

const mainUsage = `Usage: backup-worker COMMAND [FLAGS]

Backs up one service as described by a JSON config written by backupgen.

Commands:
  run --config FILE            stop the service, archive, write to every destination, prune, restart
                               [--dry-run: print what it would do, change nothing]
  recover --config FILE        start units a killed run left stopped (for ExecStopPost)
  list --config FILE           list archives per destination [--verify]
  verify --config FILE [ARCHIVE...]
                               check checksum and archive structure (default: newest per destination)
  prune --config FILE          apply the retention policy [--dry-run]
  restore --config FILE --archive NAME|PATH [--destination DEST] [--target DIR] [--yes]
                               restore an archive (into DIR, or in place with --yes)
  check-config FILE            validate a config file and the notification files it names
                               [--no-credentials: the config only, as in the Nix build sandbox]
  status --config FILE [--json]
                               last run, next run, archives per destination

Global flags:
  -h, --help       show help (also: backup-worker COMMAND --help)
      --version    print the version

`

// Main runs backup-worker with args (without the program name) and returns
// the exit code. version is printed by --version.
func Main(ctx context.Context, version string, args []string, stdout, stderr io.Writer) int {
	return mainWith(ctx, version, args, stdout, stderr, seams{})
}

// mainWith is Main with the given seams (tests: their own systemctl
// stand-in; Main: the real things).
func mainWith(ctx context.Context, version string, args []string, stdout, stderr io.Writer, s seams) (code int) {
	defer func() {
		// Last resort: commands restart units in their own defers before a
		// panic gets here; report it as a failure instead of a crash dump.
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "backup-worker: internal error: %v\n%s", p, debug.Stack())
			code = ExitFailed
		}
	}()
	if version == "" {
		version = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage+exitCodesHelp)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, mainUsage+exitCodesHelp)
		return ExitOK
	case "--version", "version":
		fmt.Fprintf(stdout, "backup-worker %s\n", version)
		return ExitOK
	}
	s.withDefaults()
	c := &cli{stdout: stdout, stderr: stderr, seams: s}
	cmds := map[string]func(context.Context, []string) int{
		"run":          c.run,
		"recover":      c.recover,
		"list":         c.list,
		"verify":       c.verify,
		"prune":        c.prune,
		"restore":      c.restore,
		"check-config": c.checkConfig,
		"status":       c.status,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "backup-worker: unknown command %q\n\n%s%s", args[0], mainUsage, exitCodesHelp)
		return ExitUsage
	}
	return cmd(ctx, args[1:])
}

type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	seams          seams // systemd and the rest; defaults filled by mainWith
}

// common flags of every config-driven command.
type commonFlags struct {
	config   string
	logLevel string
}

// parse parses args with fs. It returns done=true with the exit code when
// the command should not run (help shown, or a usage error).
func (c *cli) parse(fs *pflag.FlagSet, usage string, args []string, common *commonFlags) (done bool, code int) {
	fs.SetOutput(io.Discard)
	if common != nil {
		fs.StringVarP(&common.config, "config", "c", "", "the service's JSON config `FILE` (required)")
		fs.StringVar(&common.logLevel, "log-level", "info", "minimum log level: debug, info, warn, error")
	}
	help := fs.BoolP("help", "h", false, "show this help")
	printUsage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: backup-worker %s\n\nFlags:\n%s\n%s", usage, fs.FlagUsages(), exitCodesHelp)
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(c.stderr, "backup-worker %s: %v\n\n", fs.Name(), err)
		printUsage(c.stderr)
		return true, ExitUsage
	}
	if *help {
		printUsage(c.stdout)
		return true, ExitOK
	}
	level := slog.LevelInfo
	if common != nil {
		if err := level.UnmarshalText([]byte(common.logLevel)); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker %s: --log-level %q: want debug, info, warn or error\n", fs.Name(), common.logLevel)
			return true, ExitUsage
		}
		if common.config == "" {
			fmt.Fprintf(c.stderr, "backup-worker %s: --config FILE is required\n\n", fs.Name())
			printUsage(c.stderr)
			return true, ExitUsage
		}
	}
	c.log = newLogger(c.stderr, level)
	return false, 0
}

// loadConfig loads and validates the config. Problems go to stderr, one
// per line under a header naming the file and how many there are; each
// line starts with the JSON key (backup.compressionLevel, dataPaths[1])
// and says how to fix it.
func (c *cli) loadConfig(path string) (*config.Config, bool) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(c.stderr, "backup-worker: cannot read config: %v\n", err)
		return nil, false
	}
	defer f.Close()
	cfg, err := config.Decode(f)
	if err != nil {
		n := 1
		var merr *multierror.Error
		if errors.As(err, &merr) {
			n = len(merr.Errors)
		}
		what := "1 problem"
		if n != 1 {
			what = fmt.Sprintf("%d problems", n)
		}
		fmt.Fprintf(c.stderr, "backup-worker: invalid config %s (%s):\n%s\n", path, what, indent(err.Error()))
		return nil, false
	}
	return cfg, true
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

func (c *cli) run(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "print what a run would stop, write and prune; change nothing (dryrun.go)")
	if done, code := c.parse(fs, "run --config FILE [--dry-run]", args, &common); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "backup-worker run: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return ExitUsage
	}
	if *dry {
		return dryRun(ctx, cfg, c.seams.systemd, &c.seams, c.stdout, c.log)
	}
	r := &Runner{Config: cfg, Log: c.log, HookOutput: c.stderr, seams: c.seams}
	return r.Run(ctx)
}

func (c *cli) checkConfig(ctx context.Context, args []string) int {
	fs := pflag.NewFlagSet("check-config", pflag.ContinueOnError)
	var path string
	var noCredentials bool
	fs.StringVarP(&path, "config", "c", "", "the config `FILE` (or give it as the argument)")
	fs.BoolVar(&noCredentials, "no-credentials", false, "do not read the notification files (the Nix build's sandbox cannot see secrets)")
	if done, code := c.parse(fs, "check-config FILE", args, nil); done {
		return code
	}
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path != "" && fs.NArg() == 0:
	default:
		fmt.Fprintln(c.stderr, "backup-worker check-config: exactly one config FILE is required")
		return ExitUsage
	}
	cfg, ok := c.loadConfig(path)
	if !ok {
		return ExitUsage
	}
	if !noCredentials && !c.checkNotifyFiles(path, cfg) {
		return ExitUsage
	}
	fmt.Fprintln(c.stdout, "ok")
	return ExitOK
}

// checkNotifyFiles reads and parses the notification files as the run
// would ($CREDENTIALS_DIRECTORY first): a missing file, a malformed URL or
// an unknown service is reported under its key, by line number, never
// with the secret.
func (c *cli) checkNotifyFiles(path string, cfg *config.Config) bool {
	if !cfg.Backup.Notify.Enabled() {
		return true
	}
	_, _, errs := readNotifyFiles(cfg.Backup.Notify)
	if len(errs) == 0 {
		return true
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Error())
	}
	fmt.Fprintf(c.stderr, "backup-worker: invalid notification files of %s:\n%s\n", path, indent(strings.Join(lines, "\n")))
	return false
}

// exitCodeFor maps an error of a maintenance command to an exit code.
func exitCodeFor(ctx context.Context, err error) int {
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() != nil:
		return ExitInterrupted
	case errors.Is(err, ErrLockHeld):
		return ExitLockHeld
	}
	return ExitFailed
}
