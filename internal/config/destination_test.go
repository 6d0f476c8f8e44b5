package config

import (
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	good := map[string]Destination{
		"/backup/app":                     {Kind: "local", Path: "/backup/app"},
		"sftp://bk@host.example/srv/bk":   {Kind: "sftp", Path: "/srv/bk", User: "bk", Host: "host.example", Port: "22"},
		"sftp://bk@10.0.0.2:2222/srv/bk":  {Kind: "sftp", Path: "/srv/bk", User: "bk", Host: "10.0.0.2", Port: "2222"},
		"sftp://bk@[fd00::1]:22/data/x/y": {Kind: "sftp", Path: "/data/x/y", User: "bk", Host: "fd00::1", Port: "22"},
	}
	for s, want := range good {
		got, err := ParseDestination(s)
		if err != nil || got != want {
			t.Errorf("ParseDestination(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	bad := map[string]string{
		"backup":                       "not absolute",
		"sftp://host/srv/bk":           "no user",
		"sftp://bk:secret@host/srv/bk": "password",
		"sftp://bk@host":               "absolute clean directory",
		"sftp://bk@host/":              "absolute clean directory",
		"sftp://bk@host/srv/../etc":    "absolute clean directory",
		"sftp://bk@host:0/srv":         "port",
		"sftp://bk@host:99999/srv":     "port",
		"sftp://bk@host/srv?x=1":       "query",
		"ftp://bk@host/srv":            "unknown destination scheme",
	}
	for s, want := range bad {
		if _, err := ParseDestination(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDestination(%q) = %v; want an error with %q", s, err, want)
		}
	}
}

// TestValidateSFTP: an sftp:// destination needs the key and known_hosts
// files, and cannot be optional.
func TestValidateSFTP(t *testing.T) {
	base := `{"name":"app","serviceName":[],"dataPaths":["/srv/app"],"user":"app","group":"app",
		"backup":{"paths":["/backup/app","sftp://bk@nas/srv/bk"],"format":"tar.gz"%s}}`
	if _, err := Decode(strings.NewReader(strings.Replace(base, "%s",
		`,"sftp":{"privateKeyFile":"/run/keys/bk","knownHostsFile":"/etc/bk/known_hosts","verifyReadBack":false}`, 1))); err != nil {
		t.Fatalf("valid sftp config refused: %v", err)
	}
	for extra, want := range map[string]string{
		``: `backup.sftp.privateKeyFile: required with an sftp:// destination`,
		`,"sftp":{"privateKeyFile":"key","knownHostsFile":"/k"}`:                                         `backup.sftp.privateKeyFile "key": is not absolute`,
		`,"sftp":{"privateKeyFile":"/k","knownHostsFile":"/h"},"optionalPaths":["sftp://bk@nas/srv/bk"]`: `only local paths can be optional`,
	} {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", extra, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("extra %s: err = %v; want %q", extra, err, want)
		}
	}
}
