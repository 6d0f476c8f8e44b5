package worker

// The commands not yet moved to cmd/backup-worker (list, verify, prune,
// restore) and the flag parsing they share. run, check-config, recover
// and status live there already, one file each.

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/spf13/pflag"
)

// Command runs one of the commands list, verify, prune and restore
// with args (the command's name first) and returns the exit code; ok is
// false for any other name.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	return commandWith(ctx, args, stdout, stderr, seams{})
}

// commandWith is Command with the given seams (tests: their own systemctl
// stand-in; Command: the real things).
func commandWith(ctx context.Context, args []string, stdout, stderr io.Writer, s seams) (int, bool) {
	s.withDefaults()
	c := &cli{stdout: stdout, stderr: stderr, seams: s}
	cmds := map[string]func(context.Context, []string) int{
		"verify":  c.verify,
		"prune":   c.prune,
		"restore": c.restore,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return ExitUsage, false
	}
	return cmd(ctx, args[1:]), true
}

type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	seams          seams // systemd and the rest; defaults filled by commandWith
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
		fmt.Fprintf(w, "Usage: backup-worker %s\n\nFlags:\n%s\n%s", usage, fs.FlagUsages(), ExitCodesHelp)
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
	c.log = NewLogger(c.stderr, level)
	return false, 0
}

// loadConfig loads and validates the config (LoadConfig), its problems
// to stderr.
func (c *cli) loadConfig(path string) (*config.Config, bool) {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintf(c.stderr, "backup-worker: %v\n", err)
		return nil, false
	}
	return cfg, true
}
