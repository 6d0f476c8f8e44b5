package worker

import "context"

// restartUnits starts the stopped units once and records a failure. When
// they are all active again and backup.healthCheck is set, it probes the
// application: one that does not answer fails the run (the archives are
// kept, pruning is skipped: see execute).
func (rn *run) restartUnits(ctx context.Context) {
	rn.restartOnce.Do(func() {
		defer lowerPriority(rn.log) // nix helper: full speed only while units are stopped
		if rn.units == nil {
			return
		}
		if err := rn.units.restart(ctx); err != nil {
			rn.fatal(err)
			return
		}
		if h := rn.cfg.Backup.HealthCheck; h != nil && rn.units.restartedAny() {
			if err := checkHealth(ctx, h, rn.healthRetry, rn.log); err != nil {
				rn.log.Error("health check failed", "error", err)
				rn.healthErr = err
				rn.fatal(err)
			}
		}
	})
}
