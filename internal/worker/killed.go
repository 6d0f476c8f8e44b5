package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
)

// A run that systemd kills (TimeoutStartSec= ends in SIGKILL when the
// worker does not stop in time; the OOM killer; kill -9) never reaches its
// report, so it would notify nobody. So every run leaves a marker,
// <stateDirectory>/<name>.running, from the moment it holds the lock until
// it has reported; Recover (the unit's ExecStopPost) finds a marker whose
// run no longer holds the lock, and reports that run as failed to the
// ping URL and the notification URLs, with what systemd says of it
// ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS).

func runningPath(stateDir, name string) string { return filepath.Join(stateDir, name+".running") }

type runningMarker struct {
	Started time.Time `json:"started"`
	PID     int       `json:"pid"`
}

// markRunning writes the marker (a failure only loses this report).
func (rn *run) markRunning() {
	data, _ := json.Marshal(runningMarker{Started: rn.start.UTC(), PID: os.Getpid()})
	if err := writeFileAtomic(runningPath(rn.cfg.Backup.StateDirectory, rn.cfg.Name), data, 0o600, owner{uid: -1, gid: -1}); err != nil {
		rn.log.Warn("cannot write the run marker; a killed run would not be reported", "error", err)
	}
}

// clearRunning removes the marker once the run has reported.
func (rn *run) clearRunning() {
	os.Remove(runningPath(rn.cfg.Backup.StateDirectory, rn.cfg.Name))
}

// hasRunningMarker: a run's marker is there (killed, or still running).
func hasRunningMarker(cfg *config.Config) bool {
	_, err := os.Lstat(runningPath(cfg.Backup.StateDirectory, cfg.Name))
	return err == nil
}

// reportKilled reports the run whose marker is left, and removes it. The
// caller holds the lock, so that run is dead.
func reportKilled(ctx context.Context, cfg *config.Config, log *slog.Logger) {
	path := runningPath(cfg.Backup.StateDirectory, cfg.Name)
	data, err := readPrivateFile(path, maxStateFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var m runningMarker
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	os.Remove(path)
	if err != nil {
		log.Warn("unreadable run marker removed", "error", err)
	}
	why := killedReason(m)
	log.Error("a backup run was killed before it could report", "error", why)
	n := cfg.Backup.Notify
	if !n.Enabled() {
		return
	}
	urls, ping, errs := readNotifyFiles(n)
	for _, err := range errs {
		log.Warn("notifications: a file is unusable", "error", err)
	}
	host := cfg.Backup.HostName
	if host == "" {
		host, _ = os.Hostname()
	}
	s := notify.Summary{Service: cfg.Name, Host: host, Result: notify.ResultFailed, Error: why}
	if !m.Started.IsZero() {
		s.Duration = time.Since(m.Started)
	}
	(&notify.Notifier{URLs: urls, Ping: ping, Log: log}).Finish(ctx, s)
}

// killedReason says what is known of a killed run: systemd's words for
// it when Recover runs as ExecStopPost.
func killedReason(m runningMarker) string {
	var sd []string
	for _, k := range []string{"SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS"} {
		if v := os.Getenv(k); v != "" {
			sd = append(sd, k+"="+v)
		}
	}
	msg := "the run was killed before it could report (no archive of it was committed unless a destination shows one)"
	if !m.Started.IsZero() {
		msg = fmt.Sprintf("the run started at %s was killed before it could report (no archive of it was committed unless a destination shows one)", m.Started.Format(time.RFC3339))
	}
	if len(sd) > 0 {
		msg += "; systemd: " + strings.Join(sd, " ")
		if os.Getenv("SERVICE_RESULT") == "timeout" {
			msg += " (TimeoutStartSec= reached: raise backup.timeoutStartSec, or find what made the run slow)"
		}
	}
	return msg
}
