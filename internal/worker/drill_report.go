package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
)

// A drill's result goes to <stateDirectory>/last-drill.json (status shows
// it), to its own metrics textfile beside the run's (backup-NAME-drill.prom:
// the run rewrites its file whole), and, unless it is ok, to the
// notification URLs (never the ping URL: that is the backup's check).

const (
	lastDrillFile    = "last-drill.json"
	lastDrillVersion = 1
)

// LastDrill is the record of the latest drill.
type LastDrill struct {
	Version int `json:"version"`
	DrillResult
}

func lastDrillPath(stateDir string) string { return filepath.Join(stateDir, lastDrillFile) }

// readLastDrill returns the latest drill's record; nil, nil if none.
func readLastDrill(stateDir string) (*LastDrill, error) {
	data, err := readPrivateFile(lastDrillPath(stateDir), maxLastRunBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec LastDrill
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", lastDrillPath(stateDir), err)
	}
	if rec.Version != lastDrillVersion {
		return nil, fmt.Errorf("%s: format version %d, this worker reads version %d", lastDrillPath(stateDir), rec.Version, lastDrillVersion)
	}
	return &rec, nil
}

// report records and announces the drill's result; failures to do so are
// logged, never change the result.
func (d *Drill) report(ctx context.Context, log *slog.Logger, res *DrillResult) {
	cfg := d.Config
	data, _ := json.MarshalIndent(LastDrill{Version: lastDrillVersion, DrillResult: *res}, "", "  ")
	if err := writeFileAtomic(lastDrillPath(cfg.Backup.StateDirectory), append(data, '\n'), 0o600, owner{uid: -1, gid: -1}); err != nil {
		log.Error("cannot write the last-drill record", "error", err)
	}
	if p := drillMetricsPath(cfg.Backup.PrometheusTextfile); p != "" {
		if err := writeDrillMetrics(p, res); err != nil {
			log.Error("cannot write drill metrics", "path", p, "error", err)
		}
	}
	level := slog.LevelInfo
	if res.Result != DrillOK {
		level = slog.LevelError
		d.notify(ctx, log, res)
	}
	log.Log(ctx, level, "drill finished", "result", res.Result, keyDuration, time.Duration(res.DurationSec*float64(time.Second)))
}

// notify sends a drill that is not ok to the notification URLs.
func (d *Drill) notify(ctx context.Context, log *slog.Logger, res *DrillResult) {
	n := d.Config.Backup.Notify
	if !n.Enabled() || n.URLsFile == "" {
		return
	}
	urls, _, errs := readNotifyFiles(&config.Notify{URLsFile: n.URLsFile})
	for _, err := range errs {
		log.Warn("notifications: a file is unusable", "error", err)
	}
	host := d.Config.Backup.HostName
	if host == "" {
		host, _ = os.Hostname()
	}
	s := notify.Summary{Kind: "restore drill", Service: res.Service, Host: host, Result: res.Result,
		Duration: time.Duration(res.DurationSec * float64(time.Second))}
	var problems []string
	for _, r := range res.Destinations {
		status := r.Result
		if r.Archive != "" {
			status += " (" + r.Archive + ")"
		}
		if r.Error != "" {
			status += ": " + r.Error
			problems = append(problems, r.Destination+": "+r.Error)
		}
		if len(r.Differences) > 0 {
			status += "; " + strings.Join(r.Differences, "; ")
		}
		s.Destinations = append(s.Destinations, notify.Outcome{Destination: r.Destination, Status: status})
	}
	s.Error = strings.Join(problems, "; ")
	(&notify.Notifier{URLs: urls, Log: log}).Finish(ctx, s)
}

// drillMetricsPath is the drill's textfile beside the run's (run: "" if
// the service has none).
func drillMetricsPath(runFile string) string {
	if runFile == "" {
		return ""
	}
	return strings.TrimSuffix(runFile, ".prom") + "-drill.prom"
}

const lastDrillSuccessMetric = "backupgen_drill_last_success_timestamp_seconds"

// writeDrillMetrics renders the drill's textfile and replaces path
// atomically. The last success time is carried over a failed drill, so
// "no good drill for two weeks" can be alerted on.
func writeDrillMetrics(path string, res *DrillResult) error {
	var b bytes.Buffer
	svc := `service="` + escapeLabel(res.Service) + `"`
	gauge := func(name, help, labels string, value float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, labels,
			strconv.FormatFloat(value, 'g', -1, 64))
	}
	finished := float64(res.Finished.UnixMilli()) / 1000
	lastOK, okBefore := previousGauge(path, lastDrillSuccessMetric, res.Service)
	if res.Result == DrillOK {
		lastOK, okBefore = finished, true
	}
	if okBefore {
		gauge(lastDrillSuccessMetric, "Unix time of the last restore drill whose every destination restored identical to the manifest.", svc, lastOK)
	}
	gauge("backupgen_drill_last_timestamp_seconds", "Unix time of the last restore drill.", svc, finished)
	gauge("backupgen_drill_duration_seconds", "Duration of the last restore drill.", svc, res.DurationSec)
	success := 0.0
	if res.Result == DrillOK {
		success = 1
	}
	gauge("backupgen_drill_success", "1 if the last restore drill passed in every destination, else 0.", svc, success)
	b.WriteString("# HELP backupgen_drill_destination_success 1 if the destination's newest archive restored identical to its manifest in the last drill (result label: ok, failed, checksum-only, skipped).\n# TYPE backupgen_drill_destination_success gauge\n")
	for _, r := range res.Destinations {
		v := 0
		if r.Result == DrillOK {
			v = 1
		}
		fmt.Fprintf(&b, "backupgen_drill_destination_success{%s,destination=\"%s\",result=\"%s\"} %d\n", svc, escapeLabel(r.Destination), r.Result, v)
	}
	return writeFileAtomic(path, b.Bytes(), 0o644, owner{uid: -1, gid: -1})
}

// readLastDrill adds the latest drill to the status, when drills are on.
func (st *Status) readLastDrill(cfg *config.Config) {
	if cfg.Backup.Drill == nil {
		return
	}
	rec, err := readLastDrill(cfg.Backup.StateDirectory)
	switch {
	case err != nil:
		st.LastDrillError = err.Error()
	case rec == nil:
		st.LastDrillError = fmt.Sprintf("no drill recorded in %s (none yet, or none since the last boot if it is under /run)", cfg.Backup.StateDirectory)
	default:
		st.LastDrill = rec
	}
}

// writeDrill writes the latest drill's lines of `status`.
func (st Status) writeDrill(w io.Writer, now time.Time) {
	r := st.LastDrill
	switch {
	case r != nil:
		fmt.Fprintf(w, "  last drill %s at %s (%s ago)\n", r.Result, r.Finished.Local().Format("2006-01-02 15:04:05 MST"), age(now, r.Finished))
		for _, d := range r.Destinations {
			line := d.Result
			if d.Error != "" {
				line += ": " + d.Error
			}
			fmt.Fprintf(w, "    %s: %s\n", d.Destination, line)
		}
	case st.LastDrillError != "":
		fmt.Fprintf(w, "  last drill %s\n", st.LastDrillError)
	}
}
