package generator

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Spec is the decoded TOML spec, before defaults are applied. Pointer and
// nil-slice fields tell "not set" from "set to the zero value", which is
// what lets a service override a spec-wide default with 0 or false.
//
// Key names are the NixOS option names, so a value moves between the spec
// and a host config unchanged. Every key needs an entry in keyDocs.
type Spec struct {
	// Namespace is the option path the per-service modules are declared
	// under, e.g. "modules.services.virtualization".
	Namespace string          `toml:"namespace"`
	Defaults  ServiceSettings `toml:"defaults"`
	Services  []Service       `toml:"services"`
	// Metrics is the top-level [metrics] table.
	Metrics MetricsSettings `toml:"metrics"`
}

// MetricsSettings: [metrics] textfileDirectory is node_exporter's textfile
// directory; each service writes DIR/backup-NAME.prom there (the worker
// config's backup.prometheusTextfile). NixOS: backupgen.metrics.*.
type MetricsSettings struct {
	TextfileDirectory string `toml:"textfileDirectory"`
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
	// ServiceName is a unit name or a list of them: a string or a []any of
	// strings (the decoder checks which).
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
	KeepHourly         *int     `toml:"keepHourly"`
	KeepDaily          *int     `toml:"keepDaily"`
	KeepWeekly         *int     `toml:"keepWeekly"`
	KeepMonthly        *int     `toml:"keepMonthly"`
	KeepYearly         *int     `toml:"keepYearly"`
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
	// Encryption is [services.backup.encryption] (config.Encryption).
	Encryption EncryptionSettings `toml:"encryption"`
	// HostName keys the archives in a shared remote store; empty: the
	// machine's host name.
	HostName *string      `toml:"hostName"`
	SFTP     SFTPSettings `toml:"sftp"`
	S3       S3Settings   `toml:"s3"`
	// Notify names the files of the notification URLs (config.Notify).
	Notify NotifySettings `toml:"notify"`
	// HealthCheck is backup.healthCheck (config.HealthCheck): inherited
	// from [defaults.backup] as a whole table, never key by key (a url
	// there and a tcp here would be two probes).
	HealthCheck HealthCheckSettings `toml:"healthCheck"`
	// Drill is backup.drill (config.Drill): restore drills on a timer of
	// their own, on when a schedule is set.
	Drill DrillSettings `toml:"drill"`
}

// DrillSettings mirror the module's backup.drill.* options.
type DrillSettings struct {
	Schedule         *string `toml:"schedule"`
	ScratchDirectory *string `toml:"scratchDirectory"`
	IdentityFile     *string `toml:"identityFile"`
}

// NotifySettings mirror the module's backup.notify.* options.
type NotifySettings struct {
	URLsFile    *string `toml:"urlsFile"`
	PingURLFile *string `toml:"pingUrlFile"`
}

// HealthCheckSettings mirror the module's backup.healthCheck.* options.
type HealthCheckSettings struct {
	URL        *string  `toml:"url"`
	TCP        *string  `toml:"tcp"`
	Command    []string `toml:"command"`
	TimeoutSec *int     `toml:"timeoutSec"`
}

// set reports whether the table sets any key.
func (h HealthCheckSettings) set() bool {
	return h.URL != nil || h.TCP != nil || h.Command != nil || h.TimeoutSec != nil
}

// EncryptionSettings mirror the module's backup.encryption.* options.
type EncryptionSettings struct {
	Recipients     []string `toml:"recipients"`
	RecipientsFile *string  `toml:"recipientsFile"`
}

// SFTPSettings mirror the module's backup.sftp.* options.
type SFTPSettings struct {
	PrivateKeyFile *string `toml:"privateKeyFile"`
	KnownHostsFile *string `toml:"knownHostsFile"`
	VerifyReadBack *bool   `toml:"verifyReadBack"`
}

// S3Settings mirror the module's backup.s3.* options (config.S3).
type S3Settings struct {
	Endpoint        *string `toml:"endpoint"`
	Region          *string `toml:"region"`
	PathStyle       *bool   `toml:"pathStyle"`
	CredentialsFile *string `toml:"credentialsFile"`
	VerifyReadBack  *bool   `toml:"verifyReadBack"`
}

// keyDoc says, in the spec's words, what a key holds and gives an example
// value; type errors quote both.
type keyDoc struct{ want, example string }

var keyDocs = map[string]keyDoc{
	"namespace":          {"a dotted option path", `"modules.services.virtualization"`},
	"defaults":           {"a table", "(a [defaults] header on its own line)"},
	"services":           {"one [[services]] table per service", "(a [[services]] header on its own line)"},
	"backup":             {"a table", "(a [services.backup] or [defaults.backup] header on its own line)"},
	"name":               {"a service name", `"myapp"`},
	"serviceName":        {"a unit name or a list of unit names", `"docker-myapp.service"`},
	"dataPaths":          {"a list of absolute paths", `["/var/lib/myapp"]`},
	"description":        {"a one-line description", `"MyApp container"`},
	"enable":             {"true or false", "true"},
	"user":               {"a user name", `"myapp"`},
	"group":              {"a group name", `"myapp"`},
	"paths":              {"a list of absolute destination paths, s3://BUCKET/PREFIX or sftp://USER@HOST/PATH URLs", `["/var/backups/{name}", "sftp://backup@nas/srv/backups"]`},
	"optionalPaths":      {"a list of destinations from paths that may be missing", `["/mnt/usb/{name}"]`},
	"schedule":           {"a cron or systemd calendar expression", `"0 2 * * *"`},
	"format":             {"an archive format name", `"tar.zst"`},
	"maxRetentionDays":   {"a whole number of days", "30"},
	"retentionSnapshots": {"a whole number of archives", "7"},
	"minKeep":            {"a whole number of archives", "1"},
	"keepHourly":         {"a whole number of hours", "24"},
	"keepDaily":          {"a whole number of days", "7"},
	"keepWeekly":         {"a whole number of weeks", "4"},
	"keepMonthly":        {"a whole number of months", "6"},
	"keepYearly":         {"a whole number of years", "2"},
	"minSizeRatio":       {"a number from 0 to 1", "0.5"},
	"createUser":         {"true or false", "true"},
	"exclude":            {"a list of glob patterns", `["cache/**", "*.tmp"]`},
	"compressionLevel":   {"a whole number", "6"},
	"threads":            {"a whole number of threads", "4"},
	"persistent":         {"true or false", "true"},
	"randomizedDelaySec": {"a whole number of seconds", "600"},
	"timeoutStartSec":    {"a whole number of seconds", "14400"},
	"onFailure":          {"a list of unit names", `["notify-email@%n.service"]`},
	"captureFirst":       {"true or false", "true"},
	"preBackup":          {"a shell command", `"podman exec db pg_dumpall > /var/lib/myapp/dump.sql"`},
	"postBackup":         {"a shell command", `"echo $BACKUP_RESULT"`},
	"encryption":         {"a table", "(a [services.backup.encryption] header, or encryption = { recipients = [...] })"},
	"recipients":         {"a list of age recipients (age1… or ssh-ed25519/ssh-rsa public keys)", `["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]`},
	"recipientsFile":     {"an absolute path to a file of age recipients", `"/etc/backup/age-recipients"`},
	"hostName":           {"a host name", `"web1"`},
	"sftp":               {"a table", "(a [services.backup.sftp] or [defaults.backup.sftp] header on its own line)"},
	"privateKeyFile":     {"an absolute path, outside the Nix store", `"/run/secrets/backup-ssh-key"`},
	"knownHostsFile":     {"an absolute path", `"/etc/backupgen/known_hosts"`},
	"s3":                 {"a table", "(a [services.backup.s3] or [defaults.backup.s3] header on its own line)"},
	"endpoint":           {"an https:// URL", `"https://s3.eu-central-1.amazonaws.com"`},
	"region":             {"a region name", `"eu-central-1"`},
	"pathStyle":          {"true or false", "true"},
	"credentialsFile":    {"an absolute path", `"/run/secrets/backup-s3.env"`},
	"verifyReadBack":     {"true or false", "true"},
	"notify":             {"a table", "(a [services.backup.notify] header, or notify = { urlsFile = \"/run/secrets/backup-notify\" })"},
	"urlsFile":           {"an absolute path to a file of notification URLs, outside the Nix store", `"/run/secrets/backup-notify-urls"`},
	"pingUrlFile":        {"an absolute path to a file holding a ping URL, outside the Nix store", `"/run/secrets/backup-ping-url"`},
	"metrics":            {"a table", "(a [metrics] header on its own line)"},
	"textfileDirectory":  {"an absolute path", `"/var/lib/prometheus-node-exporter-text-files"`},

	"healthCheck": {"a table", `{ url = "http://127.0.0.1:8080/health" }`},
	"url":         {"an http:// or https:// URL", `"http://127.0.0.1:8080/health"`},
	"tcp":         {"HOST:PORT", `"127.0.0.1:5432"`},
	"command":     {"a list: an absolute program path and its arguments", `["/run/current-system/sw/bin/pg_isready", "-q"]`},
	"timeoutSec":  {"a whole number of seconds", "60"},

	"drill":            {"a table", `{ schedule = "0 5 * * 0" }`},
	"scratchDirectory": {"an absolute path, never a data path or destination", `"/var/lib/backup-worker/drill"`},
	"identityFile":     {"an absolute path to an age identity file, outside the Nix store", `"/run/secrets/backup-age-identity"`},
}

// multilineKeys hold shell scripts, where a newline or tab is legitimate;
// every other string reaches Nix or systemd and must be one line.
var multilineKeys = map[string]bool{"preBackup": true, "postBackup": true}

// decodeSpec parses the TOML text into a Spec. Only a syntax error stops
// it; type errors, unknown keys and control characters are collected as
// diagnostics, so they are reported together with validation errors.
func decodeSpec(file string, data []byte) (*Spec, *positions, Diagnostics) {
	pos := scanPositions(data)
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		if len(pos.orphans) > 0 {
			return nil, pos, orphanDiags(file, pos)
		}
		return nil, pos, Diagnostics{syntaxDiag(file, data, err)}
	}
	d := &decoder{file: file, pos: pos}
	var spec Spec
	d.table("", "the top level", raw, reflect.ValueOf(&spec).Elem())
	return &spec, pos, d.diags
}

// syntaxDiag places the TOML library's syntax error. Its column is computed
// here from the byte offset: the library's own is off at line starts.
func syntaxDiag(file string, data []byte, err error) Diagnostic {
	var perr toml.ParseError
	if !errors.As(err, &perr) {
		return Diagnostic{File: file, Message: err.Error()}
	}
	d := Diagnostic{File: file, Line: perr.Position.Line, Message: perr.Message}
	lineStart := 0
	for n := 1; n < d.Line && lineStart < len(data); n++ {
		i := strings.IndexByte(string(data[lineStart:]), '\n')
		if i < 0 {
			break
		}
		lineStart += i + 1
	}
	if col := perr.Position.Start - lineStart + 1; col >= 1 && perr.Position.Start <= len(data) && !strings.Contains(string(data[lineStart:perr.Position.Start]), "\n") {
		d.Col = col
	}
	return d
}

// orphanDiags explain a [services…] table written before any [[services]],
// which the TOML library reports only as "already created".
func orphanDiags(file string, pos *positions) Diagnostics {
	var ds Diagnostics
	for _, o := range pos.orphans {
		msg := fmt.Sprintf("[%s] comes before any [[services]]: it belongs to the [[services]] entry above it, so start each service with [[services]] (name, serviceName, dataPaths) and put its [%s] after that", o.Header, o.Header)
		if o.Header == "services" {
			msg = "[services] is a single table, but services are a list: start each service with [[services]] (double brackets)"
		}
		ds = append(ds, Diagnostic{File: file, Line: o.Pos.Line, Col: o.Pos.Col, Key: o.Header, Message: msg})
	}
	return ds
}

// decoder copies a decoded TOML document into a Spec, checking each value's
// type against the Go field it goes to.
type decoder struct {
	file  string
	pos   *positions
	diags Diagnostics
}

func (d *decoder) errorf(path, format string, args ...any) {
	d.diags = append(d.diags, d.pos.diag(d.file, path, fmt.Sprintf(format, args...)))
}

// table fills the struct rv from the TOML table m; header names the table
// as the user writes it ("[services.backup]").
func (d *decoder) table(path, header string, m map[string]any, rv reflect.Value) {
	fields := tomlFields(rv.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kp := joinKey(path, k)
		idx, ok := fields[k]
		if !ok {
			d.diags = append(d.diags, d.pos.keyDiag(d.file, kp, unknownKeyMessage(k, header)))
			continue
		}
		d.value(kp, k, header, m[k], rv.FieldByIndex(idx))
	}
}

// value stores v in the field fv, or reports a type error at path.
func (d *decoder) value(path, key, header string, v any, fv reflect.Value) {
	switch fv.Kind() {
	case reflect.Struct:
		if m, ok := v.(map[string]any); ok {
			d.table(path, childHeader(header, key), m, fv)
			return
		}
	case reflect.Slice:
		if fv.Type().Elem().Kind() == reflect.String {
			d.stringList(path, key, v, fv)
			return
		}
		if tables, ok := tableList(v); ok {
			fv.Set(reflect.MakeSlice(fv.Type(), len(tables), len(tables)))
			for i, t := range tables {
				d.table(fmt.Sprintf("%s[%d]", path, i), childHeader(header, key), t, fv.Index(i))
			}
			return
		}
		if _, ok := v.(map[string]any); ok && len(d.pos.orphans) > 0 {
			d.diags = append(d.diags, orphanDiags(d.file, d.pos)...)
			return
		}
	case reflect.Interface: // serviceName: a string or a list of strings
		if s, ok := v.(string); ok {
			d.checkString(path, key, s)
			fv.Set(reflect.ValueOf(s))
			return
		}
		if _, ok := v.([]any); ok {
			var list []string
			d.stringList(path, key, v, reflect.ValueOf(&list).Elem())
			items := make([]any, len(list))
			for i, s := range list {
				items[i] = s
			}
			fv.Set(reflect.ValueOf(items))
			return
		}
	case reflect.Pointer:
		elem := reflect.New(fv.Type().Elem())
		if d.scalar(path, key, v, elem.Elem()) {
			fv.Set(elem)
		}
		return
	default:
		d.scalar(path, key, v, fv)
		return
	}
	d.typeError(path, key, v)
}

// scalar stores a string, bool or integer; it reports whether it did.
func (d *decoder) scalar(path, key string, v any, fv reflect.Value) bool {
	switch x := v.(type) {
	case string:
		if fv.Kind() == reflect.String {
			d.checkString(path, key, x)
			fv.SetString(x)
			return true
		}
	case bool:
		if fv.Kind() == reflect.Bool {
			fv.SetBool(x)
			return true
		}
	case int64:
		if fv.Kind() == reflect.Int && !fv.OverflowInt(x) {
			fv.SetInt(x)
			return true
		}
		// minSizeRatio = 1 is a number too.
		if fv.Kind() == reflect.Float64 {
			fv.SetFloat(float64(x))
			return true
		}
	case float64:
		if fv.Kind() == reflect.Float64 {
			fv.SetFloat(x)
			return true
		}
	}
	d.typeError(path, key, v)
	return false
}

// stringList stores a TOML array of strings; each non-string element is
// reported on its own.
func (d *decoder) stringList(path, key string, v any, fv reflect.Value) {
	items, ok := v.([]any)
	if !ok {
		d.typeError(path, key, v)
		return
	}
	list := make([]string, 0, len(items))
	bad := false
	for i, it := range items {
		s, ok := it.(string)
		elem := fmt.Sprintf("%s[%d]", path, i)
		if !ok {
			d.errorf(elem, "expected a string, found %s; %s is %s, e.g. %s = %s", describe(it), key, keyDocs[key].want, key, keyDocs[key].example)
			bad = true
			continue
		}
		d.checkString(elem, key, s)
		list = append(list, s)
	}
	if !bad {
		// A list with a mistyped element stays unset: with the element
		// left out, later checks would name the wrong indexes.
		fv.Set(reflect.ValueOf(list))
	}
}

func (d *decoder) typeError(path, key string, v any) {
	doc := keyDocs[key]
	d.errorf(path, "expected %s, found %s; e.g. %s = %s", doc.want, describe(v), key, doc.example)
}

// checkString rejects control characters: every string in the spec ends
// up in Nix, a systemd unit or a tmpfiles line, where a newline starts a new
// directive. Shell hooks may hold newlines and tabs.
func (d *decoder) checkString(path, key, s string) {
	i := strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multilineKeys[key] && (r == '\n' || r == '\t'))
	})
	if i >= 0 {
		d.errorf(path, "%q contains the control character U+%04X; write it without control characters", s, []rune(s[i:])[0])
	}
}

// describe names a decoded TOML value's type in the spec's words.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("%t", x)
	case int64:
		return fmt.Sprintf("the number %d", x)
	case float64:
		return fmt.Sprintf("the decimal number %v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "a list of tables"
	}
	return "a date or time"
}

// tableList accepts [[x]] tables and an inline list of tables.
func tableList(v any) ([]map[string]any, bool) {
	switch x := v.(type) {
	case []map[string]any:
		return x, true
	case []any:
		out := make([]map[string]any, len(x))
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// childHeader names a sub-table as the user writes its header.
func childHeader(parent, key string) string {
	if parent == "the top level" {
		if key == "services" {
			return "[[services]]"
		}
		return "[" + key + "]"
	}
	return "[" + strings.Trim(parent, "[]") + "." + key + "]"
}

// tomlFields maps a struct's toml keys to field indexes, including the
// fields of embedded structs.
func tomlFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Tag.Get("toml") == "" {
			for k, idx := range tomlFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if k := f.Tag.Get("toml"); k != "" {
			out[k] = []int{i}
		}
	}
	return out
}
