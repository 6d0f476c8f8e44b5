package config

import (
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
	if _, err := Decode(strings.NewReader(`{"name":"app","colour":"blue"}`)); err == nil || !strings.Contains(err.Error(), `unknown field "colour"`) {
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
		`backup.maxRetentionDays -1`, `backup.retentionSnapshots -2`, `backup.minKeep 0`, `backup.compressionLevel 99`,
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
