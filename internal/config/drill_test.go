package config

import (
	"strings"
	"testing"
)

// TestDrillRules: the drill's scratch directory can never be, hold or lie
// in a data path or a destination (a drill removes what it restored
// there), its schedule is checked as the backup's, and its identity is a
// secret file passable with LoadCredential=.
func TestDrillRules(t *testing.T) {
	base := `{"name":"app","dataPaths":["/srv/app","/var/lib/backup-worker/data"],"user":"root","group":"root","backup":{"paths":["/backup","s3://bucket/p"],"s3":{"endpoint":"https://s3.example","credentialsFile":"/run/secrets/s3"},"drill":%s}}`
	ok := []string{
		`{}`,
		`{"onCalendar":["Sun *-*-* 05:00:00"],"scratchDirectory":"/var/tmp/drill","identityFile":"/run/secrets/age-key"}`,
	}
	for _, in := range ok {
		if _, err := Decode(strings.NewReader(strings.Replace(base, "%s", in, 1))); err != nil {
			t.Errorf("%s rejected: %v", in, err)
		}
	}
	bad := map[string]string{
		`{"scratchDirectory":"/srv/app"}`:            `backup.drill.scratchDirectory "/srv/app": overlaps data path "/srv/app"`,
		`{"scratchDirectory":"/srv/app/tmp"}`:        `overlaps data path "/srv/app"`,
		`{"scratchDirectory":"/srv"}`:                `overlaps data path "/srv/app"`,
		`{"scratchDirectory":"/backup/drill"}`:       `overlaps destination "/backup"`,
		`{"scratchDirectory":"tmp/drill"}`:           `backup.drill.scratchDirectory "tmp/drill": `,
		`{"onCalendar":["Feb 30"]}`:                  `backup.drill.onCalendar[0] "Feb 30"`,
		`{"identityFile":"/nix/store/abc-key"}`:      `backup.drill.identityFile "/nix/store/abc-key": the identity decrypts every archive, and the Nix store`,
		`{"identityFile":"/run/secrets/my key"}`:     `must not hold spaces`,
		`{"scratchDirectory":"/var/tmp","colour":1}`: "colour: unknown key",
		`{"manifestDirectory":"/backup/manifests"}`:  `backup.drill.manifestDirectory "/backup/manifests": overlaps destination "/backup": the service's user could rewrite the manifests`,
	}
	for in, want := range bad {
		_, err := Decode(strings.NewReader(strings.Replace(base, "%s", in, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", in, err, want)
		}
	}
	// The default scratch directory is checked too: here a data path
	// lies inside it.
	_, err := Decode(strings.NewReader(strings.Replace(strings.Replace(base, "%s", `{}`, 1), "/var/lib/backup-worker/data", "/var/lib/backup-worker/drill/x", 1)))
	if err == nil || !strings.Contains(err.Error(), `backup.drill.scratchDirectory "/var/lib/backup-worker/drill": overlaps data path`) {
		t.Errorf("default scratch directory over a data path: %v", err)
	}
}
