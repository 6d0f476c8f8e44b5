package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeServiceNameForms(t *testing.T) {
	base := `{"name":"app","dataPaths":["/srv/app"],"user":"root","group":"root","backup":{"paths":["/backup"]},"serviceName":%s}`
	cases := map[string]Units{
		`"docker-app.service"`:      {"docker-app.service"},
		`["a.service","b.service"]`: {"a.service", "b.service"},
		`null`:                      nil,
		`""`:                        nil,
		`[]`:                        {},
	}
	for in, want := range cases {
		c, err := Decode(strings.NewReader(strings.Replace(base, "%s", in, 1)))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if diff := cmp.Diff(want, c.ServiceName); diff != "" {
			t.Errorf("%s (-want +got):\n%s", in, diff)
		}
	}
	if _, err := Decode(strings.NewReader(strings.Replace(base, "%s", `3`, 1))); err == nil {
		t.Error("a number as serviceName was accepted")
	}
}

func TestDecodeDefaults(t *testing.T) {
	c, err := Decode(strings.NewReader(`{"name":"app","dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":["/backup"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backup.Format != DefaultFormat || c.Backup.StateDirectory != DefaultStateDirectory || c.Backup.MinKeepOrDefault() != 1 || c.Backup.LockTimeoutSec != DefaultLockTimeoutSec {
		t.Errorf("defaults not applied: %+v", c.Backup)
	}
}

// TestDecodeReportsEverything: unknown keys are an error, and a config
// with many mistakes lists all of them, one per line.
func TestDecodeReportsEverything(t *testing.T) {
	if _, err := Decode(strings.NewReader(`{"name":"app","colour":"blue"}`)); err == nil || !strings.Contains(err.Error(), `colour: unknown key`) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := Decode(strings.NewReader(`{"name":"a"} {}`)); err == nil || !strings.Contains(err.Error(), "trailing data") {
		t.Errorf("trailing data: %v", err)
	}
	bad := `{"name":"../x","serviceName":["x.service\nExecStart=/bin/sh"],"dataPaths":["rel","/a/../b"],"user":"","group":"",
	  "backup":{"paths":["/a/../b/backups","/srv/data/inside"],"optionalPaths":["/elsewhere"],"format":"rar","maxRetentionDays":-1,
	  "retentionSnapshots":-2,"minKeep":0,"compressionLevel":99,"threads":-1,"exclude":["/abs",""],"stopTimeoutSec":-5}}`
	_, err := Decode(strings.NewReader(strings.Replace(bad, `"rel"`, `"rel","/srv/data"`, 1)))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	want := []string{
		`name "../x"`, `serviceName[0]`, `dataPaths[0] "rel": is not absolute`, `dataPaths[2] "/a/../b": is not clean`,
		`user: required`, `group: required`, `backup.paths[1] "/srv/data/inside": lies inside data path "/srv/data"`,
		`backup.optionalPaths[0] "/elsewhere": not listed in backup.paths`, `backup.format "rar"`,
		`backup.maxRetentionDays -1`, `backup.retentionSnapshots -2`, `backup.minKeep 0`,
		`backup.threads -1`, `backup.exclude[0] "/abs"`, `backup.exclude[1] ""`, `backup.stopTimeoutSec -5`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q", w)
		}
	}
	if strings.Contains(msg, "errors occurred") {
		t.Errorf("go-multierror's default preamble leaked into the message:\n%s", msg)
	}
	if lines := strings.Count(msg, "\n") + 1; lines < len(want) {
		t.Errorf("%d lines for %d problems:\n%s", lines, len(want), msg)
	}
}

func TestValidPath(t *testing.T) {
	cases := map[string]string{
		"/srv/data":       "",
		"/srv/with space": "",
		"/srv/ünï/%$\"'":  "",
		"/srv/data/":      "",
		"":                "is empty",
		"srv":             "is not absolute",
		"/":               "is the root directory",
		"/a/../b":         "is not clean",
		"/a//b":           "is not clean",
		"/a\nb":           "contains a NUL or newline",
	}
	for in, want := range cases {
		got := ValidPath(in)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("ValidPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	keep := 2
	c := Config{Comment: GeneratedComment, Name: "app", ServiceName: Units{"a.service"}, DataPaths: []string{"/srv/a", "/srv/b"}, User: "u", Group: "g",
		Backup: Backup{Paths: []string{"/b1", "/b2"}, Format: "zip", MinKeep: &keep, Exclude: []string{"*.tmp"}}}
	c.Normalize()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&c, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// validBase returns a config that Validate accepts; tests change one thing.
func validBase() Config {
	c := Config{Name: "app", DataPaths: []string{"/srv/app"}, User: "app", Group: "app",
		Backup: Backup{Paths: []string{"/backup"}}}
	c.Normalize()
	return c
}

// problems returns Validate's FieldErrors as "key: msg" strings.
func problems(t *testing.T, c Config) []string {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func expectProblem(t *testing.T, what string, c Config, key, msg string) {
	t.Helper()
	got := strings.Join(problems(t, c), "\n")
	if !strings.Contains(got, key) || !strings.Contains(got, msg) {
		t.Errorf("%s: want a problem with %s mentioning %q, got:\n%s", what, key, msg, got)
	}
}

func expectValid(t *testing.T, what string, c Config) {
	t.Helper()
	if p := problems(t, c); p != nil {
		t.Errorf("%s: rejected:\n%s", what, strings.Join(p, "\n"))
	}
}

// TestValidateLevels: each format's own range (issue 11: compressionLevel
// 15 with tar.gz and 12 with tar.xz passed check-config, and the run failed
// after stopping the service).
func TestValidateLevels(t *testing.T) {
	cases := []struct {
		format string
		level  int
		ok     bool
	}{
		{"tar.gz", 15, false}, {"tar.gz", 10, false}, {"tar.gz", 9, true}, {"tar.gz", 1, true}, {"tar.gz", -1, false},
		{"tar.xz", 12, false}, {"tar.xz", 9, true}, {"tar.bz2", 10, false}, {"tar.bz2", 9, true},
		{"tar.zst", 22, true}, {"tar.zst", 23, false}, {"tar.zst", -5, false}, {"zip", 10, false}, {"zip", 9, true},
		{"tar.gz", 0, true}, {"tar.zst", 0, true},
	}
	for _, tc := range cases {
		c := validBase()
		c.Backup.Format, c.Backup.CompressionLevel = tc.format, tc.level
		what := fmt.Sprintf("%s level %d", tc.format, tc.level)
		if tc.ok {
			expectValid(t, what, c)
		} else {
			l, _ := LevelRange(tc.format)
			expectProblem(t, what, c, "backup.compressionLevel", fmt.Sprintf("%s takes levels %d-%d", tc.format, l.Min, l.Max))
		}
	}
}

// TestValidateExclude: a pattern the walk would refuse is refused here,
// with a hint (issue 11: `exclude = ["[unclosed"]` passed check-config).
func TestValidateExclude(t *testing.T) {
	for pat, want := range map[string]string{
		"[unclosed": "not a valid glob", "{a,b": "not a valid glob", "/abs": "starts with /",
		"": "empty", "./": "matches nothing",
	} {
		c := validBase()
		c.Backup.Exclude = []string{"*.tmp", pat}
		expectProblem(t, fmt.Sprintf("exclude %q", pat), c, "backup.exclude[1]", want)
	}
	c := validBase()
	c.Backup.Exclude = []string{"cache/**", "*.tmp", "./logs/", `\[literal`, "{a,b}/*"}
	expectValid(t, "good excludes", c)
}

// TestValidateBounds: numbers that would break the run or make no sense
// (issue 10 item 13: threads 1e8 and overflowing timeouts were accepted).
func TestValidateBounds(t *testing.T) {
	set := map[string]func(b *Backup, v int){
		"backup.threads":          func(b *Backup, v int) { b.Threads = v },
		"backup.stopTimeoutSec":   func(b *Backup, v int) { b.StopTimeoutSec = v },
		"backup.startTimeoutSec":  func(b *Backup, v int) { b.StartTimeoutSec = v },
		"backup.lockTimeoutSec":   func(b *Backup, v int) { b.LockTimeoutSec = v },
		"backup.maxRetentionDays": func(b *Backup, v int) { b.MaxRetentionDays = v },
	}
	max := map[string]int{"backup.threads": MaxThreads, "backup.maxRetentionDays": MaxRetentionDays,
		"backup.stopTimeoutSec": MaxTimeoutSec, "backup.startTimeoutSec": MaxTimeoutSec, "backup.lockTimeoutSec": MaxTimeoutSec}
	for key, f := range set {
		for _, v := range []int{max[key] + 1, 100_000_000, 1 << 62, -1} {
			c := validBase()
			f(&c.Backup, v)
			expectProblem(t, fmt.Sprintf("%s=%d", key, v), c, key, fmt.Sprint(v))
		}
		c := validBase()
		f(&c.Backup, max[key])
		expectValid(t, fmt.Sprintf("%s=%d", key, max[key]), c)
	}
}

// TestValidateDuplicates: duplicate destinations (also after cleaning) and
// duplicate or nested data paths (issue 10 item 13).
func TestValidateDuplicates(t *testing.T) {
	c := validBase()
	c.Backup.Paths = []string{"/backup", "/other", "/backup/"}
	expectProblem(t, "duplicate destination", c, "backup.paths[2]", "same destination as backup.paths[0]")
	c = validBase()
	c.DataPaths = []string{"/srv/app", "/srv/app/"}
	expectProblem(t, "duplicate data path", c, "dataPaths[1]", "same as dataPaths[0]")
	c = validBase()
	c.DataPaths = []string{"/srv/app", "/srv/app/db"}
	expectProblem(t, "nested data path", c, "dataPaths[1]", "lies inside dataPaths[0]")
	c = validBase()
	c.DataPaths = []string{"/srv/app/db", "/srv/app"}
	expectProblem(t, "data path holding another", c, "dataPaths[1]", "holds dataPaths[0]")
	c = validBase()
	c.DataPaths = []string{"/srv/app", "/srv/application"}
	expectValid(t, "sibling with a common prefix", c)
	c = validBase()
	c.ServiceName = Units{"a.service", "b.service", "a.service"}
	expectProblem(t, "duplicate unit", c, "serviceName[2]", "same unit as serviceName[0]")
	c = validBase()
	c.Backup.Paths = []string{"/backup", "/mnt/usb/"}
	c.Backup.OptionalPaths = []string{"/mnt/usb"}
	expectValid(t, "optional path written differently", c)
	if !c.Backup.IsOptional("/mnt/usb/") {
		t.Error("IsOptional does not compare clean paths")
	}
}

// TestValidateStateDirectory: the state directory must not be a place the
// service's user can write (issue 10 item 5: a state dir inside a
// destination let the user forge the state file).
func TestValidateStateDirectory(t *testing.T) {
	for _, dir := range []string{"/backup", "/backup/state", "/srv/app/.state", "/srv"} {
		c := validBase()
		c.Backup.StateDirectory = dir
		expectProblem(t, "stateDirectory "+dir, c, "backup.stateDirectory", "forge the state and lock files")
	}
	c := validBase()
	c.Backup.StateDirectory = "/run/backup-worker/app"
	expectValid(t, "default-like state dir", c)
	c.Backup.PrometheusTextfile = "/backup/app.prom"
	expectProblem(t, "metrics in a destination", c, "backup.prometheusTextfile", "overlaps destination")
}

// TestValidateNames: unit names starting with '-' (systemctl options) and
// user names with spaces are refused.
func TestValidateNames(t *testing.T) {
	for _, u := range []string{"-.mount", "--help.service", "-x.service", "a b.service", ".service"} {
		if ValidUnit(u) {
			t.Errorf("ValidUnit(%q) = true", u)
		}
	}
	for _, u := range []string{"app.service", "app@1.service", `dev-disk-by\x2dlabel.device`, "docker-app.service"} {
		if !ValidUnit(u) {
			t.Errorf("ValidUnit(%q) = false", u)
		}
	}
	c := validBase()
	c.User, c.Group = "my app", "a:b"
	expectProblem(t, "user with a space", c, "user", "no spaces")
	expectProblem(t, "group with a colon", c, "group", "not a group name")
	c = validBase()
	c.User, c.Group = "1000", "nogroup"
	expectValid(t, "numeric user", c)
}

// TestDecodeExactKeys: keys are case-sensitive and appear once (issue 10
// item 13: encoding/json accepted "Backup" and let a repeated key win).
func TestDecodeExactKeys(t *testing.T) {
	base := `{"name":"app","dataPaths":["/srv/app"],"user":"u","group":"g",%s}`
	cases := map[string]string{
		`"Backup":{"paths":["/backup"]}`:                        `Backup: unknown key; keys are case-sensitive: write "backup"`,
		`"backup":{"Paths":["/backup"]}`:                        `backup.Paths: unknown key; keys are case-sensitive: write "paths"`,
		`"backup":{"paths":["/backup"],"paths":["/srv/app/x"]}`: `backup.paths: given twice`,
		`"name":"other","backup":{"paths":["/backup"]}`:         `name: given twice`,
		`"backup":{"paths":["/backup"],"formatt":"zip"}`:        `backup.formatt: unknown key`,
		`"backup":{"paths":["/backup"]},"serviceName":{"a":1}`:  `serviceName`,
	}
	for in, want := range cases {
		_, err := Decode(strings.NewReader(fmt.Sprintf(base, in)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", in, err, want)
		}
	}
	if _, err := Decode(strings.NewReader(fmt.Sprintf(base, `"backup":{"paths":["/backup"]},"_comment":"x"`))); err != nil {
		t.Errorf("exact config rejected: %v", err)
	}
}

// TestValidateCalendarRules: keepHourly … keepYearly are counts within
// MaxKeepPeriods, and a rule whose periods reach beyond maxRetentionDays
// (n times the longest period: 31-day months, 366-day years) is refused,
// naming the rule's key and the smallest maxRetentionDays that fits.
func TestValidateCalendarRules(t *testing.T) {
	set := map[string]func(b *Backup, v int){
		"backup.keepHourly":  func(b *Backup, v int) { b.KeepHourly = v },
		"backup.keepDaily":   func(b *Backup, v int) { b.KeepDaily = v },
		"backup.keepWeekly":  func(b *Backup, v int) { b.KeepWeekly = v },
		"backup.keepMonthly": func(b *Backup, v int) { b.KeepMonthly = v },
		"backup.keepYearly":  func(b *Backup, v int) { b.KeepYearly = v },
	}
	for key, f := range set {
		for _, v := range []int{MaxKeepPeriods + 1, 1 << 62, -1} {
			c := validBase()
			f(&c.Backup, v)
			expectProblem(t, fmt.Sprintf("%s=%d", key, v), c, key, fmt.Sprint(v))
		}
		for _, v := range []int{0, 1, MaxKeepPeriods} {
			c := validBase()
			f(&c.Backup, v)
			expectValid(t, fmt.Sprintf("%s=%d", key, v), c)
		}
	}
	spans := []struct {
		key     string
		n, days int // the smallest maxRetentionDays that fits
	}{
		{"backup.keepHourly", 24, 1}, {"backup.keepHourly", 25, 2}, {"backup.keepDaily", 7, 7},
		{"backup.keepWeekly", 4, 28}, {"backup.keepMonthly", 6, 186}, {"backup.keepYearly", 2, 732},
	}
	for _, s := range spans {
		c := validBase()
		set[s.key](&c.Backup, s.n)
		c.Backup.MaxRetentionDays = s.days
		expectValid(t, fmt.Sprintf("%s=%d maxRetentionDays=%d", s.key, s.n, s.days), c)
		c.Backup.MaxRetentionDays = s.days - 1
		if s.days-1 > 0 {
			expectProblem(t, fmt.Sprintf("%s=%d maxRetentionDays=%d", s.key, s.n, s.days-1), c, s.key,
				fmt.Sprintf("raise maxRetentionDays to at least %d", s.days))
		}
		c.Backup.MaxRetentionDays = 0 // no age limit: anything fits
		expectValid(t, fmt.Sprintf("%s=%d maxRetentionDays=0", s.key, s.n), c)
	}
}
