// Package templates holds the text/templates and constant Nix files that
// backupgen renders. It exists only because //go:embed cannot reach a
// parent folder; the generator package parses them once.
package templates

import "embed"

// FS holds every template (*.tmpl), the constant Nix sources (nix/*.nix)
// and the per-service command's body (sh/backup-command.sh).
//
//go:embed *.tmpl nix/*.nix sh/*.sh
var FS embed.FS
