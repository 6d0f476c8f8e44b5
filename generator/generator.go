// Package generator turns a backupgen TOML spec into NixOS modules, Nix
// helpers and plain systemd units. The pipeline is
// spec (decode) → validate → model → render; it is pure: it takes bytes and
// returns files, and only the command layer touches the disk.
package generator

import (
	"fmt"
	"regexp"
)

// Options are the generator's settings that are not part of the spec.
type Options struct {
	// WorkerPath is the absolute path of backup-worker on hosts without
	// NixOS, used in the plain units' ExecStart=.
	WorkerPath string
	// ConfigDir is where the plain units expect the worker configs
	// (the generated etc/backupgen folder installed to /etc/backupgen).
	ConfigDir string
}

// DefaultOptions are the paths used by the plain units unless overridden.
var DefaultOptions = Options{WorkerPath: "/usr/local/bin/backup-worker", ConfigDir: "/etc/backupgen"}

// plainPathRE: paths that go into ExecStart= unquoted, where systemd would
// otherwise split on spaces and expand % and $.
var plainPathRE = regexp.MustCompile(`^/[A-Za-z0-9/._+-]*$`)

// Validate checks a spec without rendering it. file names the spec in
// diagnostics.
func Validate(file string, data []byte) (*Spec, error) {
	spec, pos, diags := decodeSpec(file, data)
	if spec == nil {
		return nil, diags.err()
	}
	diags = append(diags, validate(file, spec, pos, diags)...)
	if len(diags) > 0 {
		return nil, diags.err()
	}
	return spec, nil
}

// Generate validates the spec and renders every output file, sorted by
// path. On any problem it returns every diagnostic (a *multierror.Error of
// Diagnostic values) and no files.
func Generate(file string, data []byte, opts Options) ([]File, error) {
	for _, p := range []struct{ flag, val string }{{"--worker", opts.WorkerPath}, {"--config-dir", opts.ConfigDir}} {
		if !plainPathRE.MatchString(p.val) {
			return nil, fmt.Errorf("%s %q: must be an absolute path of letters, digits and /._+-", p.flag, p.val)
		}
	}
	spec, err := Validate(file, data)
	if err != nil {
		return nil, err
	}
	m, err := buildModel(spec, opts)
	if err != nil {
		return nil, err
	}
	return render(m)
}
