package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestValidateNotify(t *testing.T) {
	c := validBase()
	c.Backup.Notify = &Notify{URLsFile: "/run/secrets/notify-urls", PingURLFile: "/run/agenix/hc"}
	expectValid(t, "both files", c)
	c.Backup.Notify = &Notify{PingURLFile: "/run/secrets/hc"}
	expectValid(t, "ping only", c)
	for _, tc := range []struct{ what, urls, ping, key, msg string }{
		{"relative", "secrets/urls", "", "backup.notify.urlsFile", "not absolute"},
		{"store", "", "/nix/store/abc-hc-url", "backup.notify.pingUrlFile", "readable by every user"},
		{"LoadCredential separator", "/run/secrets/a:b", "", "backup.notify.urlsFile", "LoadCredential"},
		{"empty table", "", "", "backup.notify", "set urlsFile, pingUrlFile or both"},
	} {
		c := validBase()
		c.Backup.Notify = &Notify{URLsFile: tc.urls, PingURLFile: tc.ping}
		expectProblem(t, tc.what, c, tc.key, tc.msg)
	}
}

// The JSON keys are the agreed ones; an unknown key in notify is refused
// (a misspelt urlFile would otherwise silently notify nobody).
func TestDecodeNotifyStrict(t *testing.T) {
	j := `{"name":"app","dataPaths":["/srv/app"],"user":"root","group":"root",
	"backup":{"paths":["/var/backups/app"],"format":"tar.gz","maxRetentionDays":0,"retentionSnapshots":3,
	"notify":{"urlsFile":"/run/secrets/u","pingUrlFile":"/run/secrets/p"}}}`
	c, err := Decode(bytes.NewReader([]byte(j)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backup.Notify == nil || c.Backup.Notify.URLsFile != "/run/secrets/u" || c.Backup.Notify.PingURLFile != "/run/secrets/p" {
		t.Errorf("notify = %+v", c.Backup.Notify)
	}
	_, err = Decode(bytes.NewReader([]byte(strings.Replace(j, `"urlsFile"`, `"urlFile"`, 1))))
	if err == nil || !strings.Contains(err.Error(), "urlFile") {
		t.Errorf("misspelt key: %v", err)
	}
}
