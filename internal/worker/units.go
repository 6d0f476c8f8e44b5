package worker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
)

// defaultActivePoll is how often a started unit is checked for "active".
const defaultActivePoll = 200 * time.Millisecond

// unitController stops the service's units and starts again exactly the ones
// it stopped. Every stop is recorded in the state file before it happens.
type unitController struct {
	systemd      Systemd
	log          *slog.Logger
	stateFile    string
	stopTimeout  time.Duration
	startTimeout time.Duration
	poll         time.Duration // see startUnits

	mu      sync.Mutex
	stopped []string // in stop order; started in reverse
	// downtimeStart is when the first unit was stopped (zero if none).
	downtimeStart time.Time
	downtime      time.Duration
	restarted     bool
	restartErr    error
}

// stopAll stops each active unit in order. It returns the first stop error,
// naming the unit; the caller decides whether to abort (restart and fail)
// or continue with a live backup. A unit whose stop failed is still in the
// restart list: it may be half-stopped, and starting an active unit is a
// no-op, so restarting it is always safe.
func (c *unitController) stopAll(ctx context.Context, units []string) error {
	for _, unit := range units {
		// A state that cannot be read fails the run here, before anything
		// is archived: taking it for "not running" would back up a live
		// application and report success.
		state, err := c.systemd.ActiveState(ctx, unit)
		if err != nil {
			return err
		}
		if !unitRunning(state) {
			c.log.Info("unit not running; leaving it stopped", "unit", unit, "state", state)
			continue
		}
		c.mu.Lock()
		next := append(slices.Clone(c.stopped), unit)
		c.mu.Unlock()
		// Record the unit before stopping it: a kill right after the stop
		// must leave enough behind for `recover` to start it again.
		if err := writeStoppedState(c.stateFile, next); err != nil {
			return fmt.Errorf("write state file %s before stopping %s: %w", c.stateFile, unit, err)
		}
		c.mu.Lock()
		c.stopped = next
		if c.downtimeStart.IsZero() {
			c.downtimeStart = time.Now()
		}
		c.mu.Unlock()
		c.log.Info("stopping unit", "unit", unit)
		stopCtx, cancel := context.WithTimeout(ctx, c.stopTimeout)
		err = c.systemd.Stop(stopCtx, unit)
		cancel()
		if err != nil {
			return fmt.Errorf("stop %s: %w", unit, err)
		}
	}
	return nil
}

// restart starts the stopped units in reverse order, once; later calls
// return the first result. It ignores cancellation of ctx (a SIGTERM must
// not leave the service down) and bounds each unit by the start timeout.
func (c *unitController) restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.restarted {
		return c.restartErr
	}
	c.restarted = true
	if !c.downtimeStart.IsZero() {
		c.downtime = time.Since(c.downtimeStart)
	}
	if len(c.stopped) == 0 {
		return nil
	}
	c.restartErr = startUnits(context.WithoutCancel(ctx), c.systemd, c.log, c.stopped, c.startTimeout, c.poll, c.stateFile)
	return c.restartErr
}

// restartedAny reports whether restart started at least one unit.
func (c *unitController) restartedAny() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarted && len(c.stopped) > 0
}

// Downtime is the time from the first stop to the restart (so far, if the
// units have not been restarted yet).
func (c *unitController) Downtime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.restarted || c.downtimeStart.IsZero() {
		return c.downtime
	}
	return time.Since(c.downtimeStart)
}

// startUnits starts units in reverse order and waits for each to become
// active. Every unit is attempted even if an earlier one fails. The state
// file is removed only when all of them are active again; otherwise it is
// rewritten to list just the units still down, for `recover` to retry.
// poll is how often a started unit is checked for "active" (0: 200 ms).
func startUnits(ctx context.Context, sd Systemd, log *slog.Logger, units []string, timeout, poll time.Duration, stateFile string) error {
	if poll == 0 {
		poll = defaultActivePoll
	}
	var errs *multierror.Error
	var down []string
	for i := len(units) - 1; i >= 0; i-- {
		unit := units[i]
		if err := startAndWait(ctx, sd, log, unit, timeout, poll); err != nil {
			log.Error("unit did not come back", "unit", unit, "error", err)
			errs = multierror.Append(errs, err)
			down = append([]string{unit}, down...)
			continue
		}
		log.Info("unit started", "unit", unit)
	}
	if len(down) == 0 {
		if err := removeStoppedState(stateFile); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("remove state file: %w", err))
		}
	} else if err := writeStoppedState(stateFile, down); err != nil {
		errs = multierror.Append(errs, fmt.Errorf("update state file: %w", err))
	}
	return errs.ErrorOrNil()
}

// startAndWait runs start and then polls is-active until the unit is active
// or the timeout passes: `systemctl start` returns early for Type=simple
// units, and a unit that crashes right away would otherwise look fine.
func startAndWait(ctx context.Context, sd Systemd, log *slog.Logger, unit string, timeout, poll time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log.Info("starting unit", "unit", unit)
	if err := sd.Start(ctx, unit); err != nil {
		return fmt.Errorf("start %s: %w", unit, err)
	}
	for {
		state, err := sd.ActiveState(ctx, unit)
		if err == nil && unitUp(state) {
			return nil
		}
		// "failed" after a successful start is final (a unit that systemd
		// restarts on failure is "activating" between attempts): waiting
		// out the timeout would only keep the operator in the dark.
		if err == nil && state == "failed" {
			return fmt.Errorf("start %s: the unit failed after starting (systemctl status %s, journalctl -u %s)", unit, unit, unit)
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("start %s: not active after %s: %w", unit, timeout, err)
			}
			return fmt.Errorf("start %s: not active after %s", unit, timeout)
		case <-time.After(poll):
		}
	}
}
