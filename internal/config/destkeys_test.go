package config

import (
	"strings"
	"testing"
)

// TestSigningKeyAndMinSizeRatio: the dest keys' defaults and rules. The
// key must not lie where the service user can write (a destination or a
// data path); the ratio is a fraction.
func TestSigningKeyAndMinSizeRatio(t *testing.T) {
	base := `{"name":"app","serviceName":[],"dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":["/backup/app"]%s}}`
	c, err := Decode(strings.NewReader(strings.Replace(base, "%s", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backup.SigningKeyOrDefault() != DefaultSigningKey || c.Backup.MinSizeRatioOrDefault() != 0.5 {
		t.Errorf("defaults: %q %v", c.Backup.SigningKeyOrDefault(), c.Backup.MinSizeRatioOrDefault())
	}
	c, err = Decode(strings.NewReader(strings.Replace(base, "%s", `,"minSizeRatio":0,"signingKey":"/etc/bk/key"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backup.MinSizeRatioOrDefault() != 0 || c.Backup.SigningKeyOrDefault() != "/etc/bk/key" {
		t.Errorf("explicit values lost: %v %q", c.Backup.MinSizeRatioOrDefault(), c.Backup.SigningKey)
	}
	for extra, want := range map[string]string{
		`,"signingKey":"/backup/app/k"`: `backup.signingKey "/backup/app/k": overlaps destination "/backup/app"`,
		`,"signingKey":"/srv/app/x/k"`:  `backup.signingKey "/srv/app/x/k": overlaps data path "/srv/app"`,
		`,"signingKey":"key"`:           `backup.signingKey "key": is not absolute`,
		`,"minSizeRatio":1.5`:           `backup.minSizeRatio 1.5: must be between 0`,
		`,"minSizeRatio":-0.1`:          `backup.minSizeRatio -0.1: must be between 0`,
	} {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", extra, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", extra, err, want)
		}
	}
}
