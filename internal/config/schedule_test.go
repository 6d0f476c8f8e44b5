package config

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

const onCalendarConfig = `{"name":"app","dataPaths":["/srv/app"],"user":"root","group":"root",
  "backup":{"paths":["/backup"],"onCalendar":[%s]}}`

// TestOnCalendarRejected: the values systemd refuses (the timer would never
// start, "Timer unit lacks value setting") and one that never elapses are
// each reported under their own key; valid ones are not. Before
// backup.onCalendar existed, check-config could not see the schedule at all.
func TestOnCalendarRejected(t *testing.T) {
	in := `"every day","daily","Mon..Fri 25:00","0 0 ? * *","*-02-30","Mon..Fri *-*-* 02:00:00 Europe/Berlin","nonsense"`
	_, err := Decode(strings.NewReader(strings.Replace(onCalendarConfig, "%s", in, 1)))
	var merr *multierror.Error
	if !errors.As(err, &merr) {
		t.Fatalf("Decode error = %v, want a list of field errors", err)
	}
	got := map[string]string{}
	for _, e := range merr.Errors {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		got[fe.Key] = fe.Msg
	}
	want := map[string]string{
		"backup.onCalendar[0]": `"every day": "every" is not a shorthand`,
		"backup.onCalendar[2]": `hour 25 is out of range 0-23`,
		"backup.onCalendar[3]": `neither a date nor a time`,
		"backup.onCalendar[4]": `never elapses`,
		"backup.onCalendar[6]": `"nonsense" is not a shorthand`,
	}
	for key, w := range want {
		if !strings.Contains(got[key], w) {
			t.Errorf("%s: got %q, want it to contain %q", key, got[key], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d errors, want %d: %v", len(got), len(want), got)
	}
	if _, err := Decode(strings.NewReader(strings.Replace(onCalendarConfig, "%s", `"daily","*-*-01 03:30:00 UTC"`, 1))); err != nil {
		t.Errorf("valid onCalendar rejected: %v", err)
	}
}

// TestCheckConfigRejectsOnCalendar runs the real backup-worker check-config,
// which NixOS runs at build time on the JSON the module writes.
func TestCheckConfigRejectsOnCalendar(t *testing.T) {
	if testing.Short() {
		t.Skip("builds backup-worker")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "backup-worker")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/backup-worker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for in, wantOK := range map[string]bool{`"Mon..Fri 25:00"`: false, `"every day"`: false, `"Mon..Fri 02:00"`: true} {
		file := filepath.Join(dir, "config.json")
		if err := os.WriteFile(file, []byte(strings.Replace(onCalendarConfig, "%s", in, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "check-config", file).CombinedOutput()
		if (err == nil) != wantOK {
			t.Errorf("check-config with onCalendar %s: %v\n%s", in, err, out)
		}
		if !wantOK && !strings.Contains(string(out), "backup.onCalendar[0]") {
			t.Errorf("check-config with onCalendar %s does not name the key:\n%s", in, out)
		}
	}
}
