package generator

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/config"
)

// twoServices is a valid spec the tests below append to or edit.
const twoServices = `[defaults.backup]
paths = ["/var/backups/{name}", "/srv/backup/{name}"]

[[services]]
name = "web"
serviceName = "docker-web.service"
dataPaths = ["/var/lib/web/a", "/var/lib/web/b"]

[[services]]
name = "db"
serviceName = "podman-db.service"
dataPaths = ["/var/lib/db/a", "/var/lib/db/b"]
`

// diagnose validates spec and returns its diagnostics, one per line.
func diagnose(t *testing.T, spec string) string {
	t.Helper()
	_, err := Validate("spec.toml", []byte(spec))
	if err == nil {
		return ""
	}
	return err.Error()
}

func requireLines(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("diagnostics lack %q:\n%s", w, got)
		}
	}
}

// Type errors used to stop decoding at the first one and read in Go's
// words ("destination has type slice").
func TestTypeErrorsReportedWithTheRest(t *testing.T) {
	spec := strings.Replace(twoServices, `dataPaths = ["/var/lib/web/a", "/var/lib/web/b"]`, `dataPaths = "/var/lib/web"
[services.backup]
format = "rar"
threads = "4"`, 1)
	got := diagnose(t, spec)
	requireLines(t, got,
		`spec.toml:7:13: services[0].dataPaths: expected a list of absolute paths, found the string "/var/lib/web"; e.g. dataPaths = ["/var/lib/myapp"]`,
		`spec.toml:9:10: services[0].backup.format: "rar": must be one of`,
		`spec.toml:10:11: services[0].backup.threads: expected a whole number of threads, found the string "4"; e.g. threads = 4`,
	)
	if strings.Contains(got, "destination has type") || strings.Contains(got, "at least one data path") {
		t.Errorf("Go's words or a consequence of the type error leaked:\n%s", got)
	}
}

// Columns used to be 1 for everything.
func TestDiagnosticColumns(t *testing.T) {
	spec := twoServices + `[services.backup]
  exclude = [
    "ok/**",
    "/abs",
  ]
  retentionSnapshots = -1
`
	got := diagnose(t, spec)
	requireLines(t, got,
		`spec.toml:16:5: services[1].backup.exclude[1]: "/abs"`,
		`spec.toml:18:24: services[1].backup.retentionSnapshots: -1`,
	)
	// Inline tables and a key written after its value's table.
	spec = twoServices + `backup = { format = "rar", exclude = ["a", "/b"] }
description = { x = 1 }
`
	requireLines(t, diagnose(t, spec),
		`spec.toml:13:21: services[1].backup.format: "rar"`,
		`spec.toml:13:44: services[1].backup.exclude[1]: "/b"`,
		`spec.toml:14:15: services[1].description: expected a one-line description, found a table`,
	)
}

func TestUnknownKeys(t *testing.T) {
	cases := []struct{ add, want string }{
		{"schedule = \"0 2 * * *\"\n", `services[1].schedule: unknown key "schedule" in [[services]]: it belongs under [services.backup]`},
		{"[services.backup]\nformatt = \"zip\"\n", `services[1].backup.formatt: unknown key "formatt"; did you mean "format"?`},
		{"retentionSnapshot = 3\n", `unknown key "retentionSnapshot" in [[services]]; did you mean "retentionSnapshots" under [services.backup]?`},
		{"DataPaths = []\n", `unknown key "DataPaths"; did you mean "dataPaths"?`},
		{"[services.backup]\ncolour = \"blue\"\n", `unknown key "colour" in [services.backup]; see the spec reference`},
	}
	for _, c := range cases {
		requireLines(t, diagnose(t, twoServices+c.add), c.want)
	}
	requireLines(t, diagnose(t, "user = \"x\"\n[defaults]\ndataPaths = [\"/a\"]\n"+strings.TrimPrefix(twoServices, "[defaults.backup]\n")),
		`spec.toml:1:1: user: unknown key "user" in the top level: it belongs under [defaults] or [[services]]`,
		`spec.toml:3:1: defaults.dataPaths: unknown key "dataPaths" in [defaults]: it belongs under [[services]]`,
	)
}

// A [services.backup] before any [[services]] used to get the TOML
// library's "Key 'services' was already created and cannot be used as an array".
func TestBackupTableBeforeItsService(t *testing.T) {
	for _, spec := range []string{
		"[services.backup]\nformat = \"zip\"\n\n" + twoServices,
		"[services.backup]\nformat = \"zip\"\n",
	} {
		got := diagnose(t, spec)
		requireLines(t, got, "spec.toml:1:1: services.backup: [services.backup] comes before any [[services]]")
		if strings.Contains(got, "already created") {
			t.Errorf("raw TOML message:\n%s", got)
		}
	}
	requireLines(t, diagnose(t, "[services]\nname = \"x\"\n"+twoServices),
		"spec.toml:1:1: services: [services] is a single table, but services are a list: start each service with [[services]]")
}

// workerErrors maps any config.FieldError key, including ones config may add
// later, to the spec key that set the value and its position.
func TestWorkerErrorMapping(t *testing.T) {
	spec := `[defaults.backup]
format = "tar.gz"

[[services]]
name = "web"
serviceName = "docker-web.service"
dataPaths = ["/a", "/b"]

[[services]]
name = "db"
dataPaths = [
  "/c",
  "/d",
]
[services.backup]
compressionLevel = 15
`
	parsed, pos, diags := decodeSpec("spec.toml", []byte(spec))
	if len(diags) > 0 || parsed == nil {
		t.Fatal(diags)
	}
	cases := []struct {
		svc  int
		key  string
		want string
	}{
		{1, "backup.compressionLevel", "spec.toml:16:20: services[1].backup.compressionLevel: m"},
		{1, "backup.format", "spec.toml:2:10: defaults.backup.format: m"},
		{1, "dataPaths[1]", "spec.toml:13:3: services[1].dataPaths[1]: m"},
		{0, "serviceName[0]", "spec.toml:6:15: services[0].serviceName: m"},
		{0, "backup.threads", "spec.toml:4:1: services[0].backup.threads: m"},
		{1, "backup.someFutureKey[2]", "spec.toml:15:1: services[1].backup.someFutureKey[2]: m"},
		{0, "someFutureKey", "spec.toml:4:1: services[0].someFutureKey: m"},
	}
	for _, c := range cases {
		v := &validator{file: "spec.toml", pos: pos, reported: map[string]bool{}}
		var errs *multierror.Error
		errs = multierror.Append(errs, &config.FieldError{Key: c.key, Msg: "m"})
		v.workerErrors(c.svc, errs, false)
		if len(v.diags) != 1 || v.diags[0].String() != c.want {
			t.Errorf("%d %s: got %v, want %s", c.svc, c.key, v.diags, c.want)
		}
	}
}

// Worker rules come from config.Validate, at the spec's positions. The
// per-format level ranges and the glob syntax check are being added to
// config on another branch; until they are merged the subtests skip.
func TestWorkerRulesAtSpecPositions(t *testing.T) {
	got := diagnose(t, twoServices+"[services.backup]\ncompressionLevel = 23\nmaxRetentionDays = -2\n")
	requireLines(t, got, "spec.toml:14:20: services[1].backup.compressionLevel: 23:", "spec.toml:15:20: services[1].backup.maxRetentionDays: -2:")
	for _, c := range []struct{ name, add, want string }{
		{"gzip level 15", "[services.backup]\nformat = \"tar.gz\"\ncompressionLevel = 15\n", "spec.toml:15:20: services[1].backup.compressionLevel: "},
		{"unclosed glob", "[services.backup]\nexclude = [\"ok/**\", \"[unclosed\"]\n", "spec.toml:14:21: services[1].backup.exclude[1]: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := twoServices + c.add
			requireLines(t, diagnose(t, spec), c.want)
		})
	}
}

// [defaults] values are checked even when every service overrides them.
func TestDefaultsCheckedWhenOverridden(t *testing.T) {
	spec := strings.Replace(twoServices, "[defaults.backup]\n", "[defaults.backup]\nformat = \"rar\"\n", 1) +
		"[services.backup]\nformat = \"zip\"\n"
	spec = strings.Replace(spec, "dataPaths = [\"/var/lib/web/a\", \"/var/lib/web/b\"]\n", "dataPaths = [\"/var/lib/web/a\", \"/var/lib/web/b\"]\n[services.backup]\nformat = \"zip\"\n", 1)
	got := diagnose(t, spec)
	requireLines(t, got, `spec.toml:2:10: defaults.backup.format: "rar": must be one of`)
	if n := strings.Count(got, "\n") + 1; n != 1 {
		t.Errorf("want one diagnostic, got %d:\n%s", n, got)
	}
}

// onFailure = ["notify-email@%n.service"] used to be rejected.
func TestOnFailureTemplateUnits(t *testing.T) {
	spec := twoServices + "[services.backup]\nonFailure = [\"notify-email@%n.service\", \"alert@%i-%%.service\"]\n"
	files, err := Generate("spec.toml", []byte(spec), DefaultOptions)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(filesToMap(files)["etc/systemd/system/db-backup.service"])
	if !strings.Contains(unit, "OnFailure=notify-email@%n.service alert@%i-%%.service\n") {
		t.Errorf("unit lacks the template OnFailure=:\n%s", unit)
	}
	for _, bad := range []string{"notify", "bad unit@%n.service", "x@%.service"} {
		requireLines(t, diagnose(t, twoServices+fmt.Sprintf("[services.backup]\nonFailure = [%q]\n", bad)),
			"services[1].backup.onFailure[0]: ")
	}
}

// {nmae} used to be accepted and stay literal.
func TestUnknownPlaceholders(t *testing.T) {
	got := diagnose(t, strings.Replace(twoServices, `"/srv/backup/{name}"`, `"/srv/backup/{nmae}"`, 1))
	requireLines(t, got, `spec.toml:2:33: defaults.backup.paths[1]: "/srv/backup/{nmae}": unknown placeholder {nmae}; the only placeholder is {name}`)
	got = diagnose(t, strings.Replace(twoServices, `"/var/lib/db/b"`, `"/var/lib/{name}/b"`, 1))
	requireLines(t, got, `services[1].dataPaths[1]: "/var/lib/{name}/b": placeholders such as {name} are replaced only in backup.paths`)
	// ${...} is shell or Nix syntax, not a placeholder: kept literal.
	if got := diagnose(t, strings.Replace(twoServices, `"/srv/backup/{name}"`, `"/srv/backup/${x}/{name}"`, 1)); got != "" {
		t.Errorf("${x} rejected:\n%s", got)
	}
}

// Every string reaching Nix, systemd or tmpfiles must be one line without
// control characters; only shell hooks may hold newlines and tabs.
func TestControlCharacters(t *testing.T) {
	cases := []struct{ add, key string }{
		{"description = \"a\\u001b[2Jb\"\n", "services[1].description"},
		{"[services.backup]\nexclude = [\"a\\tb\"]\n", "services[1].backup.exclude[0]"},
		{"[services.backup]\nschedule = \"0 2 * * *\\nExecStartPre=/bin/sh\"\n", "services[1].backup.schedule"},
		{"[services.backup]\npaths = [\"/x\\r\"]\n", "services[1].backup.paths[0]"},
		{"[services.backup]\npreBackup = \"a\\u0007\"\n", "services[1].backup.preBackup"},
		{"group = \"g\\n\"\n", "services[1].group"},
	}
	for _, c := range cases {
		got := diagnose(t, twoServices+c.add)
		requireLines(t, got, c.key+": ")
		if !strings.Contains(got, "control character") {
			t.Errorf("%s: %s", c.key, got)
		}
	}
	if got := diagnose(t, twoServices+"[services.backup]\npreBackup = \"\"\"\nset -e\n\tpg_dumpall > /var/lib/db/a/dump.sql\n\"\"\"\n"); got != "" {
		t.Errorf("multi-line hook rejected:\n%s", got)
	}
}

// Every key of the spec has its words for type errors.
func TestKeyDocsCoverEveryKey(t *testing.T) {
	for _, tbl := range specTables {
		for k := range tbl.keys {
			if d, ok := keyDocs[k]; !ok || d.want == "" || d.example == "" {
				t.Errorf("%s %s: no keyDocs entry", tbl.header, k)
			}
		}
	}
	if len(tomlFields(reflect.TypeOf(Service{}))) != 9 {
		t.Errorf("Service fields changed: check keyDocs and specTables")
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"format", "formatt", 1}, {"kitten", "sitting", 3}, {"paths", "", 5}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

// trickySpec holds the TOML forms a line-based scanner gets wrong.
const trickySpec = `# [not.a.table] = 1
"quoted key" = 1
[defaults.backup] # [comment]
preBackup = """
[fake.table]
fake = "x"
"""
postBackup = '''
[[fake]] = 2 '''
exclude = [ # a comment
  "a]", # ] in a comment
  'b"c',
]

[[services]]
  name = "x" # indented
  "dataPaths" = ["/a=1", "/b#2"]
  backup = { format = "zip", exclude = ["{", "}"], "minKeep" = 2 }
[[services]]
name = "y"
serviceName = [["nested"], "z.service"]
dataPaths = ["/c"]
`

// The position scanner finds every key the TOML library decodes, in every
// golden spec and example, and each position points at the key's text and
// at the start of its value.
func TestPositionsCoverEveryKey(t *testing.T) {
	specs := map[string][]byte{"tricky": []byte(trickySpec)}
	files, _ := filepath.Glob("testdata/*/spec.toml")
	examples, _ := filepath.Glob("../examples/*/backup.toml")
	for _, file := range append(files, examples...) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		specs[file] = data
	}
	for file, data := range specs {
		var raw map[string]any
		md, err := toml.Decode(string(data), &raw)
		if err != nil {
			continue // the syntax-error case
		}
		pos := scanPositions(data)
		plain := map[string]bool{}
		for k := range pos.byIndexed {
			plain[regexp.MustCompile(`\[\d+\]`).ReplaceAllString(k, "")] = true
		}
		for _, k := range md.Keys() {
			if !plain[strings.Join(k, ".")] {
				t.Errorf("%s: key %s not located", file, k)
			}
		}
		lines := strings.Split(string(data), "\n")
		at := func(p position) string { return lines[p.Line-1][p.Col-1:] }
		for k, kp := range pos.byIndexed {
			last := k[strings.LastIndexAny(k, ".")+1:]
			if i := strings.IndexByte(last, '['); i >= 0 {
				last = last[:i]
			}
			if !strings.Contains(k, "[") || !strings.HasSuffix(k, "]") {
				key := at(kp.Key)
				if strings.HasPrefix(key, "[") { // a table header names its last key before ]
					key = key[strings.LastIndexAny(key[:strings.IndexByte(key, ']')], "[.")+1:]
				}
				if !strings.HasPrefix(strings.TrimLeft(key, `"'`), last) {
					t.Errorf("%s: %s: key position points at %q", file, k, key)
				}
			}
			if v := at(kp.Value); v == "" || !strings.ContainsAny(v[:1], `"'[{-+0123456789tfin`) {
				t.Errorf("%s: %s: value position points at %q", file, k, v)
			}
		}
	}
}

// Float keys take TOML floats and integers, and refuse strings.
func TestMinSizeRatioDecodes(t *testing.T) {
	for _, v := range []string{"0.25", "1", "0"} {
		if got := diagnose(t, twoServices+"[services.backup]\nminSizeRatio = "+v+"\n"); got != "" {
			t.Errorf("minSizeRatio = %s refused:\n%s", v, got)
		}
	}
	got := diagnose(t, twoServices+"[services.backup]\nminSizeRatio = \"half\"\n")
	requireLines(t, got, "services[1].backup.minSizeRatio: ")
}

// TestCalendarRulesAtSpecPositions: keepHourly … keepYearly are checked by
// config.Validate and reported at the key that set them, also when the
// maxRetentionDays that cuts them short is inherited from [defaults].
func TestCalendarRulesAtSpecPositions(t *testing.T) {
	got := diagnose(t, "[defaults.backup]\nmaxRetentionDays = 30\n"+strings.TrimPrefix(twoServices, "[defaults.backup]\n")+
		"[services.backup]\nkeepMonthly = 6\nkeepDaily = -1\n")
	requireLines(t, got,
		"services[1].backup.keepMonthly: 6: keeps monthly archives up to 186 days old, but maxRetentionDays = 30 deletes them sooner; raise maxRetentionDays to at least 186",
		"services[1].backup.keepDaily: -1: must be 0 (off) up to ")
	if got := diagnose(t, twoServices+"[services.backup]\nmaxRetentionDays = 186\nkeepMonthly = 6\nkeepDaily = 7\n"); got != "" {
		t.Errorf("a policy that fits was refused:\n%s", got)
	}
	got = diagnose(t, twoServices+"[services.backup]\nkeepWeekly = \"4\"\n")
	requireLines(t, got, "services[1].backup.keepWeekly: ")
}

// Two paths naming one remote place (host case, the default port written
// out) are reported by backupgen validate at the later one, as the worker
// reports them: one rule, config's.
func TestSameRemoteDestinationListedOnce(t *testing.T) {
	spec := twoServices + "[services.backup]\n" +
		"paths = [\"/var/backups/db\", \"sftp://bk@NAS.example/srv/b\", \"sftp://bk@nas.example:22/srv/b\"]\n" +
		"hostName = \"web1\"\n" +
		"sftp = { privateKeyFile = \"/run/secrets/k\", knownHostsFile = \"/etc/backupgen/known_hosts\" }\n"
	got := diagnose(t, spec)
	requireLines(t, got, `spec.toml:14:60: services[1].backup.paths[2]: "sftp://bk@nas.example:22/srv/b": same destination as backup.paths[1]; list it once`)
}
