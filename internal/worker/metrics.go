package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// runMetrics is what a run reports to the node_exporter textfile collector.
type runMetrics struct {
	service     string
	success     bool
	finished    time.Time
	duration    time.Duration
	downtime    time.Duration
	archiveSize int64
	// archives counts this service's archives per destination after
	// pruning, for destinations that could be read.
	archives []destinationCount
	warnings int // the run's warnings (ExitWarning)
}

type destinationCount struct {
	destination string
	count       int
	guard       string // why the shrink guard skipped pruning ("empty", "shrunk"), or ""
}

const lastSuccessMetric = "backupgen_last_success_timestamp_seconds"

// writeMetrics renders the textfile and replaces path atomically (the
// collector must never read a half-written file). The last success time of a
// failed run is carried over from the previous file, so an alert on "no
// success for a day" keeps working across failures.
func writeMetrics(path string, m runMetrics) error {
	lastSuccess := 0.0
	if m.success {
		lastSuccess = float64(m.finished.UnixMilli()) / 1000
	} else if prev, ok := previousGauge(path, lastSuccessMetric, m.service); ok {
		lastSuccess = prev
	}
	var b bytes.Buffer
	svc := `service="` + escapeLabel(m.service) + `"`
	gauge := func(name, help, labels string, value float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, labels,
			strconv.FormatFloat(value, 'g', -1, 64))
	}
	if lastSuccess > 0 {
		gauge(lastSuccessMetric, "Unix time of the last successful backup run.", svc, lastSuccess)
	}
	gauge("backupgen_last_run_duration_seconds", "Duration of the last backup run.", svc, m.duration.Seconds())
	gauge("backupgen_last_run_downtime_seconds", "Time the service's units were stopped during the last run.", svc, m.downtime.Seconds())
	gauge("backupgen_last_run_archive_bytes", "Size of the archive written by the last run.", svc, float64(m.archiveSize))
	success := 0.0
	if m.success {
		success = 1
	}
	gauge("backupgen_last_run_success", "1 if the last backup run succeeded, else 0.", svc, success)
	if len(m.archives) > 0 {
		b.WriteString("# HELP backupgen_archives Archives of the service in each destination.\n# TYPE backupgen_archives gauge\n")
		for _, d := range m.archives {
			fmt.Fprintf(&b, "backupgen_archives{%s,destination=\"%s\"} %d\n", svc, escapeLabel(d.destination), d.count)
		}
	}
	gauge("backupgen_last_run_warnings", "Warnings of the last backup run (exit code 5 when nothing failed).", svc, float64(m.warnings))
	if len(m.archives) > 0 {
		b.WriteString("# HELP backupgen_shrink_guard 1 if the last run skipped pruning in the destination because the data was empty or the archive shrank (reason label).\n# TYPE backupgen_shrink_guard gauge\n")
		for _, d := range m.archives {
			v := 0
			if d.guard != "" {
				v = 1
			}
			fmt.Fprintf(&b, "backupgen_shrink_guard{%s,destination=\"%s\",reason=\"%s\"} %d\n", svc, escapeLabel(d.destination), d.guard, v)
		}
	}
	return writeFileAtomic(path, b.Bytes(), 0o644, owner{uid: -1, gid: -1})
}

// previousGauge reads metric{service="…"} back from the textfile at path.
func previousGauge(path, metric, service string) (float64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	prefix := metric + `{service="` + escapeLabel(service) + `"} `
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return x, true
			}
		}
	}
	return 0, false
}

// escapeLabel escapes a Prometheus label value.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
