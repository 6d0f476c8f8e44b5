package generator

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/BurntSushi/toml"
)

// Spec is the decoded TOML spec, before defaults are applied. Pointer and
// nil-slice fields tell "not set" from "set to the zero value", which is
// what lets a service override a spec-wide default with 0 or false.
//
// Key names are the NixOS option names, so a value moves between the spec
// and a host config unchanged.
type Spec struct {
	// Namespace is the option path the per-service modules are declared
	// under, e.g. "modules.services.virtualization".
	Namespace string          `toml:"namespace"`
	Defaults  ServiceSettings `toml:"defaults"`
	Services  []Service       `toml:"services"`
}

// ServiceSettings are the settings that [defaults] provides and each
// service may override.
type ServiceSettings struct {
	Enable *bool   `toml:"enable"`
	User   *string `toml:"user"`
	Group  *string `toml:"group"`
	// CreateUser: the NixOS module declares user and group (nix helper).
	CreateUser *bool          `toml:"createUser"`
	Backup     BackupSettings `toml:"backup"`
}

// Service is one [[services]] entry.
type Service struct {
	Name string `toml:"name"`
	// ServiceName is a unit name or a list of them; decoded as any because
	// TOML has no "string or list" type, checked in validation.
	ServiceName any      `toml:"serviceName"`
	DataPaths   []string `toml:"dataPaths"`
	Description string   `toml:"description"`
	ServiceSettings
}

// BackupSettings mirror the module's backup.* options.
type BackupSettings struct {
	Enable             *bool    `toml:"enable"`
	Paths              []string `toml:"paths"`
	OptionalPaths      []string `toml:"optionalPaths"`
	Schedule           *string  `toml:"schedule"`
	Format             *string  `toml:"format"`
	MaxRetentionDays   *int     `toml:"maxRetentionDays"`
	RetentionSnapshots *int     `toml:"retentionSnapshots"`
	MinKeep            *int     `toml:"minKeep"`
	MinSizeRatio       *float64 `toml:"minSizeRatio"`
	Exclude            []string `toml:"exclude"`
	CompressionLevel   *int     `toml:"compressionLevel"`
	Threads            *int     `toml:"threads"`
	Persistent         *bool    `toml:"persistent"`
	RandomizedDelaySec *int     `toml:"randomizedDelaySec"`
	TimeoutStartSec    *int     `toml:"timeoutStartSec"`
	OnFailure          []string `toml:"onFailure"`
	CaptureFirst       *bool    `toml:"captureFirst"`
	PreBackup          *string  `toml:"preBackup"`
	PostBackup         *string  `toml:"postBackup"`
}

// typeErrorRE matches the TOML library's unpositioned type errors:
// toml: line 5 (last key "services.backup.retentionSnapshots"): incompatible types: ...
var typeErrorRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeSpec parses the TOML text. A syntax or type error stops decoding
// (the TOML library reports one at a time); unknown keys are collected as
// diagnostics so that they are reported together with validation errors.
func decodeSpec(file string, data []byte) (*Spec, *positions, Diagnostics) {
	var spec Spec
	pos := scanPositions(data)
	md, err := toml.Decode(string(data), &spec)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, pos, Diagnostics{{File: file, Line: perr.Position.Line, Col: perr.Position.Col, Message: perr.Message}}
		}
		if m := typeErrorRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			d := Diagnostic{File: file, Line: line, Col: 1, Key: m[2], Message: m[3]}
			for _, o := range pos.occurrences(m[2]) {
				if o.Pos.Line == line {
					d.Key, d.Col = o.Indexed, o.Pos.Col
				}
			}
			return nil, pos, Diagnostics{d}
		}
		return nil, pos, Diagnostics{{File: file, Message: err.Error()}}
	}
	var diags Diagnostics
	seen := map[string]bool{}
	for _, key := range md.Undecoded() {
		plain := key.String()
		if seen[plain] {
			continue
		}
		seen[plain] = true
		msg := fmt.Sprintf("unknown key %q; check its spelling against the spec reference in README.md", key[len(key)-1])
		occ := pos.occurrences(plain)
		if len(occ) == 0 {
			diags = append(diags, Diagnostic{File: file, Key: plain, Message: msg})
		}
		for _, o := range occ {
			diags = append(diags, Diagnostic{File: file, Line: o.Pos.Line, Col: o.Pos.Col, Key: o.Indexed, Message: msg})
		}
	}
	return &spec, pos, diags
}
