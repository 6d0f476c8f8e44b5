package generator

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/schedule"
)

var (
	// namespaceRE: dotted Nix identifiers, as in modules.services.virtualization.
	namespaceRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$`)
	// accountRE: a POSIX-ish user or group name, or a numeric id; these end
	// up unquoted in tmpfiles lines, so nothing else is allowed.
	accountRE = regexp.MustCompile(`^([a-z_][a-z0-9_-]*\$?|[0-9]+)$`)
	// placeholderRE finds {placeholders} in paths; ${...} is not one (it is
	// shell or Nix syntax, kept literal like any other character).
	placeholderRE = regexp.MustCompile(`(?:^|[^$])(\{[^{}]*\})`)
	// specifierRE: a systemd specifier (%n, %i, %%) in a unit setting that
	// systemd expands, such as OnFailure=.
	specifierRE = regexp.MustCompile(`%[A-Za-z%]`)
)

// validator collects diagnostics with positions.
type validator struct {
	file  string
	pos   *positions
	diags Diagnostics
	// reported holds the spec keys that already have a diagnostic, so a
	// worker rule does not repeat what a generator rule said.
	reported map[string]bool
}

func (v *validator) errorf(key, format string, args ...any) {
	v.reported[key] = true
	v.diags = append(v.diags, v.pos.diag(v.file, key, fmt.Sprintf(format, args...)))
}

// validate checks the decoded spec; every problem is reported, none stops
// the others. The generator's own rules (namespace, unique names, unit
// settings, placeholders) are checked here; every rule the worker enforces
// is checked by config.Validate on each service's worker config, mapped
// back to the spec key that set the value.
func validate(file string, spec *Spec, pos *positions, decoded Diagnostics) Diagnostics {
	v := &validator{file: file, pos: pos, reported: map[string]bool{}}
	for _, d := range decoded {
		// A mistyped list element leaves its list unset: the list's own
		// worker errors (such as "at least one is required") are moot.
		v.reported[d.Key], v.reported[stripIndex(d.Key)] = true, true
	}
	if spec.Namespace != "" && (!namespaceRE.MatchString(spec.Namespace) || hasReservedComponent(spec.Namespace)) {
		v.errorf("namespace", "%q is not a dotted option path such as \"modules.services.virtualization\"", spec.Namespace)
	}
	v.settings("defaults", spec.Defaults)
	if d := spec.Metrics.TextfileDirectory; d != "" {
		if why := config.MetricsDirectoryProblem(d); why != "" {
			v.errorf("metrics.textfileDirectory", "%q: %s", d, why)
		}
	}
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
	}
	for i, svc := range spec.Services {
		v.workerRules(spec, i, svc)
	}
	// [defaults] values that every service overrides still get checked,
	// through a stand-in service that sets nothing of its own.
	v.workerRules(spec, -1, Service{Name: "name", DataPaths: []string{"/nonexistent/backupgen-defaults-check"}})
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
	if svc.Name == "" {
		v.errorf(key, "missing name: every service needs name = \"...\" (used for units and archive names)")
	}
	if svc.Name == "worker" {
		v.errorf(key+".name", "\"worker\" is reserved: the service's command backup-worker would hide the worker itself; rename the service")
	}
	for j, p := range svc.DataPaths {
		if m := placeholderRE.FindStringSubmatch(p); m != nil {
			ph := m[1]
			v.errorf(fmt.Sprintf("%s.dataPaths[%d]", key, j), "%q: placeholders such as %s are replaced only in backup.paths and backup.optionalPaths; write the data path out", p, ph)
		}
	}
	v.settings(key, svc.ServiceSettings)
}

// settings checks a [defaults] or service block's own values: the rules
// that belong to the generated units and files, not to the worker.
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
	v.placeholders(bk+".paths", b.Paths)
	v.placeholders(bk+".optionalPaths", b.OptionalPaths)
	if b.Schedule != nil {
		if _, err := schedule.ToOnCalendar(*b.Schedule); err != nil {
			v.errorf(bk+".schedule", "%v", err)
		}
	}
	if b.Drill.Schedule != nil {
		if _, err := schedule.ToOnCalendar(*b.Drill.Schedule); err != nil {
			v.errorf(bk+".drill.schedule", "%v", err)
		}
	}
	if b.RandomizedDelaySec != nil && *b.RandomizedDelaySec < 0 {
		v.errorf(bk+".randomizedDelaySec", "%d is negative; use 0 (no delay) or a positive number", *b.RandomizedDelaySec)
	}
	if b.TimeoutStartSec != nil && *b.TimeoutStartSec < 1 {
		v.errorf(bk+".timeoutStartSec", "%d: must be positive, so a hung run cannot keep the service down forever", *b.TimeoutStartSec)
	}
	for j, u := range b.OnFailure {
		// OnFailure= is expanded by systemd, so specifiers are allowed:
		// notify-email@%n.service names the failed unit.
		if !config.ValidUnit(specifierRE.ReplaceAllString(u, "x")) {
			v.errorf(fmt.Sprintf("%s.onFailure[%d]", bk, j), "%q is not a systemd unit name; write it with its suffix, e.g. \"notify-email@%%n.service\"", u)
		}
	}
}

// placeholders rejects unknown {placeholders} in destination paths: they
// would stay literal and name a folder nobody meant.
func (v *validator) placeholders(key string, paths []string) {
	for j, p := range paths {
		for _, m := range placeholderRE.FindAllStringSubmatch(p, -1) {
			if ph := m[1]; ph != namePlaceholder {
				v.errorf(fmt.Sprintf("%s[%d]", key, j), "%q: unknown placeholder %s; the only placeholder is %s (the service name)", p, ph, namePlaceholder)
				break
			}
		}
	}
}

// workerRules builds the service's worker config, as rendering does, and
// reports what config.Validate rejects at the spec key that set the value.
// i < 0 marks the stand-in service that checks [defaults] alone.
func (v *validator) workerRules(spec *Spec, i int, svc Service) {
	named := svc
	if !config.ValidName(svc.Name) {
		// Expand {name} in paths with something harmless, so a bad name is
		// reported once, at name, and not again in every destination.
		named.Name = "name"
	}
	s := resolveService(spec.Defaults, named)
	s.MetricsDirectory = spec.Metrics.TextfileDirectory
	cfg := s.WorkerConfig()
	cfg.Name = svc.Name
	v.workerErrors(i, cfg.Validate(), svc.Name == "")
}

// workerErrors reports the config.FieldErrors in err at the spec keys that
// set the values; any key config may name is mapped the same way. Keys a
// generator rule already reported are left out, so each gets one message.
func (v *validator) workerErrors(i int, err error, nameMissing bool) {
	if err == nil {
		return
	}
	errs := []error{err}
	var merr *multierror.Error
	if errors.As(err, &merr) {
		errs = merr.Errors
	}
	var keys []string
	for _, e := range errs {
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			v.diags = append(v.diags, v.pos.diag(v.file, fmt.Sprintf("services[%d]", i), e.Error()))
			continue
		}
		if fe.Key == "name" && nameMissing {
			continue // reported as a missing name
		}
		key := v.specKey(i, fe.Key)
		if i < 0 && !strings.HasPrefix(key, "defaults.") {
			continue // about the stand-in service, not the spec
		}
		if v.reported[key] {
			continue
		}
		keys = append(keys, key)
		v.diags = append(v.diags, v.pos.diag(v.file, key, fe.Msg))
	}
	for _, k := range keys {
		v.reported[k] = true
	}
}

// specKey maps a worker config key (backup.paths[1], serviceName[0]) to
// the spec key that set it: the service's own, else the [defaults] one it
// inherited, else the service's key as it would be written (not written:
// its position falls back to the service's table).
func (v *validator) specKey(i int, key string) string {
	if key == "backup.prometheusTextfile" {
		return "metrics.textfileDirectory" // DIR/backup-NAME.prom
	}
	if strings.HasPrefix(key, "backup.drill.onCalendar") {
		key = "backup.drill.schedule" // converted from it
	}
	own := fmt.Sprintf("services[%d].%s", i, key)
	for _, k := range []string{own, "defaults." + key} {
		switch {
		case v.pos.has(k):
			return k
		case v.pos.has(stripIndex(k)) && strings.HasSuffix(k, "serviceName[0]"):
			// serviceName = "a.service" is serviceName[0] in the config.
			return stripIndex(k)
		case v.pos.has(stripIndex(k)):
			return k
		}
	}
	return own
}

// stripIndex turns backup.paths[1] into backup.paths.
func stripIndex(key string) string {
	if i := strings.LastIndexByte(key, '['); i > 0 && strings.HasSuffix(key, "]") {
		return key[:i]
	}
	return key
}
