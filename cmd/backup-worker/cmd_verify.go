package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/worker"
	"github.com/spf13/pflag"
)

// verify checks archives in full (worker.Verify) and prints one line per
// archive as soon as it is checked.
func (c *cli) verify(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	all := fs.Bool("all", false, "verify every archive, not only the newest per destination")
	adopt := fs.Bool("adopt", false, "sign the selected archives that verify but are unsigned (written before signing existed): only for archives you vouch for")
	identity := fs.String("identity", "", "age identity `FILE` (age-keygen output, or an unencrypted ssh-ed25519/ssh-rsa private key): decrypt encrypted (.age) archives and parse them in full; without it only their checksum and signature are checked")
	if done, code := c.parse(fs, "verify --config FILE [--all] [--adopt] [--identity FILE] [ARCHIVE...]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return worker.ExitUsage
	}
	opts := worker.VerifyOptions{Archives: fs.Args(), All: *all, Adopt: *adopt,
		Report: func(v worker.Verdict) { fmt.Fprintln(c.stdout, v) },
		Warn:   func(err error) { fmt.Fprintf(c.stderr, "backup-worker verify: %v\n", err) },
	}
	if *identity != "" {
		var err error
		if opts.Identities, err = worker.LoadIdentities(*identity); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker verify: %v\n", err)
			return worker.ExitUsage
		}
	}
	for _, p := range opts.Archives {
		if _, ok := worker.ArchiveFormat(p); !ok {
			fmt.Fprintf(c.stderr, "backup-worker verify: %s: unknown archive extension (want one of %s)\n", p, strings.Join(config.Formats, ", "))
			return worker.ExitUsage
		}
	}
	_, err := worker.Verify(ctx, cfg, c.log, opts)
	return worker.ExitCode(ctx, err)
}
