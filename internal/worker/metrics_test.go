package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
)

// The textfile is replaced atomically (temp + rename: no temp left, the
// collector never sees half a file), is 0644 whatever the umask (the node
// exporter runs as another user), and holds every per-service metric and
// the archives per destination, labelled by the destination alone. A
// failed run keeps the last success time, so "no success for 26 hours"
// keeps counting from the real last success.
func TestMetricsTextfile(t *testing.T) {
	// Not parallel: it changes the process umask.
	e := newTestEnv(t)
	dir := filepath.Join(e.root, "textfile")
	os.MkdirAll(dir, 0o755)
	prom := filepath.Join(dir, "backup-app.prom")
	cfg := e.config(nil, func(m map[string]any) { backupSettings(m)["prometheusTextfile"] = prom })
	// Stricter than the unit's UMask=0027: the mode must not come from it.
	old := syscall.Umask(0o077)
	code := e.run(cfg)
	syscall.Umask(old)
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	fi, err := os.Stat(prom)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("textfile directory holds %d entries, want the .prom file only", len(entries))
	}
	first, _ := os.ReadFile(prom)
	for _, re := range []string{
		`(?m)^backupgen_last_success_timestamp_seconds\{service="app"\} [0-9.e+]+$`,
		`(?m)^backupgen_last_run_duration_seconds\{service="app"\} [0-9.e+-]+$`,
		`(?m)^backupgen_last_run_downtime_seconds\{service="app"\} [0-9.e+-]+$`,
		`(?m)^backupgen_last_run_archive_bytes\{service="app"\} [1-9][0-9.e+]*$`,
		`(?m)^backupgen_last_run_success\{service="app"\} 1$`,
		`(?m)^backupgen_archives\{service="app",destination="` + regexp.QuoteMeta(e.dests[0]) + `"\} 1$`,
		`(?m)^backupgen_archives\{service="app",destination="` + regexp.QuoteMeta(e.dests[1]) + `"\} 1$`,
	} {
		if !regexp.MustCompile(re).Match(first) {
			t.Errorf("metrics lack %s:\n%s", re, first)
		}
	}
	lastSuccess := regexp.MustCompile(`(?m)^backupgen_last_success_timestamp_seconds.*$`).Find(first)

	r := e.runner(cfg)
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		return archive.Stats{}, errors.New("injected archive failure")
	}
	if code := r.Run(context.Background()); code != ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	second, _ := os.ReadFile(prom)
	if !strings.Contains(string(second), `backupgen_last_run_success{service="app"} 0`) {
		t.Errorf("failed run not recorded:\n%s", second)
	}
	if !strings.Contains(string(second), string(lastSuccess)) {
		t.Errorf("failed run lost the last success %q:\n%s", lastSuccess, second)
	}
}

// A remote destination is labelled by its URL, which never carries a
// secret (config refuses passwords in sftp:// URLs; S3 keys live in the
// credentials file): the label is the configured destination, nothing
// added.
func TestMetricsLabelsAreDestinations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prom := filepath.Join(dir, "x.prom")
	err := writeMetrics(prom, runMetrics{service: "app", success: true, archives: []destinationCount{
		{destination: "sftp://backup@nas.example.org/srv/backups", count: 3},
		{destination: "s3://bucket/prefix", count: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(prom)
	for _, want := range []string{
		`backupgen_archives{service="app",destination="sftp://backup@nas.example.org/srv/backups"} 3`,
		`backupgen_archives{service="app",destination="s3://bucket/prefix"} 2`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("lacks %q:\n%s", want, b)
		}
	}
}
