package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	for in, want := range map[string]Destination{
		"/backup/app":                {Kind: "local", Path: "/backup/app"},
		"s3://my-bucket":             {Kind: "s3", Bucket: "my-bucket"},
		"s3://my.bucket/a/b":         {Kind: "s3", Bucket: "my.bucket", Prefix: "a/b"},
		"s3://my-bucket/backups/":    {Kind: "s3", Bucket: "my-bucket", Prefix: "backups"},
		"s3://b12/x_y=z+w.v-u/inner": {Kind: "s3", Bucket: "b12", Prefix: "x_y=z+w.v-u/inner"},
	} {
		got, err := ParseDestination(in)
		if err != nil || got != want {
			t.Errorf("ParseDestination(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"backup":                 "not absolute",
		"s3://Bucket":            "not an S3 bucket name",
		"s3://ab":                "not an S3 bucket name",
		"s3://a..b":              "not an S3 bucket name",
		"s3://bucket/../x":       `prefix part ".."`,
		"s3://bucket/a//b":       `prefix part ""`,
		"s3://key:secret@bucket": "without user",
		"s3://bucket/p?x=1":      "without user",
		"s3://bucket/p%2F":       "without user",
		"ftp://host/x":           `unknown scheme "ftp"`,
		"s3://bucket/a b":        "without user",
		"sftp-typo://u@h/p":      "unknown scheme",
	} {
		if _, err := ParseDestination(in); err == nil || !strings.Contains(err.Error(), why) || strings.Contains(err.Error(), "secret@") {
			t.Errorf("ParseDestination(%q) = %v; want an error with %q", in, err, why)
		}
	}
}

// TestValidateS3: s3:// paths need backup.s3; local-path rules (data
// paths, private paths, optional) apply to local destinations only.
func TestValidateS3(t *testing.T) {
	base := `{"name":"app","serviceName":[],"dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":["/backup/app","s3://bkt/p"]%s}}`
	s3 := `,"s3":{"endpoint":"https://s3.example.com","credentialsFile":"/run/secrets/s3"}`
	c, err := Decode(strings.NewReader(strings.Replace(base, "%s", s3+`,"hostName":"web1","signingKey":"/var/lib/k"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Backup.S3.ReadBack() || !HasRemote(c.Backup.Paths) || len(LocalPaths(c.Backup.Paths)) != 1 {
		t.Errorf("decoded %+v", c.Backup)
	}
	for extra, want := range map[string]string{
		``:                                   `backup.s3: required by the s3:// destinations`,
		`,"s3":{"credentialsFile":"/run/s"}`: `backup.s3.endpoint: required`,
		`,"s3":{"endpoint":"s3.example.com","credentialsFile":"/run/s"}`:           `must be https://HOST[:PORT]`,
		`,"s3":{"endpoint":"https://u:p@h","credentialsFile":"/run/s"}`:            `must be https://HOST[:PORT]`,
		`,"s3":{"endpoint":"https://h","credentialsFile":"rel"}`:                   `backup.s3.credentialsFile "rel": is not absolute`,
		`,"s3":{"endpoint":"https://h","credentialsFile":"/r","region":"EU West"}`: `backup.s3.region "EU West"`,
		s3 + `,"optionalPaths":["s3://bkt/p"]`:                                     `only a local directory can be optional`,
		`,"s3":{"endpoint":"https://h","credentialsFile":"/nix/store/0-s3.env"}`:   `a secret in the Nix store`,
		s3 + `,"hostName":"a b"`:                                                   `backup.hostName "a b"`,
	} {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", extra, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", extra, err, want)
		}
	}
	dup := strings.Replace(base, `"s3://bkt/p"]`, `"s3://bkt/p","s3://bkt/p/"]`, 1)
	if _, err := Decode(strings.NewReader(strings.Replace(dup, "%s", s3, 1))); err == nil || !strings.Contains(err.Error(), "same destination as backup.paths[1]") {
		t.Errorf("duplicate s3 destination: %v", err)
	}
}
func TestParseDestinationSFTP(t *testing.T) {
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
		"ftp://bk@host/srv":            "unknown scheme",
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
		`,"sftp":{"privateKeyFile":"/k","knownHostsFile":"/h"},"optionalPaths":["sftp://bk@nas/srv/bk"]`: `only a local directory can be optional`,
	} {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", extra, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("extra %s: err = %v; want %q", extra, err, want)
		}
	}
}

// TestSameRemotePlaceListedOnce: two entries of backup.paths naming one
// remote place are reported at the later one ("list it once"), also when
// they are written differently: host name case and trailing dot, the
// default port written out, an IPv6 address in another form, an S3
// prefix with a trailing slash. Entries that differ in user, port, path,
// bucket or prefix are two places.
func TestSameRemotePlaceListedOnce(t *testing.T) {
	base := `{"name":"app","serviceName":[],"dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":[%s],` +
		`"hostName":"web1","sftp":{"privateKeyFile":"/run/k","knownHostsFile":"/run/kh"},` +
		`"s3":{"endpoint":"https://s3.example.com","credentialsFile":"/run/secrets/s3"}}}`
	same := [][2]string{
		{"sftp://bk@NAS.example/srv/b", "sftp://bk@nas.example/srv/b"},
		{"sftp://bk@nas.example./srv/b", "sftp://bk@nas.example:22/srv/b"},
		{"sftp://bk@[fd00::1]/srv/b", "sftp://bk@[fd00:0::0:1]:22/srv/b"},
		{"s3://bkt/p", "s3://bkt/p/"},
	}
	for _, c := range same {
		_, err := Decode(strings.NewReader(fmt.Sprintf(base, `"/backup/app","`+c[0]+`","`+c[1]+`"`)))
		if err == nil || !strings.Contains(err.Error(), "backup.paths[2]") || !strings.Contains(err.Error(), "same destination as backup.paths[1]; list it once") {
			t.Errorf("%s and %s: %v; want backup.paths[2] listed once", c[0], c[1], err)
		}
	}
	for _, c := range [][2]string{
		{"sftp://bk@nas.example/srv/b", "sftp://other@nas.example/srv/b"},
		{"sftp://bk@nas.example/srv/b", "sftp://bk@nas.example:2222/srv/b"},
		{"sftp://bk@nas.example/srv/b", "sftp://bk@nas.example/srv/B"},
		{"s3://bkt/p", "s3://bkt/P"},
		{"s3://bkt/p", "s3://bkt2/p"},
	} {
		if _, err := Decode(strings.NewReader(fmt.Sprintf(base, `"`+c[0]+`","`+c[1]+`"`))); err != nil {
			t.Errorf("%s and %s are two places: %v", c[0], c[1], err)
		}
	}
}
