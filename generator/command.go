package generator

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/backupgen/backupgen/templates"
)

// The per-service command backup-NAME (templates/sh/backup-command.sh):
// one body for both kinds of host. The generated folder holds the body
// once, as the helper file backup-command.sh, which lib.nix's
// mkBackupCommand wraps with pkgs.writeShellApplication; plain hosts get
// usr/local/bin/backup-NAME, the same body behind a prologue that sets
// name, worker and config, each shell-quoted.

// commandFile is the helper file holding the command's body.
const commandFile = "backup-command.sh"

// CommandName is the per-service command's name.
func (s ServiceModel) CommandName() string { return "backup-" + s.Name }

// CommandPath is where plain hosts install the command (the output
// folder mirrors /, as etc/ does).
func (s ServiceModel) CommandPath() string { return "usr/local/bin/" + s.CommandName() }

// commandBody is the command's body, as embedded.
func commandBody() ([]byte, error) {
	return fs.ReadFile(templates.FS, "sh/"+commandFile)
}

// renderCommand is the plain hosts' backup-NAME script.
func renderCommand(s ServiceModel, workerPath, configPath string) ([]byte, error) {
	body, err := commandBody()
	if err != nil {
		return nil, err
	}
	for _, v := range []string{workerPath, configPath} {
		if err := noControl(v); err != nil {
			return nil, fmt.Errorf("%s: %w", s.CommandName(), err)
		}
	}
	var b strings.Builder
	b.WriteString("#!/usr/bin/env bash\n")
	b.WriteString("# " + Header + "\n")
	fmt.Fprintf(&b, "# %s: status, list, verify, prune, restore and run of %s's backups.\n", s.CommandName(), s.Name)
	fmt.Fprintf(&b, "# Install: copy usr/ to /usr (beside etc/ to /etc); run %s help.\n", s.CommandName())
	b.WriteString("set -euo pipefail\n")
	fmt.Fprintf(&b, "name=%s\nworker=%s\nconfig=%s\n", shellQuote(s.Name), shellQuote(workerPath), shellQuote(configPath))
	b.Write(body)
	return []byte(b.String()), nil
}

// shellQuote quotes s as one shell word: single quotes, with each single
// quote written as '\” (the quoting lib.nix's shellQuote also uses).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
