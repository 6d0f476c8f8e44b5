// Package templates holds the text/templates and constant Nix files that
// backupgen renders. It exists only because //go:embed cannot reach a
// parent folder; the generator package parses them once.
package templates

import "embed"

// FS holds every template (*.tmpl) and the constant Nix sources (nix/*.nix).
//
//go:embed *.tmpl nix/*.nix
var FS embed.FS
