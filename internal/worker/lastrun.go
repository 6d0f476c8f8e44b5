package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The last-run record, <stateDirectory>/last-run.json, is what `status`
// (and the per-service command backup-NAME) shows of the latest run. The
// report phase writes it atomically (temp file + rename, mode 0600) in the
// root-only state directory, beside the lock. Its format is versioned:
// a reader refuses a version it does not know instead of misreading it.
//
// The state directory of generated units is a RuntimeDirectory under
// /run: the record does not survive a reboot, and status then falls back
// to the archives themselves (newest per destination).

// lastRunVersion is the record's format version.
const lastRunVersion = 1

// lastRunFile is the record's name in the state directory.
const lastRunFile = "last-run.json"

// maxLastRunBytes bounds what status reads back.
const maxLastRunBytes = 1 << 20

// LastRun is the record of one run.
type LastRun struct {
	Version  int    `json:"version"`
	Service  string `json:"service"`
	Result   string `json:"result"` // success, warning, partial, failed, interrupted
	ExitCode int    `json:"exitCode"`
	// Started and Finished are RFC 3339 times.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// DurationSec and DowntimeSec: the whole run, and the time the
	// service's units were stopped.
	DurationSec float64 `json:"durationSec"`
	DowntimeSec float64 `json:"downtimeSec"`
	// Archive is the archive's name (empty if none was written); SizeBytes
	// its size; DataBytes what was read from the data paths; WalkedBytes
	// the preflight's estimate of the data (sizes plus header overhead),
	// which `run --dry-run` scales by SizeBytes/WalkedBytes.
	Archive      string          `json:"archive,omitempty"`
	SizeBytes    int64           `json:"sizeBytes"`
	DataBytes    int64           `json:"dataBytes"`
	WalkedBytes  int64           `json:"walkedBytes"`
	Destinations []LastRunTarget `json:"destinations"`
	// Health is the health check's outcome: "" (none configured or not
	// run), "ok" or the error.
	Health   string   `json:"health,omitempty"`
	Errors   []string `json:"errors,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// LastRunTarget is one destination's outcome in a run.
type LastRunTarget struct {
	Path   string `json:"path"`
	Status string `json:"status"`
	OK     bool   `json:"ok"`
}

func lastRunPath(stateDir string) string { return filepath.Join(stateDir, lastRunFile) }

// writeLastRun records the run in the state directory. A failure is
// logged, never the run's result: the archives are what matter.
func (rn *run) writeLastRun(code int, result string, duration, downtime time.Duration, size int64) {
	rec := LastRun{
		Version: lastRunVersion, Service: rn.cfg.Name, Result: result, ExitCode: code,
		Started: rn.start.UTC().Truncate(time.Second), Finished: rn.start.Add(duration).UTC().Truncate(time.Second),
		DurationSec: roundSec(duration), DowntimeSec: roundSec(downtime),
		SizeBytes: size, DataBytes: rn.stats.BytesRead, WalkedBytes: rn.dataSize, Warnings: rn.warnings,
	}
	if size > 0 || rn.anyCommitted() {
		rec.Archive = rn.base
	}
	for _, d := range rn.dests {
		t := LastRunTarget{Path: d.dir, Status: d.state.String(), OK: d.state == destCommitted}
		if d.err != nil {
			t.Status = "failed: " + d.err.Error()
		}
		rec.Destinations = append(rec.Destinations, t)
	}
	if rn.cfg.Backup.HealthCheck != nil && rn.units != nil && rn.units.restartedAny() {
		rec.Health = "ok"
		if rn.healthErr != nil {
			rec.Health = rn.healthErr.Error()
		}
	}
	if err := rn.allErrors(); err != nil {
		rec.Errors = strings.Split(err.Error(), "\n")
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = writeFileAtomic(lastRunPath(rn.cfg.Backup.StateDirectory), append(data, '\n'), 0o600, owner{uid: -1, gid: -1})
	}
	if err != nil {
		rn.log.Error("cannot write the last-run record", "path", lastRunPath(rn.cfg.Backup.StateDirectory), "error", err)
	}
}

func (rn *run) anyCommitted() bool {
	for _, d := range rn.dests {
		if d.state == destCommitted {
			return true
		}
	}
	return false
}

func roundSec(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }

// errNoLastRun: no run recorded (none yet, or none since the last boot).
var errNoLastRun = errors.New("no run recorded")

// readLastRun reads the record; errNoLastRun when there is none.
func readLastRun(stateDir string) (*LastRun, error) {
	data, err := readPrivateFile(lastRunPath(stateDir), maxLastRunBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoLastRun
	}
	if err != nil {
		return nil, err
	}
	var rec LastRun
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", lastRunPath(stateDir), err)
	}
	if rec.Version != lastRunVersion {
		return nil, fmt.Errorf("%s: format version %d, this worker reads version %d", lastRunPath(stateDir), rec.Version, lastRunVersion)
	}
	return &rec, nil
}
