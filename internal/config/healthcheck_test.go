package config

import (
	"strings"
	"testing"
)

// TestHealthCheckRules: one probe of a well-formed kind, with a timeout in
// bounds; every problem names its key.
func TestHealthCheckRules(t *testing.T) {
	base := `{"name":"app","dataPaths":["/srv/app"],"user":"root","group":"root","backup":{"paths":["/backup"],"healthCheck":%s}}`
	ok := []string{
		`{"url":"http://127.0.0.1:8080/health"}`,
		`{"url":"https://app.example/","timeoutSec":300}`,
		`{"tcp":"[::1]:5432"}`,
		`{"command":["/run/current-system/sw/bin/pg_isready","-q"]}`,
	}
	for _, in := range ok {
		if _, err := Decode(strings.NewReader(strings.Replace(base, "%s", in, 1))); err != nil {
			t.Errorf("%s rejected: %v", in, err)
		}
	}
	bad := map[string]string{
		`{}`:                                  "backup.healthCheck: set exactly one of url, tcp and command (found 0)",
		`{"url":"http://a/","tcp":"a:1"}`:     "set exactly one of url, tcp and command (found 2)",
		`{"url":"ftp://a/"}`:                  `backup.healthCheck.url "ftp://a/": must be an http:// or https:// URL`,
		`{"url":"http://u:secret@a/"}`:        "must not hold a user or password",
		`{"tcp":"localhost"}`:                 `backup.healthCheck.tcp "localhost": must be HOST:PORT`,
		`{"tcp":"localhost:0"}`:               "the port must be a number from 1 to 65535",
		`{"command":["pg_isready"]}`:          `backup.healthCheck.command[0] "pg_isready": the program must be an absolute path`,
		`{"url":"http://a/","timeoutSec":-1}`: "backup.healthCheck.timeoutSec -1: must be 0",
		`{"url":"http://a/","colour":"blue"}`: "colour: unknown key",
	}
	for in, want := range bad {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", in, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", in, err, want)
		}
	}
}
