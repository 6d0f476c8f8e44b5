package config

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateCaptureFirstNeedsLocal: captureFirst stages its capture in
// a local destination, so Validate refuses it, naming backup.captureFirst,
// when every destination is remote (s3://, sftp://), and accepts it with
// one local directory among them, or off.
func TestValidateCaptureFirstNeedsLocal(t *testing.T) {
	base := `{"name":"app","serviceName":[],"dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":%s,"captureFirst":%s,
		"hostName":"web1","s3":{"endpoint":"https://s3.example.com","credentialsFile":"/run/secrets/s3"},
		"sftp":{"privateKeyFile":"/run/keys/bk","knownHostsFile":"/etc/bk/known_hosts"}}}`
	for _, tc := range []struct {
		paths, captureFirst string
		refused             bool
	}{
		{`["s3://bkt/p"]`, "true", true},
		{`["sftp://bk@nas/srv/bk"]`, "true", true},
		{`["s3://bkt/p","sftp://bk@nas/srv/bk"]`, "true", true},
		{`["s3://bkt/p","/backup/app"]`, "true", false},
		{`["/backup/app"]`, "true", false},
		{`["s3://bkt/p","sftp://bk@nas/srv/bk"]`, "false", false},
	} {
		js := strings.Replace(strings.Replace(base, "%s", tc.paths, 1), "%s", tc.captureFirst, 1)
		_, err := Decode(strings.NewReader(js))
		var fe *FieldError
		refused := err != nil && strings.Contains(err.Error(), "backup.captureFirst: no usable local destination to stage the capture in")
		switch {
		case refused != tc.refused:
			t.Errorf("paths %s, captureFirst %s: err %v, want refused=%v", tc.paths, tc.captureFirst, err, tc.refused)
		case err != nil && !refused:
			t.Errorf("paths %s: unexpected error %v", tc.paths, err)
		case refused && (!errors.As(err, &fe) || fe.Key != "backup.captureFirst"):
			t.Errorf("paths %s: not a FieldError for backup.captureFirst: %#v", tc.paths, err)
		}
	}
	if CaptureFirstStaging(nil) != nil {
		t.Error("no destination at all is another rule's error")
	}
}
