package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

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
  drill --config FILE [--destination DEST]
                               restore the newest archive of each destination into a scratch
                               directory and compare it with the backup's manifest

Global flags:
  -h, --help       show help (also: backup-worker COMMAND --help)
      --version    print the version

`

// Run runs backup-worker with args (without the program name) and returns
// the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		// Last resort: commands restart units in their own defers before a
		// panic gets here; report it as a failure instead of a crash dump.
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "backup-worker: internal error: %v\n%s", p, debug.Stack())
			code = worker.ExitFailed
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage+worker.ExitCodesHelp)
		return worker.ExitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, mainUsage+worker.ExitCodesHelp)
		return worker.ExitOK
	case "--version", "version":
		fmt.Fprintf(stdout, "backup-worker %s\n", programVersion())
		return worker.ExitOK
	}
	c := &cli{stdout: stdout, stderr: stderr, systemd: worker.Systemctl{}}
	cmds := map[string]func(context.Context, []string) int{
		"run":          c.run,
		"recover":      c.recover,
		"check-config": c.checkConfig,
		"status":       c.status,
		"list":         c.list,
		"prune":        c.prune,
		"verify":       c.verify,
		"restore":      c.restore,

		"drill": c.drill,
	}
	if cmd, ok := cmds[args[0]]; ok {
		return cmd(ctx, args[1:])
	}
	fmt.Fprintf(stderr, "backup-worker: unknown command %q\n\n%s%s", args[0], mainUsage, worker.ExitCodesHelp)
	return worker.ExitUsage
}

// programVersion is version, else the module version go install recorded,
// else "devel".
func programVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// cli is what every command writes to and the systemd it talks to.
type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	systemd        worker.Systemd
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
		fmt.Fprintf(w, "Usage: backup-worker %s\n\nFlags:\n%s\n%s", usage, fs.FlagUsages(), worker.ExitCodesHelp)
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(c.stderr, "backup-worker %s: %v\n\n", fs.Name(), err)
		printUsage(c.stderr)
		return true, worker.ExitUsage
	}
	if *help {
		printUsage(c.stdout)
		return true, worker.ExitOK
	}
	level := slog.LevelInfo
	if common != nil {
		if err := level.UnmarshalText([]byte(common.logLevel)); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker %s: --log-level %q: want debug, info, warn or error\n", fs.Name(), common.logLevel)
			return true, worker.ExitUsage
		}
		if common.config == "" {
			fmt.Fprintf(c.stderr, "backup-worker %s: --config FILE is required\n\n", fs.Name())
			printUsage(c.stderr)
			return true, worker.ExitUsage
		}
	}
	c.log = worker.NewLogger(c.stderr, level)
	return false, 0
}

// loadConfig loads and validates the config (worker.LoadConfig: every
// problem, one per line), its problems to stderr.
func (c *cli) loadConfig(path string) (*config.Config, bool) {
	cfg, err := worker.LoadConfig(path)
	if err != nil {
		fmt.Fprintf(c.stderr, "backup-worker: %v\n", err)
		return nil, false
	}
	return cfg, true
}
