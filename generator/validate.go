package generator

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/backupgen/backupgen/config"
	"github.com/backupgen/backupgen/schedule"
)

var (
	// namespaceRE: dotted Nix identifiers, as in modules.services.virtualization.
	namespaceRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$`)
	// accountRE: a POSIX-ish user or group name, or a numeric id; these end
	// up unquoted in tmpfiles lines, so nothing else is allowed.
	accountRE = regexp.MustCompile(`^([a-z_][a-z0-9_-]*\$?|[0-9]+)$`)
)

// validator collects diagnostics with positions.
type validator struct {
	file  string
	pos   *positions
	diags Diagnostics
}

func (v *validator) errorf(key, format string, args ...any) {
	v.diags = append(v.diags, v.pos.diag(v.file, key, fmt.Sprintf(format, args...)))
}

// validate checks the decoded spec; every problem is reported, none stops
// the others.
func validate(file string, spec *Spec, pos *positions) Diagnostics {
	v := &validator{file: file, pos: pos}
	if spec.Namespace != "" && (!namespaceRE.MatchString(spec.Namespace) || hasReservedComponent(spec.Namespace)) {
		v.errorf("namespace", "%q is not a dotted option path such as \"modules.services.virtualization\"", spec.Namespace)
	}
	v.settings("defaults", spec.Defaults)
	if len(spec.Services) == 0 {
		v.errorf("services", "no services: add at least one [[services]] table with name, serviceName and dataPaths")
	}
	seen := map[string]string{}
	for i, svc := range spec.Services {
		key := fmt.Sprintf("services[%d]", i)
		v.service(key, svc)
		if svc.Name != "" {
			if first, dup := seen[svc.Name]; dup {
				v.errorf(key+".name", "service %q is defined twice (first at %s); names must be unique", svc.Name, first)
			} else {
				seen[svc.Name] = key
			}
		}
		if config.ValidName(svc.Name) {
			v.resolved(key, resolveService(spec.Defaults, svc))
		}
	}
	return v.diags
}

func hasReservedComponent(ns string) bool {
	for _, c := range strings.Split(ns, ".") {
		if nixReserved[c] {
			return true
		}
	}
	return false
}

func (v *validator) service(key string, svc Service) {
	switch {
	case svc.Name == "":
		v.errorf(key, "missing name: every service needs name = \"...\" (used for units and archive names)")
	case !config.ValidName(svc.Name):
		v.errorf(key+".name", "%q is not a valid name: use letters, digits, '_', '.', '-', starting with a letter or digit", svc.Name)
	}
	switch x := svc.ServiceName.(type) {
	case nil:
	case string:
		v.unit(key+".serviceName", x)
	case []any:
		for j, e := range x {
			s, ok := e.(string)
			if !ok {
				v.errorf(fmt.Sprintf("%s.serviceName[%d]", key, j), "must be a string (a systemd unit name)")
				continue
			}
			v.unit(fmt.Sprintf("%s.serviceName[%d]", key, j), s)
		}
	default:
		v.errorf(key+".serviceName", "must be a unit name or a list of unit names, e.g. \"docker-myapp.service\"")
	}
	if len(svc.DataPaths) == 0 {
		v.errorf(key, "missing dataPaths: list the directories to back up, e.g. dataPaths = [\"/var/lib/myapp\"]")
	}
	for j, p := range svc.DataPaths {
		v.path(fmt.Sprintf("%s.dataPaths[%d]", key, j), p)
	}
	if hasControl(svc.Description) {
		v.errorf(key+".description", "must be one line without control characters")
	}
	v.settings(key, svc.ServiceSettings)
}

func (v *validator) unit(key, unit string) {
	if !config.ValidUnit(unit) {
		v.errorf(key, "%q is not a systemd unit name; write it with its suffix, e.g. \"docker-myapp.service\"", unit)
	}
}

func (v *validator) path(key, p string) {
	if why := config.ValidPath(strings.ReplaceAll(p, namePlaceholder, "name")); why != "" {
		v.errorf(key, "%q %s", p, why)
		return
	}
	if hasControl(p) {
		v.errorf(key, "%q contains control characters", p)
	}
}

// settings checks a [defaults] or service block's own values.
func (v *validator) settings(key string, s ServiceSettings) {
	for _, a := range []struct {
		name string
		val  *string
	}{{"user", s.User}, {"group", s.Group}} {
		if a.val != nil && !accountRE.MatchString(*a.val) {
			v.errorf(key+"."+a.name, "%q is not a valid %s name (lowercase letters, digits, '_', '-', or a numeric id)", *a.val, a.name)
		}
	}
	b := s.Backup
	bk := key + ".backup"
	for j, p := range b.Paths {
		v.path(fmt.Sprintf("%s.paths[%d]", bk, j), p)
	}
	if b.Paths != nil && len(b.Paths) == 0 {
		v.errorf(bk+".paths", "is empty: list at least one destination directory")
	}
	for j, p := range b.OptionalPaths {
		v.path(fmt.Sprintf("%s.optionalPaths[%d]", bk, j), p)
	}
	if b.Schedule != nil {
		if _, err := schedule.ToOnCalendar(*b.Schedule); err != nil {
			v.errorf(bk+".schedule", "%v", err)
		}
	}
	if b.Format != nil && !contains(config.Formats, *b.Format) {
		v.errorf(bk+".format", "unknown format %q; use one of %s", *b.Format, strings.Join(config.Formats, ", "))
	}
	nonNegative := func(name string, val *int, meaning string) {
		if val != nil && *val < 0 {
			v.errorf(bk+"."+name, "%d is negative; use 0 (%s) or a positive number", *val, meaning)
		}
	}
	nonNegative("maxRetentionDays", b.MaxRetentionDays, "no age limit")
	nonNegative("retentionSnapshots", b.RetentionSnapshots, "keep all")
	nonNegative("threads", b.Threads, "all cores")
	nonNegative("randomizedDelaySec", b.RandomizedDelaySec, "no delay")
	if b.MinKeep != nil && *b.MinKeep < 1 {
		v.errorf(bk+".minKeep", "%d: must be at least 1, so pruning never deletes every archive", *b.MinKeep)
	}
	if b.CompressionLevel != nil && (*b.CompressionLevel < 0 || *b.CompressionLevel > 22) {
		v.errorf(bk+".compressionLevel", "%d: use 0 (the format's default) up to 22", *b.CompressionLevel)
	}
	if b.TimeoutStartSec != nil && *b.TimeoutStartSec < 1 {
		v.errorf(bk+".timeoutStartSec", "%d: must be positive, so a hung run cannot keep the service down forever", *b.TimeoutStartSec)
	}
	for j, pat := range b.Exclude {
		k := fmt.Sprintf("%s.exclude[%d]", bk, j)
		switch {
		case pat == "" || strings.HasPrefix(pat, "/"):
			v.errorf(k, "%q: patterns are relative to each data path, e.g. \"cache/**\"", pat)
		case !doublestar.ValidatePattern(pat):
			v.errorf(k, "%q is not a valid glob pattern", pat)
		case hasControl(pat):
			v.errorf(k, "%q contains control characters", pat)
		}
	}
	for j, u := range b.OnFailure {
		v.unit(fmt.Sprintf("%s.onFailure[%d]", bk, j), u)
	}
}

// resolved checks what only shows once defaults are applied.
func (v *validator) resolved(key string, s ServiceModel) {
	for j, dest := range s.Backup.Paths {
		for _, d := range s.DataPaths {
			if dest == d || strings.HasPrefix(dest, strings.TrimSuffix(d, "/")+"/") {
				v.errorf(fmt.Sprintf("%s.backup.paths[%d]", key, j), "destination %q lies inside data path %q, so each backup would contain the previous ones", dest, d)
			}
		}
	}
	for j, p := range s.Backup.OptionalPaths {
		if !contains(s.Backup.Paths, p) {
			v.errorf(fmt.Sprintf("%s.backup.optionalPaths[%d]", key, j), "%q is not one of backup.paths; optionalPaths marks destinations that may be missing", p)
		}
	}
	if len(s.Backup.Paths) == 0 {
		v.errorf(key+".backup.paths", "no destination: set backup.paths here or in [defaults.backup]")
	}
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}
