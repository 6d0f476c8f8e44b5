package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// restoreFlags are restore's flags, beyond the common ones.
type restoreFlags struct {
	opts     worker.RestoreOptions
	yes      bool
	identity string
}

// restore restores an archive into a directory or in place
// (worker.Restore) and prints what went where.
func (c *cli) restore(ctx context.Context, args []string) int {
	var common commonFlags
	var f restoreFlags
	fs := pflag.NewFlagSet("restore", pflag.ContinueOnError)
	fs.StringVar(&f.opts.Archive, "archive", "", "the archive to restore: its `NAME` as `list` shows it (looked up in --destination, else in every destination in order), or the PATH of an archive file (required)")
	fs.StringVar(&f.opts.Destination, "destination", "", "read --archive NAME from this `DEST`ination of the service (a directory, s3:// or sftp:// URL as `list` shows it)")
	fs.StringVar(&f.opts.Target, "target", "", "extract into `DIR` (new or empty) instead of restoring in place")
	fs.BoolVar(&f.yes, "yes", false, "restore in place: stop the units, move the current data aside, extract, start the units")
	fs.BoolVar(&f.opts.TrustUnsigned, "trust-unsigned", false, "restore an archive whose signature is missing or wrong (not written by this host's worker)")
	fs.BoolVar(&f.opts.AllowSpecial, "allow-special", false, "also restore setuid/setgid bits, device nodes, fifos and extended attributes outside user.* "+
		"(e.g. security.capability); without it they are skipped with a warning. Only for archives nobody else could have written: "+
		"the service's user can write its destinations")
	fs.StringArrayVar(&f.opts.Paths, "path", nil, "with --target, restore only this file or directory (as it was on this host, inside a data path); repeatable. The whole archive is still verified")
	fs.StringVar(&f.identity, "identity", "", "age identity `FILE` (age-keygen output, or an unencrypted ssh-ed25519/ssh-rsa private key); required for an encrypted (.age) archive")
	if done, code := c.parse(fs, "restore --config FILE --archive NAME|PATH [--destination DEST] [--target DIR [--path PATH]...] [--yes] [--allow-special] [--trust-unsigned] [--identity FILE]", args, &common); done {
		return code
	}
	if code, ok := c.restoreArgs(fs, &f); !ok {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	if err := worker.CheckRestorePaths(cfg, f.opts); err != nil {
		fmt.Fprintf(c.stderr, "backup-worker restore: %v\n", err)
		return worker.ExitUsage
	}
	if f.opts.Target == "" && !f.yes {
		fmt.Fprintf(c.stderr, "backup-worker restore: restoring in place stops %s, moves %s aside to <path>.pre-restore-<timestamp> and extracts %s.\nRe-run with --yes to do that, or use --target DIR to extract elsewhere.\n",
			orNone(cfg.ServiceName), strings.Join(cfg.DataPaths, ", "), strconv.Quote(f.opts.Archive))
		return worker.ExitUsage
	}
	res, err := worker.Restore(ctx, cfg, c.systemd, c.log, f.opts)
	res.WriteText(c.stdout)
	return worker.ExitCode(ctx, err)
}

// restoreArgs checks the arguments that need no config: --archive given
// (and nothing else), and an identity for an encrypted archive (loaded).
func (c *cli) restoreArgs(fs *pflag.FlagSet, f *restoreFlags) (code int, ok bool) {
	if f.opts.Archive == "" || fs.NArg() > 0 {
		fmt.Fprintln(c.stderr, "backup-worker restore: --archive NAME|PATH is required (and no other arguments)")
		return worker.ExitUsage, false
	}
	switch {
	case f.identity != "":
		var err error
		if f.opts.Identities, err = worker.LoadIdentities(f.identity); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker restore: %v\n", err)
			return worker.ExitUsage, false
		}
	case worker.IsEncryptedName(f.opts.Archive):
		fmt.Fprintf(c.stderr, "backup-worker restore: %s is encrypted: give --identity FILE (a private key of one of its recipients)\n", strconv.Quote(f.opts.Archive))
		return worker.ExitUsage, false
	}
	return 0, true
}

func orNone(units []string) string {
	if len(units) == 0 {
		return "no units"
	}
	return strings.Join(units, ", ")
}
