package worker

import "context"

// restartUnits starts the stopped units once and records a failure.
func (rn *run) restartUnits(ctx context.Context) {
	rn.restartOnce.Do(func() {
		defer lowerPriority(rn.log) // nix helper: full speed only while units are stopped
		if rn.units == nil {
			return
		}
		if err := rn.units.restart(ctx); err != nil {
			rn.fatal(err)
		}
	})
}
