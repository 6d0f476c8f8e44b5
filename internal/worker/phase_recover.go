package worker

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// recoverStale starts units that a killed earlier run left stopped (its
// ExecStopPost `recover` should have done so; this covers a missing or
// failed ExecStopPost). If they do not come back, the run is refused: the
// operator has to look at the service first. It reports whether the run
// may go on.
func (rn *run) recoverStale(ctx context.Context) bool {
	path := stateFilePath(rn.cfg.Backup.StateDirectory, rn.cfg.Name)
	units, err := readStoppedState(path, rn.cfg.ServiceName)
	if err != nil {
		rn.fatal(fmt.Errorf("read state file: %w", err))
		return false
	}
	if units == nil {
		return true
	}
	rn.log.Warn("an earlier run left units stopped; starting them first", "state_file", path, "units", strings.Join(units, ","))
	timeout := time.Duration(rn.cfg.Backup.StartTimeoutSec) * time.Second
	if err := startUnits(context.WithoutCancel(ctx), rn.systemd, rn.log, units, timeout, rn.activePoll, path); err != nil {
		rn.fatal(fmt.Errorf("units left stopped by an earlier run could not be started; not backing up: %w", err))
		return false
	}
	return true
}
